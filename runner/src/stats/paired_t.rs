//! The paired t-test on per-item values (e.g. log p(gold) under two models).

use serde::{Deserialize, Serialize};

use super::error::{check_paired, StatsError};
use super::student_t::two_sided_p;
use super::Result;

/// Mean difference `a − b`, its standard error, t, degrees of freedom and two-sided p.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedT {
    pub n: usize,
    pub mean_difference: f64,
    pub se: f64,
    /// ±∞ when every difference is the same non-zero value.
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
}

/// Paired t-test of `a[i] − b[i]` against 0; needs two pairs.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<PairedT> {
    check_paired("paired t-test", a, b)?;
    let n = a.len();
    if n < 2 {
        return Err(StatsError::TooFew {
            what: "paired t-test",
            need: 2,
            got: n,
        });
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let ss: f64 = diffs.iter().map(|d| (d - mean) * (d - mean)).sum();
    let se = (ss / (n - 1) as f64).sqrt() / (n as f64).sqrt();
    let df = (n - 1) as f64;
    let (t, p_value) = if se > 0.0 {
        let t = mean / se;
        (t, two_sided_p(t, df))
    } else if mean == 0.0 {
        (0.0, 1.0)
    } else {
        (mean.signum() * f64::INFINITY, 0.0)
    };
    Ok(PairedT {
        n,
        mean_difference: mean,
        se,
        t,
        df,
        p_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // Differences 1, 2, 3, 4, 5, 6: mean 3.5, sd sqrt(3.5), se sqrt(3.5/6), t = 4.5826,
        // df 5, p = 0.00593 (R: t.test(1:6)).
        let a = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
        let b = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let r = paired_t_test(&a, &b).unwrap();
        assert!((r.mean_difference - 3.5).abs() < 1e-12);
        assert!((r.t - 3.5 / (3.5f64 / 6.0).sqrt()).abs() < 1e-12);
        assert_eq!(r.df, 5.0);
        assert!((r.p_value - 0.005_934).abs() < 2e-6, "{}", r.p_value);
        let same = paired_t_test(&b, &b).unwrap();
        assert_eq!((same.t, same.p_value), (0.0, 1.0));
        let shifted: Vec<f64> = b.iter().map(|x| x + 1.0).collect();
        assert_eq!(paired_t_test(&shifted, &b).unwrap().p_value, 0.0);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            paired_t_test(&[1.0], &[2.0]),
            Err(StatsError::TooFew { .. })
        ));
        assert!(matches!(
            paired_t_test(&[1.0, 2.0], &[2.0]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(paired_t_test(&[], &[]).is_err());
    }
}
