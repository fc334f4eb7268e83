//! Errors of the training code.

use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad parameters or inputs: the message says what to fix.
    #[error("{0}")]
    Input(String),
    /// A checkpoint or adapter file that cannot be used.
    #[error("{path}: {reason}")]
    Checkpoint { path: String, reason: String },
    /// The loss or the gradients stopped being finite.
    #[error("training diverged at step {step}: {what} is not finite ({value}); {hint}")]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
        hint: String,
    },
}

impl TrainError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
    pub fn checkpoint(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Self::Checkpoint {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
