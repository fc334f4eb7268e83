//! Normalized recovery: how much of the base model's margin over chance a variant keeps,
//! `(v − chance) / (base − chance)` (1 = as good as the base, 0 = chance), with a paired
//! bootstrap 95 % interval over the items both runs scored.

use serde::{Deserialize, Serialize};

use super::bootstrap::{paired_bootstrap_ci, BootstrapConfig};
use super::error::{check_paired, StatsError};
use super::summary::Interval;
use super::Result;

/// Normalized recovery with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormalizedRecovery {
    /// Paired items.
    pub n: usize,
    pub chance: f64,
    pub base: f64,
    pub value: f64,
    /// `(value − chance) / (base − chance)`.
    pub recovery: f64,
    pub ci95: Interval,
}

/// Normalized recovery of per-item scores `variant` against `base` (paired, same order).
/// Fails when the base's mean equals chance (nothing to recover).
pub fn normalized_recovery(
    variant: &[f64],
    base: &[f64],
    chance: f64,
    config: BootstrapConfig,
) -> Result<NormalizedRecovery> {
    check_paired("normalized recovery", variant, base)?;
    let n = variant.len();
    let value = variant.iter().sum::<f64>() / n as f64;
    let base_mean = base.iter().sum::<f64>() / n as f64;
    if base_mean == chance {
        return Err(StatsError::Domain {
            what: "normalized recovery",
            why: format!("the base scores exactly chance ({chance}), nothing to recover"),
        });
    }
    let ci = paired_bootstrap_ci(variant, base, config, |v, b| (v - chance) / (b - chance))?;
    Ok(NormalizedRecovery {
        n,
        chance,
        base: base_mean,
        value,
        recovery: ci.estimate,
        ci95: ci.ci95,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        // Base 0.75, variant 0.5, chance 0.25: half the margin kept.
        let base = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let variant = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let r = normalized_recovery(&variant, &base, 0.25, BootstrapConfig::default()).unwrap();
        assert!((r.recovery - 0.5).abs() < 1e-12);
        assert!((r.base - 0.75).abs() < 1e-12 && (r.value - 0.5).abs() < 1e-12);
        assert!(r.ci95.low < 0.5 && r.ci95.high > 0.5);
        // The same scores recover fully, with no spread.
        let same = normalized_recovery(&base, &base, 0.25, BootstrapConfig::default()).unwrap();
        assert_eq!(
            (same.recovery, same.ci95.low, same.ci95.high),
            (1.0, 1.0, 1.0)
        );
        assert!(
            normalized_recovery(&variant, &[0.25; 8], 0.25, BootstrapConfig::default()).is_err()
        );
    }
}
