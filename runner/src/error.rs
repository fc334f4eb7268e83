//! The runner's error for stage work: the stages, the evaluation they run and the inputs they
//! read. Lower layers (model, data, training, resolving references) have their own typed
//! errors, which convert into this one.

use crate::data::DataError;
use crate::model::ModelError;
use crate::resolve::ResolveError;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad parameters or inputs: the message says what to fix.
    #[error("{0}")]
    Input(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    DoesNotFit(#[from] crate::memory_plan::DoesNotFit),
}

impl StageError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = StageError> = std::result::Result<T, E>;
