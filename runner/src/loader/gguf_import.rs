//! `pruneforge import`: GGUF → HF directory that transformers (and we) can load.

use crate::model::error::{ModelError, Result};
use crate::model::gguf::{convert, GgufFile};
use crate::model::safetensors_io::{encode_f32, write_safetensors, SaveDtype};
use crate::tokenizer::gguf::from_gguf;
use crate::util::fs::{write_atomic, write_json_atomic, StagingDir};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub architecture: String,
    pub tensors: usize,
    pub parameters: u64,
    pub tensor_types: std::collections::BTreeMap<String, usize>,
}

pub fn import_gguf(gguf: &Path, out: &Path) -> Result<ImportReport> {
    let f = GgufFile::open(gguf)?;
    let cfg = convert::hf_config(&f)?;
    let tok = from_gguf(&f)?;
    let tensors = convert::hf_tensors(&f, &cfg)?;
    // Validate by parsing what we are about to write.
    let parsed =
        crate::model::config::ModelConfig::from_json(cfg.clone(), &gguf.display().to_string())?;
    let mut tensor_types = std::collections::BTreeMap::new();
    for t in &f.tensors {
        let name = crate::model::gguf::reader::type_layout(t.ggml_type)
            .map(|l| l.0)
            .unwrap_or("?");
        *tensor_types.entry(name.to_string()).or_insert(0) += 1;
    }
    let staging = StagingDir::new(out).map_err(|e| ModelError::io(out, e))?;
    let dir = staging.path();
    let parameters: u64 = tensors.iter().map(|t| t.data.len() as u64).sum();
    let raw: Vec<_> = tensors
        .iter()
        .map(|t| {
            let mut r = encode_f32(&t.data, SaveDtype::F32);
            r.shape = t.shape.clone();
            (t.name.clone(), r)
        })
        .collect();
    write_safetensors(dir, &raw, super::hf_dir::MAX_SHARD_BYTES)?;
    write_json_atomic(&dir.join("config.json"), &cfg)
        .map_err(|e| ModelError::io(&dir.join("config.json"), e))?;
    let tj = serde_json::to_vec(&tok.tokenizer_json).unwrap_or_default();
    write_atomic(&dir.join("tokenizer.json"), &tj)
        .map_err(|e| ModelError::io(&dir.join("tokenizer.json"), e))?;
    write_json_atomic(&dir.join("tokenizer_config.json"), &tok.tokenizer_config)
        .map_err(|e| ModelError::io(&dir.join("tokenizer_config.json"), e))?;
    if let Some(t) = &tok.chat_template {
        write_atomic(&dir.join("chat_template.jinja"), t.as_bytes())
            .map_err(|e| ModelError::io(&dir.join("chat_template.jinja"), e))?;
    }
    let mut gen = serde_json::json!({"_from_model_config": true});
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = cfg.get(k) {
            gen[k] = v.clone();
        }
    }
    write_json_atomic(&dir.join("generation_config.json"), &gen)
        .map_err(|e| ModelError::io(&dir.join("generation_config.json"), e))?;
    staging.commit().map_err(|e| ModelError::io(out, e))?;
    Ok(ImportReport {
        source: gguf.display().to_string(),
        architecture: parsed.architecture.hf_class().into(),
        tensors: raw.len(),
        parameters,
        tensor_types,
    })
}
