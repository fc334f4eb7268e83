//! The minimum detectable effect of a paired comparison: the smallest true mean difference a
//! two-sided test at α = 0.05 finds with 80 % power, `(z_{0.975} + z_{0.8}) · sd(diff) / sqrt(n)`.

use super::error::check_paired;
use super::normal::{Z_80, Z_975};
use super::summary::std_dev;
use super::Result;

/// Minimum detectable effect of the paired differences `a[i] − b[i]` (at least two pairs).
pub fn minimum_detectable_effect(a: &[f64], b: &[f64]) -> Result<f64> {
    check_paired("minimum detectable effect", a, b)?;
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    Ok((Z_975 + Z_80) * std_dev(&diffs)? / (diffs.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_case() {
        // Differences ±1 alternating over 100 pairs: sd = sqrt(100/99), n = 100.
        let a: Vec<f64> = (0..100).map(|i| f64::from(i % 2)).collect();
        let b: Vec<f64> = (0..100).map(|i| f64::from((i + 1) % 2)).collect();
        let mde = minimum_detectable_effect(&a, &b).unwrap();
        let expected = 2.801_585_218_112_968 * (100.0f64 / 99.0).sqrt() / 10.0;
        assert!((mde - expected).abs() < 1e-12, "{mde}");
        assert!(minimum_detectable_effect(&a, &b[..3]).is_err());
        assert!(minimum_detectable_effect(&[1.0], &[0.0]).is_err());
    }
}
