//! Opening a model from what a user points at: an HF directory, a `.gguf` file (imported once
//! into a cache directory next to it), or the embedded default.

use super::hf_dir::{load_hf_dir_with_base, HfModel};
use crate::model::error::{ModelError, Result};
use crate::model::quant::BaseQuantization;
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// Resolves `path` to an HF directory, importing a GGUF into `<cache>/gguf-<sha-prefix>/` first.
pub fn resolve_hf_dir(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        let digest = crate::util::fs::sha256_file(path).map_err(|e| ModelError::io(path, e))?;
        let out = crate::util::fs::cache_dir().join(format!("gguf-{}", &digest[..16]));
        if !out.join("config.json").exists() {
            super::gguf_import::import_gguf(path, &out)?;
        }
        return Ok(out);
    }
    Err(ModelError::Missing {
        dir: path.display().to_string(),
        name: "model".into(),
        hint: "expected an HF model directory or a .gguf file".into(),
    })
}

/// Opens a model on CPU in f32 (the CPU compute type).
pub fn open_model(path: &Path) -> Result<HfModel> {
    open_model_on(path, &Device::Cpu, DType::F32)
}

/// Opens a model with its weights converted to `dtype` on `device` (tensor by tensor).
pub fn open_model_on(path: &Path, device: &Device, dtype: DType) -> Result<HfModel> {
    open_model_with_base(path, device, dtype, None)
}

/// [`open_model_on`] with the projections kept quantized to `base` (QLoRA).
pub fn open_model_with_base(
    path: &Path,
    device: &Device,
    dtype: DType,
    base: Option<BaseQuantization>,
) -> Result<HfModel> {
    let dir = resolve_hf_dir(path)?;
    load_hf_dir_with_base(&dir, device, dtype, base)
}
