//! Loading and saving HF model directories (config.json, safetensors, tokenizer files).

use crate::model::config::ModelConfig;
use crate::model::error::{ModelError, Result};
use crate::model::llama::Llama;
use crate::model::quant::BaseQuantization;
use crate::model::safetensors_io::{write_tensors_streamed, SafetensorsWeights, SaveDtype};
use crate::tokenizer::Tokenizer;
use crate::util::fs::{write_json_atomic, StagingDir};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

/// Shards larger checkpoints into files of at most this size.
pub const MAX_SHARD_BYTES: usize = 4 << 30;

pub struct HfModel {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub dir: PathBuf,
    /// The dtype the checkpoint was stored in (used when saving derived models).
    pub stored_dtype: SaveDtype,
}

/// Loads a model directory. Weights are converted to `dtype` (f32 on CPU by default).
pub fn load_hf_dir(dir: &Path, device: &Device, dtype: DType) -> Result<HfModel> {
    load_hf_dir_with_base(dir, device, dtype, None)
}

/// [`load_hf_dir`] with the projections quantized to `base` layer by layer as they are read
/// (QLoRA), so the dense model is never whole in memory.
pub fn load_hf_dir_with_base(
    dir: &Path,
    device: &Device,
    dtype: DType,
    base: Option<BaseQuantization>,
) -> Result<HfModel> {
    if !dir.is_dir() {
        return Err(ModelError::Missing {
            dir: dir.display().to_string(),
            name: "model directory".into(),
            hint: "pass an HF model directory (config.json + safetensors + tokenizer.json) or a .gguf file".into(),
        });
    }
    let cfg_path = dir.join("config.json");
    if !cfg_path.exists() {
        return Err(ModelError::Missing {
            dir: dir.display().to_string(),
            name: "config.json".into(),
            hint: "not an HF model directory".into(),
        });
    }
    let config = ModelConfig::from_json_file(&cfg_path)?;
    let stored_dtype = SaveDtype::from_torch(
        config
            .raw
            .get("torch_dtype")
            .or_else(|| config.raw.get("dtype"))
            .and_then(|v| v.as_str()),
    );
    let tokenizer = Tokenizer::load_dir(dir, &config.eos_token_ids)?;
    let mut weights = SafetensorsWeights::open_dir(dir, dtype, device)?;
    let model = Llama::load_with_base(config, &mut weights, device, base)?;
    Ok(HfModel {
        model,
        tokenizer,
        dir: dir.to_path_buf(),
        stored_dtype,
    })
}

/// Writes `model` and `tokenizer` as an HF directory at `out` (built in a temporary sibling
/// directory and renamed into place).
pub fn save_hf_dir(
    model: &Llama,
    tokenizer: &Tokenizer,
    out: &Path,
    dtype: SaveDtype,
) -> Result<()> {
    let staging = StagingDir::new(out).map_err(|e| ModelError::io(out, e))?;
    let dir = staging.path();
    let mut cfg = model.config.to_json();
    cfg["torch_dtype"] = dtype.torch_name().into();
    if cfg.get("dtype").is_some() {
        cfg["dtype"] = dtype.torch_name().into();
    }
    write_json_atomic(&dir.join("config.json"), &cfg)
        .map_err(|e| ModelError::io(&dir.join("config.json"), e))?;
    // Encoded one tensor at a time while written (views of the model's weights otherwise).
    write_tensors_streamed(dir, &model.named_weights()?, dtype, MAX_SHARD_BYTES)?;
    tokenizer.save_dir(dir)?;
    write_generation_config(dir, model, tokenizer)?;
    staging.commit().map_err(|e| ModelError::io(out, e))?;
    Ok(())
}

pub fn write_generation_config(dir: &Path, model: &Llama, tokenizer: &Tokenizer) -> Result<()> {
    let mut g = serde_json::json!({"_from_model_config": true});
    if let Some(b) = tokenizer.bos_id.or(model.config.bos_token_id) {
        g["bos_token_id"] = b.into();
    }
    match tokenizer.eos_ids.as_slice() {
        [] => {}
        [one] => g["eos_token_id"] = (*one).into(),
        many => g["eos_token_id"] = many.to_vec().into(),
    }
    if let Some(p) = tokenizer.pad_id {
        g["pad_token_id"] = p.into();
    }
    write_json_atomic(&dir.join("generation_config.json"), &g)
        .map_err(|e| ModelError::io(&dir.join("generation_config.json"), e))
}
