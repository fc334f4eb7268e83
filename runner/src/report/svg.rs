//! Small, dependency-free SVG charts (inline in the HTML report; no network, no scripts).

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// Grouped bar chart: one group per category, one bar per series. Values `None` are gaps.
pub fn grouped_bars(
    title: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
    y_label: &str,
    reference_line: Option<f64>,
) -> String {
    let (w, h) = (760.0, 340.0);
    let (left, right, top, bottom) = (56.0, 150.0, 34.0, 64.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().flatten())
        .copied()
        .chain(reference_line)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    s += &format!(
        r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        left,
        esc(title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = top + plot_h - plot_h * k as f64 / 4.0;
        s += &format!(
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            left + plot_w,
            left - 4.0,
            y + 4.0
        );
    }
    s += &format!(
        r#"<text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        esc(y_label)
    );
    let groups = categories.len().max(1) as f64;
    let group_w = plot_w / groups;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    for (ci, cat) in categories.iter().enumerate() {
        let gx = left + group_w * ci as f64 + group_w * 0.1;
        for (si, (_, vals)) in series.iter().enumerate() {
            if let Some(Some(v)) = vals.get(ci) {
                let bh = plot_h * v / max;
                let x = gx + bar_w * si as f64;
                s += &format!(
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{}: {v:.2}</title></rect>"#,
                    top + plot_h - bh,
                    (bar_w - 1.0).max(1.0),
                    color(si),
                    esc(cat)
                );
            }
        }
        s += &format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            top + plot_h + 16.0,
            esc(cat)
        );
    }
    if let Some(r) = reference_line {
        let y = top + plot_h - plot_h * r / max;
        s += &format!(
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444" stroke-dasharray="4 3"/>"##,
            left + plot_w
        );
    }
    for (si, (name, _)) in series.iter().enumerate() {
        let y = top + 14.0 * si as f64;
        s += &format!(
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + plot_w + 12.0,
            y,
            color(si),
            left + plot_w + 26.0,
            y + 9.0,
            esc(name)
        );
    }
    s + "</svg>"
}

/// Line chart of several series of (x, y) points.
pub fn lines(
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
) -> String {
    let (w, h) = (760.0, 320.0);
    let (left, right, top, bottom) = (56.0, 170.0, 34.0, 44.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| left + plot_w * (x - x0) / (x1 - x0);
    let py = |y: f64| top + plot_h - plot_h * (y - y0) / (y1 - y0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    s += &format!(
        r#"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for k in 0..=4 {
        let v = y0 + (y1 - y0) * k as f64 / 4.0;
        let y = py(v);
        s += &format!(
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.3}</text>"##,
            left + plot_w,
            left - 4.0,
            y + 4.0
        );
        let xv = x0 + (x1 - x0) * k as f64 / 4.0;
        s += &format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{xv:.0}</text>"#,
            px(xv),
            top + plot_h + 14.0
        );
    }
    s += &format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        h - 6.0,
        esc(x_label)
    );
    s += &format!(
        r#"<text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + plot_h / 2.0,
        esc(y_label)
    );
    for (si, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        s += &format!(
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            color(si),
            path.join(" ")
        );
        let y = top + 14.0 * si as f64;
        s += &format!(
            r#"<rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + plot_w + 12.0,
            y,
            color(si),
            left + plot_w + 26.0,
            y + 9.0,
            esc(name)
        );
    }
    s + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_and_escape_text() {
        let b = grouped_bars(
            "a<b",
            &["x".into()],
            &[("s&t".into(), vec![Some(1.0)])],
            "y",
            Some(1.0),
        );
        assert!(b.starts_with("<svg") && b.ends_with("</svg>"));
        assert!(b.contains("a&lt;b") && b.contains("s&amp;t"));
        let l = lines(
            "t",
            &[("loss".into(), vec![(1.0, 2.0), (2.0, 1.5)])],
            "step",
            "loss",
        );
        assert!(l.contains("<polyline"));
        let empty = lines("t", &[], "x", "y");
        assert!(empty.ends_with("</svg>"));
    }
}
