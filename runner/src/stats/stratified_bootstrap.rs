//! The stratified paired bootstrap: a statistic averaged over strata (tasks), each stratum's
//! items resampled with replacement on their own, the same indices for both arms. Gives the
//! interval of a mean over tasks, e.g. the average normalized recovery.

use super::bootstrap::{BootstrapCi, BootstrapConfig};
use super::error::{check_paired, StatsError};
use super::summary::Interval;
use super::Result;
use crate::util::rng::SplitMix64;

/// One stratum: paired per-item values of the two arms.
pub struct Stratum<'a> {
    pub a: &'a [f64],
    pub b: &'a [f64],
}

/// Percentile 95 % interval of the mean over strata of `statistic(stratum index, mean of a,
/// mean of b)`. Fails on no strata, bad input in one, zero resamples, or a statistic undefined
/// on the full sample or on every resample.
pub fn stratified_mean_ci(
    strata: &[Stratum<'_>],
    config: BootstrapConfig,
    statistic: impl Fn(usize, f64, f64) -> f64,
) -> Result<BootstrapCi> {
    const WHAT: &str = "stratified bootstrap";
    if strata.is_empty() {
        return Err(StatsError::Empty { what: WHAT });
    }
    for s in strata {
        check_paired(WHAT, s.a, s.b)?;
    }
    if config.resamples == 0 {
        return Err(StatsError::Domain {
            what: WHAT,
            why: "needs at least one resample".into(),
        });
    }
    let k = strata.len() as f64;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let estimate = strata
        .iter()
        .enumerate()
        .map(|(i, s)| statistic(i, mean(s.a), mean(s.b)))
        .sum::<f64>()
        / k;
    if !estimate.is_finite() {
        return Err(StatsError::Domain {
            what: WHAT,
            why: "the statistic is undefined on the full sample".into(),
        });
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut stats = Vec::with_capacity(config.resamples);
    for _ in 0..config.resamples {
        let mut total = 0.0;
        for (i, s) in strata.iter().enumerate() {
            let n = s.a.len();
            let (mut sum_a, mut sum_b) = (0.0, 0.0);
            for _ in 0..n {
                let j = rng.below_unbiased(n as u64) as usize;
                sum_a += s.a[j];
                sum_b += s.b[j];
            }
            total += statistic(i, sum_a / n as f64, sum_b / n as f64);
        }
        let value = total / k;
        if value.is_finite() {
            stats.push(value);
        }
    }
    if stats.is_empty() {
        return Err(StatsError::Domain {
            what: WHAT,
            why: "the statistic is undefined on every resample".into(),
        });
    }
    stats.sort_by(f64::total_cmp);
    Ok(BootstrapCi {
        estimate,
        ci95: Interval {
            low: super::bootstrap::percentile(&stats, 0.025),
            high: super::bootstrap::percentile(&stats, 0.975),
        },
        resamples_used: stats.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_over_strata() {
        // Two tasks with constant shifts 0.2 and 0.4: every resample averages to 0.3.
        let b1 = [0.1, 0.5, 0.9, 0.3];
        let a1: Vec<f64> = b1.iter().map(|x| x + 0.2).collect();
        let b2 = [0.0, 1.0, 0.5];
        let a2: Vec<f64> = b2.iter().map(|x| x + 0.4).collect();
        let strata = [Stratum { a: &a1, b: &b1 }, Stratum { a: &a2, b: &b2 }];
        let cfg = BootstrapConfig::default();
        let ci = stratified_mean_ci(&strata, cfg, |_, x, y| x - y).unwrap();
        assert!((ci.estimate - 0.3).abs() < 1e-12);
        assert!((ci.ci95.low - 0.3).abs() < 1e-9 && (ci.ci95.high - 0.3).abs() < 1e-9);
        assert_eq!(
            ci,
            stratified_mean_ci(&strata, cfg, |_, x, y| x - y).unwrap()
        );
        // The stratum index reaches the statistic (per-task chance levels).
        let ci = stratified_mean_ci(&strata, cfg, |i, x, y| if i == 0 { x - y } else { 0.0 });
        assert!((ci.unwrap().estimate - 0.1).abs() < 1e-12);
        assert!(stratified_mean_ci(&[], cfg, |_, x, y| x - y).is_err());
        let bad = [Stratum { a: &a1, b: &b2 }];
        assert!(stratified_mean_ci(&bad, cfg, |_, x, y| x - y).is_err());
    }
}
