//! Mean, sample standard deviation, standard error and normal 95 % intervals.

use serde::{Deserialize, Serialize};

use super::error::{check_finite, StatsError};
use super::normal::Z_975;
use super::Result;

/// A two-sided interval `[low, high]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// The normal 95 % interval `estimate ± 1.96 · se`.
    pub fn normal_95(estimate: f64, se: f64) -> Self {
        Interval {
            low: estimate - Z_975 * se,
            high: estimate + Z_975 * se,
        }
    }

    /// Whether `x` lies inside (bounds included).
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    /// Whether the interval includes 0 (no ordering can be claimed).
    pub fn spans_zero(&self) -> bool {
        self.contains(0.0)
    }
}

/// Mean of `values`.
pub fn mean(values: &[f64]) -> Result<f64> {
    check_finite("mean", values)?;
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

/// Sample standard deviation (n − 1 in the denominator); needs two values.
pub fn std_dev(values: &[f64]) -> Result<f64> {
    check_finite("standard deviation", values)?;
    if values.len() < 2 {
        return Err(StatsError::TooFew {
            what: "standard deviation",
            need: 2,
            got: values.len(),
        });
    }
    let m = values.iter().sum::<f64>() / values.len() as f64;
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    Ok((ss / (values.len() - 1) as f64).sqrt())
}

/// Standard error of the mean: `sd / sqrt(n)` (for 0/1 values this is the accuracy's standard
/// error `sqrt(p (1 − p) / (n − 1))`, lm-eval's `acc_stderr`).
pub fn standard_error(values: &[f64]) -> Result<f64> {
    Ok(std_dev(values)? / (values.len() as f64).sqrt())
}

/// Standard error of an accuracy of `correct` out of `n` (at least two) items,
/// `sqrt(p (1 − p) / (n − 1))` — the same as [`standard_error`] of the 0/1 values.
pub fn accuracy_standard_error(correct: usize, n: usize) -> Result<f64> {
    if n < 2 {
        return Err(StatsError::TooFew {
            what: "accuracy standard error",
            need: 2,
            got: n,
        });
    }
    if correct > n {
        return Err(StatsError::Domain {
            what: "accuracy standard error",
            why: format!("{correct} correct out of {n}"),
        });
    }
    let p = correct as f64 / n as f64;
    Ok((p * (1.0 - p) / (n - 1) as f64).sqrt())
}

/// A mean with its standard error and normal 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanEstimate {
    pub n: usize,
    pub mean: f64,
    pub se: f64,
    pub ci95: Interval,
}

impl MeanEstimate {
    /// The mean of `values` (at least two) with its standard error.
    pub fn of(values: &[f64]) -> Result<Self> {
        let mean = mean(values)?;
        let se = standard_error(values)?;
        Ok(MeanEstimate {
            n: values.len(),
            mean,
            se,
            ci95: Interval::normal_95(mean, se),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_cases() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample variance 32/7.
        let v = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&v), Ok(5.0));
        let sd = (32.0f64 / 7.0).sqrt();
        assert!((std_dev(&v).unwrap() - sd).abs() < 1e-12);
        assert!((standard_error(&v).unwrap() - sd / 8f64.sqrt()).abs() < 1e-12);
        // Accuracy 0.5 on 4 items: sqrt(0.25 / 3).
        let acc = [1.0, 0.0, 1.0, 0.0];
        let se = standard_error(&acc).unwrap();
        assert!((se - (0.25f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((accuracy_standard_error(2, 4).unwrap() - se).abs() < 1e-15);
        // 30 of 100: sqrt(0.21 / 99).
        let se100 = accuracy_standard_error(30, 100).unwrap();
        assert!((se100 - (0.21f64 / 99.0).sqrt()).abs() < 1e-15);
        assert!(accuracy_standard_error(3, 2).is_err() && accuracy_standard_error(1, 1).is_err());
        let e = MeanEstimate::of(&acc).unwrap();
        assert!((e.ci95.high - 0.5 - 1.959963984540054 * se).abs() < 1e-12);
        assert!(e.ci95.contains(0.5) && e.ci95.spans_zero() == (e.ci95.low <= 0.0));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(mean(&[]), Err(StatsError::Empty { what: "mean" }));
        assert!(matches!(std_dev(&[1.0]), Err(StatsError::TooFew { .. })));
        assert!(matches!(
            mean(&[1.0, f64::NAN]),
            Err(StatsError::NotFinite { index: 1, .. })
        ));
    }
}
