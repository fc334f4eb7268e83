//! Errors of model loading, saving and running.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid model config: {reason}")]
    Config { file: String, reason: String },
    #[error("{file}: invalid or corrupt safetensors file: {reason}")]
    Safetensors { file: String, reason: String },
    /// A `weight_map` entry of `model.safetensors.index.json` that does not name a shard file
    /// directly inside the model directory (it could read files elsewhere).
    #[error(
        "{index}: `weight_map` entry `{tensor}` names shard {shard}, which {reason}; shard names \
         must be plain file names in the model directory (e.g. \
         `model-00001-of-00002.safetensors`): fix the index or re-save the model"
    )]
    ShardName {
        index: String,
        tensor: String,
        /// The shard as written in the index (JSON, so that odd values show as they are).
        shard: String,
        reason: &'static str,
    },
    #[error("{file}: invalid or corrupt GGUF file: {reason}")]
    Gguf { file: String, reason: String },
    #[error("{file}: tensor `{name}`: {reason}")]
    Tensor {
        file: String,
        name: String,
        reason: String,
    },
    #[error("{dir}: missing `{name}`: {hint}")]
    Missing {
        dir: String,
        name: String,
        hint: String,
    },
    #[error("{file}: tokenizer: {reason}")]
    Tokenizer { file: String, reason: String },
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
