//! How much memory a stage needs before it starts, and a clear refusal when the device does
//! not have it (instead of an out-of-memory crash half-way).
//!
//! The estimate counts what dominates at 8B scale: the weights in the compute dtype, the KV
//! cache of generation, the activations one forward (or, for training, one forward kept for
//! the backward pass of every layer) holds at the stage's batch and sequence length, the f32
//! logits of a chunk, and the f32 LoRA weights with their gradients and AdamW moments. It is
//! deliberately simple arithmetic on the config: docs/gpu.md gives the same numbers per stage.

use crate::model::config::ModelConfig;
use candle_core::{DType, Device};
use std::fmt;

const GIB: f64 = (1u64 << 30) as f64;
/// Head-room the estimate leaves for allocator slack, the CUDA context and cuBLAS workspaces.
pub const SLACK_FRACTION: f64 = 0.10;

/// What a stage will hold at its peak, in bytes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MemoryNeed {
    /// The stage, for messages.
    pub stage: String,
    /// Model weights in the compute dtype (every model the stage holds).
    pub weights: u64,
    /// KV cache of generation.
    pub kv_cache: u64,
    /// Activations (and, for training, those kept for the backward pass).
    pub activations: u64,
    /// LoRA weights, gradients and AdamW moments (f32).
    pub training_state: u64,
}

impl MemoryNeed {
    /// The need of the same stage when the model of shape `cfg` (one of the models counted in
    /// `weights`) keeps its projections quantized to `base` (QLoRA): its dense weights are
    /// replaced by [`quantized_weights_bytes`]; any other model (a KD teacher) stays counted.
    pub fn with_quantized_base(
        mut self,
        cfg: &ModelConfig,
        dtype: DType,
        base: crate::model::quant::BaseQuantization,
    ) -> Self {
        self.weights = self.weights.saturating_sub(weights_bytes(cfg, dtype))
            + quantized_weights_bytes(cfg, dtype, base);
        self
    }

    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.activations + self.training_state
    }
}

impl fmt::Display for MemoryNeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "≈ {:.1} GiB (weights {:.1}, KV cache {:.1}, activations {:.1}, LoRA state {:.1})",
            gib(self.total()),
            gib(self.weights),
            gib(self.kv_cache),
            gib(self.activations),
            gib(self.training_state)
        )
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / GIB
}

/// The stage does not fit the device.
#[derive(Debug, thiserror::Error)]
#[error(
    "{stage} needs {need} on {device}, but only {available:.1} GiB are available \
     ({slack:.0} % kept as head-room): use a device with more memory, bf16 instead of f32, \
     or a smaller batch or sequence length (models that do not fit one GPU need multi-GPU, \
     which pruneforge does not have yet)",
    stage = need.stage,
    available = *available as f64 / GIB,
    slack = SLACK_FRACTION * 100.0
)]
pub struct DoesNotFit {
    pub need: MemoryNeed,
    pub device: String,
    pub available: u64,
}

fn dtype_bytes(dtype: DType) -> u64 {
    dtype.size_in_bytes() as u64
}

/// Weights of `cfg` in `dtype`.
pub fn weights_bytes(cfg: &ModelConfig, dtype: DType) -> u64 {
    cfg.parameter_count() * dtype_bytes(dtype)
}

/// The weights of a QLoRA model: the projections in `base`'s blocks, every other weight in
/// `dtype`, plus one layer's projections dequantized (f32) while a layer computes.
pub fn quantized_weights_bytes(
    cfg: &ModelConfig,
    dtype: DType,
    base: crate::model::quant::BaseQuantization,
) -> u64 {
    use crate::model::quant::FormatFacts;
    let h = cfg.hidden_size as u64;
    let per_layer = h * (cfg.q_dim() + 2 * cfg.kv_dim()) as u64
        + cfg.q_dim() as u64 * h
        + 3 * h * cfg.intermediate_size as u64;
    let projections = per_layer * cfg.num_hidden_layers as u64;
    let rest = cfg.parameter_count().saturating_sub(projections);
    rest * dtype_bytes(dtype)
        + (projections as f64 * base.bits_per_weight() / 8.0).ceil() as u64
        + per_layer * 4
}

/// Generation of `max_new_tokens` after prompts of up to 1024 tokens, `rows` sequences at a
/// time (distill, self-play).
pub fn generation(
    stage: &str,
    cfg: &ModelConfig,
    dtype: DType,
    rows: usize,
    max_new_tokens: usize,
) -> MemoryNeed {
    let rows = rows.max(1);
    inference(
        stage,
        cfg,
        dtype,
        1,
        rows,
        1024,
        rows,
        1024 + max_new_tokens,
        false,
    )
}

/// K and V of every layer for `rows` sequences of `tokens` positions.
pub fn kv_cache_bytes(cfg: &ModelConfig, dtype: DType, rows: usize, tokens: usize) -> u64 {
    let per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim;
    (per_token * rows * tokens) as u64 * dtype_bytes(dtype)
}

/// Peak activations of one layer's forward at `rows × tokens`: the residual stream and norms,
/// q|k|v, the attention scores and probabilities (no fused attention), the gate|up product.
fn layer_activation_bytes(cfg: &ModelConfig, dtype: DType, rows: usize, tokens: usize) -> u64 {
    let n = (rows * tokens) as u64;
    let h = cfg.hidden_size as u64;
    let qkv = ((cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim) as u64;
    let scores = (rows * cfg.num_attention_heads * tokens * tokens) as u64;
    let mlp = 3 * cfg.intermediate_size as u64;
    (n * (4 * h + qkv + mlp) + 2 * scores) * dtype_bytes(dtype)
}

/// f32 logits of `positions` positions (the LM head's output and its softmax).
fn logits_bytes(cfg: &ModelConfig, positions: usize) -> u64 {
    2 * (positions * cfg.vocab_size) as u64 * 4
}

/// Inference: `models` copies of weights of this shape, a forward at `rows × tokens`, logits of
/// `logit_positions`, a KV cache of `kv_tokens` per row, and the hidden state after every layer
/// when `keep_hidden_states` (scoring).
#[allow(clippy::too_many_arguments)]
pub fn inference(
    stage: &str,
    cfg: &ModelConfig,
    dtype: DType,
    models: usize,
    rows: usize,
    tokens: usize,
    logit_positions: usize,
    kv_tokens: usize,
    keep_hidden_states: bool,
) -> MemoryNeed {
    let hidden = if keep_hidden_states {
        ((cfg.num_hidden_layers + 1) * rows * tokens * cfg.hidden_size) as u64 * dtype_bytes(dtype)
    } else {
        0
    };
    MemoryNeed {
        stage: stage.into(),
        weights: models as u64 * weights_bytes(cfg, dtype),
        kv_cache: models as u64 * kv_cache_bytes(cfg, dtype, rows, kv_tokens),
        activations: layer_activation_bytes(cfg, dtype, rows, tokens)
            + logits_bytes(cfg, logit_positions)
            + hidden,
        training_state: 0,
    }
}

/// Eval with a model window of `window` tokens. Log-likelihood scoring runs at most the
/// scorer's `max_batch_tokens` padded tokens per forward pass (a longer sequence, up to the
/// window, runs alone), the LM head on chunks of [`LOGIT_CHUNK`] positions, and, with the
/// prefix cache, a KV cache of at most its byte budget. Generation (`generating`: a task such
/// as GSM8K) decodes `rows` prompts of up to the window together, with a KV cache for the
/// prompt and `new_tokens`. The need is the larger of the two.
///
/// [`LOGIT_CHUNK`]: crate::eval::scorer::LOGIT_CHUNK
#[allow(clippy::too_many_arguments)]
pub fn eval(
    cfg: &ModelConfig,
    dtype: DType,
    rows: usize,
    window: usize,
    prefix_cache: bool,
    generating: bool,
    new_tokens: usize,
) -> MemoryNeed {
    use crate::eval::scorer::{ScorerOptions, LOGIT_CHUNK};
    let opts = ScorerOptions::new(rows, window);
    let pass = opts.max_batch_tokens.max(window);
    let mut scoring = inference(
        "eval",
        cfg,
        dtype,
        1,
        1,
        pass,
        LOGIT_CHUNK.min(pass),
        0,
        false,
    );
    if prefix_cache {
        scoring.kv_cache = opts.kv_budget_bytes as u64;
    }
    if !generating {
        return scoring;
    }
    let generation = inference(
        "eval",
        cfg,
        dtype,
        1,
        rows,
        window,
        rows,
        window + new_tokens,
        false,
    );
    if generation.total() > scoring.total() {
        generation
    } else {
        scoring
    }
}

/// LoRA training on `rows × tokens` per micro-batch: the frozen base in `dtype`, an optional
/// teacher of the same shape, the activations kept for the backward pass, the head's chunked
/// f32 logits, and f32 LoRA weights with gradients and two AdamW moments. With
/// `checkpoint_layers` (the device-generic path) only every layer's input is kept and one
/// layer is recomputed at a time; without, every layer's activations are kept.
#[allow(clippy::too_many_arguments)]
pub fn lora_training(
    cfg: &ModelConfig,
    dtype: DType,
    rows: usize,
    tokens: usize,
    lora_parameters: u64,
    teacher: Option<&ModelConfig>,
    logit_chunk: usize,
    checkpoint_layers: bool,
) -> MemoryNeed {
    let teacher_weights = teacher.map_or(0, |t| weights_bytes(t, dtype));
    let layers = cfg.num_hidden_layers as u64;
    let one_layer = layer_activation_bytes(cfg, dtype, rows, tokens);
    let kept = if checkpoint_layers {
        let inputs = layers * (rows * tokens * cfg.hidden_size) as u64 * dtype_bytes(dtype);
        // The recomputed layer's forward and its backward.
        inputs + 2 * one_layer
    } else {
        layers * one_layer
    };
    MemoryNeed {
        stage: "finetune".into(),
        weights: weights_bytes(cfg, dtype) + teacher_weights,
        kv_cache: 0,
        activations: kept + 2 * logits_bytes(cfg, logit_chunk.min(rows * tokens)),
        training_state: lora_parameters * 4 * 4,
    }
}

/// Memory the device can still give: free GPU memory, or the host's `MemAvailable`.
pub fn available_bytes(device: &Device) -> Option<u64> {
    if device.is_cuda() {
        let used = crate::device::device_used_bytes(device)?;
        let total = crate::device::describe(device).total_bytes?;
        return Some(total.saturating_sub(used));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses `need` when it exceeds what `device` has available (less the head-room); passes
/// when the device cannot say.
pub fn check_fits(need: &MemoryNeed, device: &Device) -> Result<(), DoesNotFit> {
    let Some(available) = available_bytes(device) else {
        return Ok(());
    };
    check_against(need, available, &crate::device::describe(device).device)
}

/// [`check_fits`] against a given number of available bytes.
pub fn check_against(need: &MemoryNeed, available: u64, device: &str) -> Result<(), DoesNotFit> {
    let usable = (available as f64 * (1.0 - SLACK_FRACTION)) as u64;
    tracing::info!(stage = %need.stage, device, need = %need, available_gib = gib(available), "memory estimate");
    if need.total() > usable {
        return Err(DoesNotFit {
            need: need.clone(),
            device: device.into(),
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_8b() -> ModelConfig {
        ModelConfig::from_json(
            serde_json::json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
                "tie_word_embeddings": false
            }),
            "test",
        )
        .expect("config")
    }

    #[test]
    fn eight_b_weights_and_kv_cache() {
        let c = llama_8b();
        assert_eq!(c.parameter_count(), 8_030_261_248);
        // 16.06 GB of bf16 weights; 128 KiB of KV cache per token in bf16.
        assert_eq!(weights_bytes(&c, DType::BF16), 16_060_522_496);
        assert_eq!(kv_cache_bytes(&c, DType::BF16, 1, 1), 131_072);
    }

    #[test]
    fn a_quantized_base_counts_blocks_for_the_projections_and_one_dense_layer() {
        use crate::model::quant::BaseQuantization;
        let c = llama_8b();
        // Per layer: q|k|v 4096 × 6144, o 4096 × 4096, gate|up|down 3 × 4096 × 14336.
        let per_layer: u64 = 4096 * 6144 + 4096 * 4096 + 3 * 4096 * 14336;
        let projections = 32 * per_layer;
        assert_eq!(projections, 6_979_321_856);
        let rest = 8_030_261_248 - projections;
        // NF4: 4.5 bits per weight (4-bit codes, an f32 absmax per 64).
        assert_eq!(
            quantized_weights_bytes(&c, DType::F32, BaseQuantization::Nf4),
            rest * 4 + projections * 9 / 16 + per_layer * 4
        );
        // Q8_0: 34 bytes per 32 weights.
        assert_eq!(
            quantized_weights_bytes(&c, DType::BF16, BaseQuantization::Q8_0),
            rest * 2 + projections * 34 / 32 + per_layer * 4
        );
    }

    #[test]
    fn refuses_what_does_not_fit_with_needed_and_available() {
        let c = llama_8b();
        let need = inference("eval", &c, DType::F32, 1, 8, 512, 8 * 512, 0, false);
        let e = check_against(&need, 24 << 30, "cpu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("eval needs ≈ 3"), "{e}");
        assert!(e.contains("24.0 GiB are available"), "{e}");
        let need = inference("eval", &c, DType::BF16, 1, 8, 512, 8 * 512, 0, false);
        assert!(check_against(&need, 80 << 30, "cuda:0").is_ok());
    }

    #[test]
    fn eval_scoring_is_bounded_by_the_scorers_pass_not_by_the_batch() {
        let c = llama_8b();
        // The scorer packs at most 2048 padded tokens per pass: 16 rows cost what 1 row costs.
        let one = eval(&c, DType::BF16, 1, 2048, false, false, 256);
        let sixteen = eval(&c, DType::BF16, 16, 2048, false, false, 256);
        assert_eq!(one, sixteen);
        assert_eq!(one.kv_cache, 0);
        // The prefix cache adds its budget.
        let cached = eval(&c, DType::BF16, 16, 2048, true, false, 256);
        assert_eq!(cached.kv_cache, 1 << 30);
        // Generation decodes the rows together: it grows with them and wins when larger.
        let gen4 = eval(&c, DType::BF16, 4, 2048, true, true, 256);
        let gen16 = eval(&c, DType::BF16, 16, 2048, true, true, 256);
        assert!(gen16.total() > gen4.total() && gen16.total() > cached.total());
        assert_eq!(
            gen16.kv_cache,
            kv_cache_bytes(&c, DType::BF16, 16, 2048 + 256)
        );
        // A window longer than the pass runs alone and sets the pass.
        let long = eval(&c, DType::BF16, 16, 8192, false, false, 256);
        assert!(long.activations > one.activations);
    }
}
