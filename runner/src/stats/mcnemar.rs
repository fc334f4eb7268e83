//! The exact McNemar test: paired binary outcomes (item correct under A, under B); only the
//! discordant pairs count. With b items right only under A and c right only under B, the
//! two-sided p-value is `min(1, 2 · P[X ≤ min(b, c)])`, X ~ Bin(b + c, 1/2).

use serde::{Deserialize, Serialize};

use super::binomial::ln_cdf;
use super::error::StatsError;
use super::Result;

/// The discordant counts and the exact two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Items right under A, wrong under B.
    pub only_a: u64,
    /// Items right under B, wrong under A.
    pub only_b: u64,
    pub p_value: f64,
}

/// Exact two-sided p-value from the discordant counts `b` and `c` (1 when there are none).
pub fn mcnemar_exact_counts(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    let tail = ln_cdf(n, b.min(c), 0.5);
    (2.0 * tail.exp()).min(1.0)
}

/// The exact McNemar test on paired outcomes `a[i]`, `b[i]` (true = correct).
pub fn mcnemar_exact(a: &[bool], b: &[bool]) -> Result<McNemar> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            what: "McNemar test",
            left: a.len(),
            right: b.len(),
        });
    }
    if a.is_empty() {
        return Err(StatsError::Empty {
            what: "McNemar test",
        });
    }
    let only_a = a.iter().zip(b).filter(|(x, y)| **x && !**y).count() as u64;
    let only_b = a.iter().zip(b).filter(|(x, y)| !**x && **y).count() as u64;
    Ok(McNemar {
        only_a,
        only_b,
        p_value: mcnemar_exact_counts(only_a, only_b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_values() {
        assert!((mcnemar_exact_counts(1, 9) - 0.021_484_375).abs() < 1e-12);
        assert!((mcnemar_exact_counts(9, 1) - 0.021_484_375).abs() < 1e-12);
        assert_eq!(mcnemar_exact_counts(5, 5), 1.0);
        assert!((mcnemar_exact_counts(0, 6) - 0.031_25).abs() < 1e-12);
        assert_eq!(mcnemar_exact_counts(0, 0), 1.0);
        // 2 · P[X ≤ 2], X ~ Bin(12, 1/2) = 2 · 79 / 4096.
        assert!((mcnemar_exact_counts(2, 10) - 158.0 / 4096.0).abs() < 1e-12);
    }

    #[test]
    fn large_counts_are_stable() {
        let p = mcnemar_exact_counts(4_000, 6_000);
        assert!(p.is_finite() && p > 0.0 && p < 1e-80, "{p}");
        let p = mcnemar_exact_counts(50_000, 50_100);
        assert!(p > 0.7 && p <= 1.0, "{p}");
    }

    #[test]
    fn from_paired_outcomes() {
        let a = [true, true, false, false, true];
        let b = [false, true, true, false, true];
        let m = mcnemar_exact(&a, &b).unwrap();
        assert_eq!((m.only_a, m.only_b), (1, 1));
        assert_eq!(m.p_value, 1.0);
        assert!(mcnemar_exact(&a, &b[..2]).is_err());
        assert!(mcnemar_exact(&[], &[]).is_err());
    }
}
