use serde::{Deserialize, Serialize};

use crate::spec::{DType, ModelFormat};

/// `import`: read the source model (embedded, HF directory or GGUF) and write a canonical
/// Hugging Face directory (config.json, tokenizer, safetensors in `dtype`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportParams {
    /// `embedded` or the model's path / URI.
    pub source: String,
    /// Source format.
    pub format: ModelFormat,
    /// Output dtype.
    pub dtype: DType,
}
