//! Learning-rate schedule: linear warm-up, then cosine decay to a floor.
//!
//! Step `s` (0-based) of `steps`: during warm-up (`s < warmup`) the rate is
//! `peak * (s + 1) / warmup` (the first step already learns, unlike a schedule starting at 0);
//! afterwards `floor + (peak - floor) * (1 + cos(pi * p)) / 2` with
//! `p = (s - warmup) / max(1, steps - warmup - 1)` running from 0 to 1 over the remaining
//! steps, and `floor = peak * min_lr_ratio`.

/// The learning rate of optimizer step `step`.
pub fn learning_rate(step: u64, steps: u64, warmup: u64, peak: f64, min_lr_ratio: f64) -> f64 {
    let floor = peak * min_lr_ratio;
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = steps.saturating_sub(warmup).saturating_sub(1).max(1);
    let p = ((step - warmup) as f64 / span as f64).min(1.0);
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_floor() {
        let lr = |s| learning_rate(s, 110, 10, 1e-3, 0.1);
        assert!((lr(0) - 1e-4).abs() < 1e-12);
        assert!((lr(9) - 1e-3).abs() < 1e-12);
        assert!((lr(10) - 1e-3).abs() < 1e-12);
        assert!((lr(109) - 1e-4).abs() < 1e-12);
        let mid = lr(10 + 99 / 2);
        assert!(mid < 1e-3 && mid > 1e-4);
        for s in 10..109 {
            assert!(lr(s + 1) <= lr(s) + 1e-15);
        }
        assert!((learning_rate(0, 1, 0, 2e-4, 0.0) - 2e-4).abs() < 1e-15);
    }
}
