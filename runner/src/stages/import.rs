//! Stage `import`: the model source (the embedded default, an HF directory, a `.gguf` file,
//! local or in object storage) becomes the job's canonical HF directory, stored in the
//! requested dtype. Loading it once here proves every later stage can.

use crate::model::safetensors_io::SaveDtype;
use crate::model::{open_model, resolve_hf_dir, save_hf_dir};
use crate::stages::{Result, StageError};
pub use pruneforge_api::params::ImportParams;
use pruneforge_api::spec::model::EMBEDDED_SOURCE;
use pruneforge_api::spec::{DType, ModelFormat};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportSummary {
    pub source: String,
    pub architecture: String,
    pub layers: usize,
    pub parameters: u64,
    pub dtype: String,
}

fn is_remote(uri: &str) -> bool {
    ["s3://", "gs://", "az://", "azure://"]
        .iter()
        .any(|s| uri.starts_with(s))
}

/// A local path for `source`, downloading remote sources into `cache` first.
fn localize(source: &str, format: ModelFormat, cache: &Path) -> Result<PathBuf> {
    if source == EMBEDDED_SOURCE {
        return crate::embedded::ensure_hf_dir().map_err(|e| StageError::Input(e.to_string()));
    }
    if !is_remote(source) {
        let p = source.strip_prefix("file://").unwrap_or(source);
        return Ok(PathBuf::from(p));
    }
    let gguf = match format {
        ModelFormat::Gguf => true,
        ModelFormat::Hf => false,
        ModelFormat::Auto => source.to_ascii_lowercase().ends_with(".gguf"),
    };
    if gguf {
        let (dir, name) = source
            .rsplit_once('/')
            .ok_or_else(|| StageError::Input(format!("bad model URI {source}")))?;
        let store = crate::storage::BlockingStorage::open(dir)
            .map_err(|e| StageError::Input(format!("{source}: {e}")))?;
        let bytes = store
            .get_bytes(name)
            .map_err(|e| StageError::Input(format!("{source}: {e}")))?;
        std::fs::create_dir_all(cache).map_err(|e| StageError::io(cache, e))?;
        let local = cache.join(name);
        crate::util::fs::write_atomic(&local, &bytes).map_err(|e| StageError::io(&local, e))?;
        Ok(local)
    } else {
        let local = cache.join("model");
        let store = crate::storage::BlockingStorage::open(source)
            .map_err(|e| StageError::Input(format!("{source}: {e}")))?;
        if store.is_committed("").unwrap_or(false) {
            store
                .download_dir("", &local)
                .map_err(|e| StageError::Input(format!("{source}: {e}")))?;
        } else {
            // A plain HF directory uploaded without our manifest: copy every object.
            std::fs::create_dir_all(&local).map_err(|e| StageError::io(&local, e))?;
            for o in store
                .list("")
                .map_err(|e| StageError::Input(format!("{source}: {e}")))?
            {
                let key = o.key.to_string();
                let name = key.rsplit('/').next().unwrap_or(&key).to_string();
                let bytes = store
                    .get_bytes(&name)
                    .map_err(|e| StageError::Input(format!("{source}: {e}")))?;
                crate::util::fs::write_atomic(&local.join(&name), &bytes)
                    .map_err(|e| StageError::io(&local, e))?;
            }
        }
        Ok(local)
    }
}

pub fn run(params: &ImportParams, cache: &Path, out_dir: &Path) -> Result<ImportSummary> {
    let local = localize(&params.source, params.format, cache)?;
    if params.format == ModelFormat::Hf && !local.is_dir() {
        return Err(StageError::Input(format!(
            "model.format is hf but {} is not a directory",
            local.display()
        )));
    }
    let dir = resolve_hf_dir(&local)?;
    let m = open_model(&dir)?;
    let dtype = match params.dtype {
        DType::F32 => SaveDtype::F32,
        DType::Bf16 => SaveDtype::BF16,
        DType::F16 => SaveDtype::F16,
    };
    save_hf_dir(&m.model, &m.tokenizer, out_dir, dtype)?;
    Ok(ImportSummary {
        source: params.source.clone(),
        architecture: m.model.config.architecture.hf_class().into(),
        layers: m.model.num_layers(),
        parameters: m.model.config.parameter_count(),
        dtype: dtype.torch_name().into(),
    })
}
