//! What goes wrong with the input of a statistic.

/// Bad input to a statistic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// No values at all.
    #[error("{what}: no values")]
    Empty { what: &'static str },
    /// Paired slices of different lengths.
    #[error("{what}: paired values differ in length ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
    /// Fewer values than the statistic needs.
    #[error("{what}: needs at least {need} values, got {got}")]
    TooFew {
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// A NaN or infinite value.
    #[error("{what}: value {index} is not finite")]
    NotFinite { what: &'static str, index: usize },
    /// An argument out of its domain.
    #[error("{what}: {why}")]
    Domain { what: &'static str, why: String },
}

/// Fails on an empty slice or a non-finite value.
pub fn check_finite(what: &'static str, values: &[f64]) -> Result<(), StatsError> {
    if values.is_empty() {
        return Err(StatsError::Empty { what });
    }
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(StatsError::NotFinite { what, index }),
        None => Ok(()),
    }
}

/// Fails unless `a` and `b` are non-empty, finite and of the same length.
pub fn check_paired(what: &'static str, a: &[f64], b: &[f64]) -> Result<(), StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            what,
            left: a.len(),
            right: b.len(),
        });
    }
    check_finite(what, a)?;
    check_finite(what, b)
}
