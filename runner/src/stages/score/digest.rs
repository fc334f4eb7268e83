//! Content digest of an HF model directory: which weights were scored (and later pruned).
//!
//! `sha256` over the lines `NAME\0SHA256(FILE)\n` of `config.json`, `*.safetensors` and
//! `model.safetensors.index.json` (when present), sorted by name. Tokenizer files are left out:
//! they do not change the hidden states.

use crate::stages::{Result, StageError};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The model directory's digest (hex), see the module docs.
pub fn model_sha256(dir: &Path) -> Result<String> {
    let entries = std::fs::read_dir(dir).map_err(|e| StageError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StageError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "config.json"
            || name == "model.safetensors.index.json"
            || name.ends_with(".safetensors")
        {
            names.push(name);
        }
    }
    if !names.iter().any(|n| n == "config.json") {
        return Err(StageError::Input(format!(
            "{}: no config.json, not an HF model directory",
            dir.display()
        )));
    }
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        let path = dir.join(&name);
        let file = crate::util::fs::sha256_file(&path).map_err(|e| StageError::io(&path, e))?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update(file.as_bytes());
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}
