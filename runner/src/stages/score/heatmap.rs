//! A self-contained SVG heatmap of block scores: one row per block size `n`, one column per
//! start layer `l`; darker = higher score = more important block. The chosen block of each
//! row is outlined. Every cell has a tooltip with its value.

use std::fmt::Write;

const CELL: usize = 22;
const LEFT: usize = 56;
const TOP: usize = 48;
const LEGEND: usize = 70;

/// One row of the heatmap.
pub struct HeatmapRow {
    pub n: usize,
    /// Indexed by start layer; `None` = not computed.
    pub values: Vec<Option<f64>>,
    /// The chosen start, outlined.
    pub chosen: Option<usize>,
}

/// Light (low) to dark (high) blue, `t` in [0, 1].
fn color(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (lo, hi) = ((247.0, 251.0, 255.0), (8.0, 48.0, 107.0));
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(lo.0, hi.0),
        mix(lo.1, hi.1),
        mix(lo.2, hi.2)
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the heatmap; `num_layers` columns, `title` on top, `metric` names the values.
pub fn render(title: &str, metric: &str, num_layers: usize, rows: &[HeatmapRow]) -> String {
    let values = rows.iter().flat_map(|r| r.values.iter().flatten().copied());
    let (min, max) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let span = if max > min { max - min } else { 1.0 };
    let width = LEFT + num_layers * CELL + 20;
    let height = TOP + rows.len() * CELL + LEGEND;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="16" font-size="12" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="30">{}: darker = higher = more important; outlined = chosen block start</text>"#,
        escape(metric)
    );
    for l in 0..num_layers {
        let x = LEFT + l * CELL + CELL / 2;
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{l}</text>"#,
            TOP - 4
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = TOP + i * CELL;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">n={}</text>"#,
            LEFT - 6,
            y + CELL / 2 + 4,
            row.n
        );
        for (l, v) in row.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let x = LEFT + l * CELL;
            let _ = writeln!(
                s,
                r#"<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="{}"><title>n={} start={l} layers {l}..{}: {v:.6}</title></rect>"#,
                color((v - min) / span),
                row.n,
                l + row.n - 1
            );
        }
        if let Some(l) = row.chosen {
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#e6550d" stroke-width="3"/>"##,
                LEFT + l * CELL + 1,
                y + 1,
                CELL - 2,
                CELL - 2
            );
        }
    }
    let ly = TOP + rows.len() * CELL + 16;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">start layer l (block = layers l..l+n-1)</text>"#,
        ly
    );
    let steps = 10;
    for k in 0..=steps {
        let t = k as f64 / steps as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="16" height="12" fill="{}"/>"#,
            LEFT + k * 16,
            ly + 10,
            color(t)
        );
    }
    let (lo, hi) = if min <= max { (min, max) } else { (0.0, 0.0) };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}">{lo:.4} … {hi:.4}</text>"#,
        LEFT + (steps + 1) * 16 + 6,
        ly + 20
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_cells_outline_and_escapes() {
        let rows = vec![
            HeatmapRow {
                n: 1,
                values: vec![Some(0.1), Some(0.3), Some(0.2)],
                chosen: Some(0),
            },
            HeatmapRow {
                n: 2,
                values: vec![Some(0.4), None],
                chosen: None,
            },
        ];
        let svg = render("a <b> & c", "angular", 3, &rows);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(svg.matches("<title>").count(), 4);
        assert_eq!(svg.matches("stroke=\"#e6550d\"").count(), 1);
        // The highest value is the darkest colour.
        assert!(svg.contains("fill=\"#08306b\"><title>n=2 start=0"));
    }
}
