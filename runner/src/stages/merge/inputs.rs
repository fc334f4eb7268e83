//! The models being merged: their HF directory, config, memory-mapped weights and a digest of
//! the files the merge reads.

use crate::loader::resolve_hf_dir;
use crate::model::safetensors_io::SafetensorsWeights;
use crate::model::ModelConfig;
use crate::stages::{Result, StageError};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Files besides the weights that describe a model; copied from the base model into the
/// merged directory when present.
pub const SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
];

/// One file of an input model and its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

pub struct ModelInput {
    /// As given by the caller.
    pub path: PathBuf,
    /// The HF directory (a `.gguf` is imported into the cache first).
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub weights: SafetensorsWeights,
}

impl ModelInput {
    pub fn open(path: &Path) -> Result<Self> {
        let dir = resolve_hf_dir(path)?;
        let config = ModelConfig::from_json_file(&dir.join("config.json"))?;
        let weights = SafetensorsWeights::open_dir(&dir, DType::F32, &Device::Cpu)?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            config,
            weights,
        })
    }

    /// `path` for messages.
    pub fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// SHA-256 of each file the merge reads (side files, safetensors files and index), by name.
    pub fn file_digests(&self) -> Result<Vec<FileDigest>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| StageError::io(&self.dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StageError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let read = SIDE_FILES.contains(&name.as_str())
                || name.ends_with(".safetensors")
                || name == "model.safetensors.index.json";
            if read && entry.path().is_file() {
                names.push(name);
            }
        }
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let p = self.dir.join(&name);
                let bytes = std::fs::metadata(&p)
                    .map_err(|e| StageError::io(&p, e))?
                    .len();
                let sha256 = crate::util::fs::sha256_file(&p).map_err(|e| StageError::io(&p, e))?;
                Ok(FileDigest {
                    name,
                    bytes,
                    sha256,
                })
            })
            .collect()
    }
}

/// One digest for a model: SHA-256 over `"<sha256>  <name>\n"` lines (sha256sum format) of its
/// files in name order.
pub fn model_digest(files: &[FileDigest]) -> String {
    let mut h = Sha256::new();
    for f in files {
        h.update(format!("{}  {}\n", f.sha256, f.name).as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}
