//! Statistics for comparing evaluation runs: plain functions over slices of per-item values.
//!
//! - [`summary`]: mean, sample standard deviation, standard error and normal 95 % intervals.
//! - [`normal`]: the standard normal quantiles the intervals and power calculations use.
//! - [`gamma`], [`beta`]: log-gamma and the regularized incomplete beta function.
//! - [`binomial`]: the binomial distribution's lower tail, in log space.
//! - [`mcnemar`]: the exact McNemar test on paired binary outcomes.
//! - [`student_t`]: Student's t distribution (two-sided p-values).
//! - [`paired_t`]: the paired t-test.
//! - [`bootstrap`]: seeded paired bootstrap intervals of a statistic of two means.
//! - [`stratified_bootstrap`]: the same for a mean over strata (tasks) resampled separately.
//! - [`effect_size`]: the minimum detectable effect of a paired comparison.
//! - [`recovery`]: normalized recovery `(v − chance)/(base − chance)` with its interval.
//!
//! Bad input (empty slices, mismatched lengths, too few items) is a [`StatsError`], never a
//! panic.

pub mod beta;
pub mod binomial;
pub mod bootstrap;
pub mod effect_size;
pub mod error;
pub mod gamma;
pub mod mcnemar;
pub mod normal;
pub mod paired_t;
pub mod recovery;
pub mod stratified_bootstrap;
pub mod student_t;
pub mod summary;

pub use bootstrap::{paired_bootstrap_ci, BootstrapCi, BootstrapConfig};
pub use effect_size::minimum_detectable_effect;
pub use error::StatsError;
pub use mcnemar::{mcnemar_exact, McNemar};
pub use paired_t::{paired_t_test, PairedT};
pub use recovery::{normalized_recovery, NormalizedRecovery};
pub use summary::{accuracy_standard_error, mean, standard_error, std_dev, Interval, MeanEstimate};

/// Results of this module.
pub type Result<T> = std::result::Result<T, StatsError>;
