//! A self-contained SVG line plot of the loss curve (no scripts, fonts or external files).

use super::checkpoint::StepLog;
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;

/// "Nice" tick positions covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= target as f64)
        .unwrap_or(10.0 * mag);
    let factor = 10f64.powi((1 - step.log10().floor() as i32).max(0));
    let (k0, k1) = ((lo / step).ceil() as i64, (hi / step + 1e-9).floor() as i64);
    (k0..=k1)
        .map(|k| (k as f64 * step * factor).round() / factor)
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A named, coloured line: `(name, colour, points)`.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// The SVG document: loss per step, plus CE and KD when distillation was on.
pub fn loss_svg(history: &[StepLog], title: &str) -> String {
    let mut series: Vec<Series> = vec![(
        "loss",
        "#1f77b4",
        history.iter().map(|s| (s.step as f64, s.loss)).collect(),
    )];
    if history.iter().any(|s| s.kd != 0.0) {
        series.push((
            "ce",
            "#2ca02c",
            history.iter().map(|s| (s.step as f64, s.ce)).collect(),
        ));
        series.push((
            "kd",
            "#d62728",
            history.iter().map(|s| (s.step as f64, s.kd)).collect(),
        ));
    }
    let finite = |v: &f64| v.is_finite();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .filter(finite)
        .collect();
    let (mut ymin, mut ymax) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !ymin.is_finite() {
        (ymin, ymax) = (0.0, 1.0);
    }
    if ymax - ymin < 1e-9 {
        ymin -= 0.5;
        ymax += 0.5;
    }
    let pad = (ymax - ymin) * 0.05;
    let (ymin, ymax) = (
        (ymin - pad).max(if ymin >= 0.0 { 0.0 } else { f64::MIN }),
        ymax + pad,
    );
    let xmax = history
        .last()
        .map(|s| s.step as f64)
        .unwrap_or(1.0)
        .max(1.0);
    let xmin = history
        .first()
        .map(|s| s.step as f64)
        .unwrap_or(0.0)
        .min(xmax - 1.0);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| TOP + (1.0 - (y - ymin) / (ymax - ymin)) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="#ffffff"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + pw / 2.0,
        esc(title)
    );
    for t in ticks(ymin, ymax, 6) {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e0e0e0"/><text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            format_tick(t)
        );
    }
    for t in ticks(xmin, xmax, 8) {
        let x = sx(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.2}" y1="{TOP}" x2="{x:.2}" y2="{:.2}" stroke="#f0f0f0"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            format_tick(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444444"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">optimizer step</text>"#,
        LEFT + pw / 2.0,
        H - 8.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.2}" text-anchor="middle" transform="rotate(-90 16 {:.2})">nats / answer token</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        let finite: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| (sx(x), sy(y)))
            .collect();
        if let [(x, y)] = finite.as_slice() {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.2}" cy="{y:.2}" r="3" fill="{color}"/>"#
            );
        } else {
            let points: Vec<String> = finite
                .iter()
                .map(|(x, y)| format!("{x:.2},{y:.2}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                points.join(" ")
            );
        }
        let ly = TOP + 14.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn format_tick(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 {
        format!("{}", v as i64)
    } else {
        let t = format!("{v:.3}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_is_self_contained_and_has_the_curve() {
        let h: Vec<StepLog> = (1..=20)
            .map(|i| StepLog {
                step: i,
                loss: 3.0 / i as f64,
                ce: 3.0 / i as f64,
                kd: 0.0,
                hidden: None,
                lr: 1e-4,
                grad_norm: 1.0,
                tokens: 100,
                seconds: 1.0,
            })
            .collect();
        let svg = loss_svg(&h, "loss <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline") && svg.contains("loss &lt;test&gt;"));
        assert!(!svg.contains("href") && !svg.contains("<script"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }
}
