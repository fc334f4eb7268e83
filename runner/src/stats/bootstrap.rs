//! The seeded paired bootstrap: resample items with replacement, the same indices for both
//! arms, and take the 2.5 % and 97.5 % percentiles of a statistic of the two resampled means
//! (a mean difference, a ratio of means).

use serde::{Deserialize, Serialize};

use super::error::{check_paired, StatsError};
use super::summary::Interval;
use super::Result;
use crate::util::rng::SplitMix64;

/// How many resamples, and the seed of the resampling stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            resamples: 2000,
            seed: 1234,
        }
    }
}

/// A statistic on the full sample with its percentile 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    pub estimate: f64,
    pub ci95: Interval,
    /// Resamples whose statistic was finite (a ratio is undefined when its denominator is 0).
    pub resamples_used: usize,
}

/// Percentile 95 % interval of `statistic(mean of a, mean of b)` over paired resamples of
/// `a` and `b`. Fails on empty or mismatched input, zero resamples, or when the statistic is
/// undefined on the full sample or on every resample.
pub fn paired_bootstrap_ci(
    a: &[f64],
    b: &[f64],
    config: BootstrapConfig,
    statistic: impl Fn(f64, f64) -> f64,
) -> Result<BootstrapCi> {
    check_paired("paired bootstrap", a, b)?;
    if config.resamples == 0 {
        return Err(StatsError::Domain {
            what: "paired bootstrap",
            why: "needs at least one resample".into(),
        });
    }
    let n = a.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let estimate = statistic(mean(a), mean(b));
    if !estimate.is_finite() {
        return Err(StatsError::Domain {
            what: "paired bootstrap",
            why: "the statistic is undefined on the full sample".into(),
        });
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut stats = Vec::with_capacity(config.resamples);
    for _ in 0..config.resamples {
        let (mut sum_a, mut sum_b) = (0.0, 0.0);
        for _ in 0..n {
            let i = rng.below_unbiased(n as u64) as usize;
            sum_a += a[i];
            sum_b += b[i];
        }
        let s = statistic(sum_a / n as f64, sum_b / n as f64);
        if s.is_finite() {
            stats.push(s);
        }
    }
    if stats.is_empty() {
        return Err(StatsError::Domain {
            what: "paired bootstrap",
            why: "the statistic is undefined on every resample".into(),
        });
    }
    stats.sort_by(f64::total_cmp);
    Ok(BootstrapCi {
        estimate,
        ci95: Interval {
            low: percentile(&stats, 0.025),
            high: percentile(&stats, 0.975),
        },
        resamples_used: stats.len(),
    })
}

/// Paired bootstrap interval of the mean difference `mean(a) − mean(b)`.
pub fn mean_difference_ci(a: &[f64], b: &[f64], config: BootstrapConfig) -> Result<BootstrapCi> {
    paired_bootstrap_ci(a, b, config, |x, y| x - y)
}

/// The `q` quantile of sorted values, linear between order statistics.
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_for_a_seed() {
        let a: Vec<f64> = (0..50).map(|i| f64::from(i % 3 == 0)).collect();
        let b: Vec<f64> = (0..50).map(|i| f64::from(i % 2 == 0)).collect();
        let cfg = BootstrapConfig {
            resamples: 500,
            seed: 7,
        };
        let x = mean_difference_ci(&a, &b, cfg).unwrap();
        assert_eq!(x, mean_difference_ci(&a, &b, cfg).unwrap());
        let other = mean_difference_ci(&a, &b, BootstrapConfig { seed: 8, ..cfg }).unwrap();
        assert_ne!(x.ci95, other.ci95);
        assert_eq!(x.resamples_used, 500);
    }

    #[test]
    fn covers_the_true_difference() {
        // A constant shift of 0.3 plus noise shared by both arms: every resample sees 0.3.
        let mut rng = SplitMix64::new(3);
        let b: Vec<f64> = (0..200).map(|_| rng.next_f64()).collect();
        let a: Vec<f64> = b.iter().map(|x| x + 0.3).collect();
        let ci = mean_difference_ci(&a, &b, BootstrapConfig::default()).unwrap();
        assert!((ci.ci95.low - 0.3).abs() < 1e-9 && (ci.ci95.high - 0.3).abs() < 1e-9);
        // Independent noise around a true difference of 0.1: the interval covers it, and its
        // width is about 2 · 1.96 · sd(diff)/sqrt(n).
        let a: Vec<f64> = (0..400).map(|_| 0.6 + rng.next_f64() - 0.5).collect();
        let b: Vec<f64> = (0..400).map(|_| 0.5 + rng.next_f64() - 0.5).collect();
        let ci = mean_difference_ci(&a, &b, BootstrapConfig::default()).unwrap();
        assert!(ci.ci95.contains(0.1), "{ci:?}");
        let width = ci.ci95.high - ci.ci95.low;
        let expected = 2.0 * 1.96 * (2.0f64 / 12.0).sqrt() / 20.0;
        assert!(
            (width / expected - 1.0).abs() < 0.15,
            "{width} vs {expected}"
        );
    }

    #[test]
    fn ratio_and_bad_input() {
        let a = [0.5, 0.7, 0.6, 0.8];
        let b = [1.0, 1.0, 1.0, 1.0];
        let ci = paired_bootstrap_ci(&a, &b, BootstrapConfig::default(), |x, y| x / y).unwrap();
        assert!((ci.estimate - 0.65).abs() < 1e-12);
        assert!(ci.ci95.low >= 0.5 && ci.ci95.high <= 0.8);
        let cfg = BootstrapConfig::default();
        assert!(mean_difference_ci(&a, &b[..2], cfg).is_err());
        assert!(mean_difference_ci(&[], &[], cfg).is_err());
        let zero = [0.0; 4];
        assert!(paired_bootstrap_ci(&a, &zero, cfg, |x, y| x / y).is_err());
        let none = BootstrapConfig {
            resamples: 0,
            ..cfg
        };
        assert!(mean_difference_ci(&a, &b, none).is_err());
    }
}
