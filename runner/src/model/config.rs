//! Llama-family model configuration, read from and written back to HF `config.json`.
//!
//! The raw JSON is kept next to the parsed fields so that saving a model (after pruning,
//! merging, fine-tuning) preserves every key we do not interpret.

use super::error::ModelError;
use serde_json::{Map, Value};
use std::path::Path;

/// Architectures we implement. Llama covers Llama 2/3/3.1 (incl. llama3 RoPE scaling),
/// SmolLM2 and Mistral-style dense models; Qwen2 adds biases on q/k/v.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

impl Architecture {
    fn from_names(model_type: Option<&str>, architectures: &[String]) -> Option<Self> {
        let by_arch = architectures.iter().find_map(|a| match a.as_str() {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            _ => None,
        });
        by_arch.or(match model_type {
            Some("llama") => Some(Self::Llama),
            Some("mistral") => Some(Self::Mistral),
            Some("qwen2") => Some(Self::Qwen2),
            _ => None,
        })
    }

    pub fn hf_class(&self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }
}

/// RoPE frequency scaling variants.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Llama 3.1 "llama3" scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Position interpolation: positions divided by `factor`.
    Linear {
        factor: f64,
    },
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections (Qwen2, or Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on o_proj (Llama `attention_bias`).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// The JSON this config was read from; unknown keys are written back unchanged.
    pub raw: Map<String, Value>,
}

fn get_usize(m: &Map<String, Value>, key: &str) -> Option<usize> {
    m.get(key).and_then(Value::as_u64).map(|v| v as usize)
}

fn get_f64(m: &Map<String, Value>, key: &str) -> Option<f64> {
    m.get(key).and_then(Value::as_f64)
}

fn get_bool(m: &Map<String, Value>, key: &str) -> Option<bool> {
    m.get(key).and_then(Value::as_bool)
}

/// Whether every size derived from `[hidden, heads, kv_heads, head_dim, intermediate, vocab,
/// layers]` (projection widths, parameter and FLOP counts) fits in 64 bits: the bound is 32
/// squared widths per layer plus 4 per embedding entry, above each of those sums.
fn sizes_fit([h, heads, kv_heads, head_dim, inter, vocab, layers]: [u64; 7]) -> bool {
    let bound = || -> Option<u64> {
        let q = heads.checked_mul(head_dim)?;
        let kv = kv_heads.checked_mul(head_dim)?;
        let width = q
            .checked_add(kv)?
            .checked_add(inter)?
            .checked_add(h)?
            .checked_add(1)?;
        let per_layer = width.checked_mul(width)?.checked_mul(32)?;
        let embeddings = vocab.checked_mul(h)?.checked_mul(4)?;
        per_layer
            .checked_mul(layers.max(1))?
            .checked_add(embeddings)
    };
    bound().is_some_and(|b| usize::try_from(b).is_ok())
}

impl ModelConfig {
    /// Reads `config.json`; `file` is only used in error messages.
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            file: path.display().to_string(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(value, &path.display().to_string())
    }

    pub fn from_json(value: Value, file: &str) -> Result<Self, ModelError> {
        let err = |reason: String| ModelError::Config {
            file: file.to_string(),
            reason,
        };
        let Value::Object(raw) = value else {
            return Err(err("expected a JSON object".into()));
        };
        let model_type = raw.get("model_type").and_then(Value::as_str);
        let architectures: Vec<String> = raw
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let architecture =
            Architecture::from_names(model_type, &architectures).ok_or_else(|| {
                err(format!(
                    "unknown architecture (model_type {:?}, architectures {:?}); supported: \
                 LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
                    model_type.unwrap_or("<missing>"),
                    architectures
                ))
            })?;
        let need = |key: &str| {
            get_usize(&raw, key).ok_or_else(|| err(format!("missing or non-integer `{key}`")))
        };
        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let num_hidden_layers = need("num_hidden_layers")?;
        let intermediate_size = need("intermediate_size")?;
        let vocab_size = need("vocab_size")?;
        let num_key_value_heads =
            get_usize(&raw, "num_key_value_heads").unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            return Err(err(format!(
                "num_attention_heads ({num_attention_heads}) must be a positive multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match get_usize(&raw, "head_dim") {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(err(format!(
                        "hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads} and no head_dim is given"
                    )));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(err(format!("head_dim {head_dim} must be even for RoPE")));
        }
        let dims = [
            hidden_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            num_hidden_layers,
        ];
        if !sizes_fit(dims.map(|d| d as u64)) {
            return Err(err(format!(
                "the model dimensions are too large (hidden_size {hidden_size}, heads \
                 {num_attention_heads}/{num_key_value_heads}, head_dim {head_dim}, \
                 intermediate_size {intermediate_size}, vocab_size {vocab_size}, \
                 num_hidden_layers {num_hidden_layers})"
            )));
        }
        // transformers >= 5 may nest rope settings under `rope_parameters`.
        let rope_params = raw.get("rope_parameters").and_then(Value::as_object);
        let rope_theta = get_f64(&raw, "rope_theta")
            .or_else(|| rope_params.and_then(|p| get_f64(p, "rope_theta")))
            .unwrap_or(10_000.0);
        let scaling_obj = raw
            .get("rope_scaling")
            .and_then(Value::as_object)
            .or(rope_params);
        let rope_scaling = match scaling_obj {
            None => RopeScaling::None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match kind {
                    "default" => RopeScaling::None,
                    "llama3" => RopeScaling::Llama3 {
                        factor: get_f64(s, "factor").ok_or_else(|| err("rope_scaling.factor missing".into()))?,
                        low_freq_factor: get_f64(s, "low_freq_factor").unwrap_or(1.0),
                        high_freq_factor: get_f64(s, "high_freq_factor").unwrap_or(4.0),
                        original_max_position_embeddings: get_usize(s, "original_max_position_embeddings")
                            .unwrap_or(8192),
                    },
                    "linear" => RopeScaling::Linear {
                        factor: get_f64(s, "factor").ok_or_else(|| err("rope_scaling.factor missing".into()))?,
                    },
                    other => {
                        return Err(err(format!(
                            "rope scaling type `{other}` is not supported (supported: default, llama3, linear)"
                        )))
                    }
                }
            }
        };
        let attention_bias = get_bool(&raw, "attention_bias").unwrap_or(false);
        let (qkv_bias, o_bias) = match architecture {
            Architecture::Qwen2 => (true, false),
            _ => (attention_bias, attention_bias),
        };
        let eos_token_ids = match raw.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_u64)
                .map(|v| v as u32)
                .collect(),
            _ => vec![],
        };
        Ok(Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: get_f64(&raw, "rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: get_usize(&raw, "max_position_embeddings").unwrap_or(4096),
            tie_word_embeddings: get_bool(&raw, "tie_word_embeddings").unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: get_bool(&raw, "mlp_bias").unwrap_or(false),
            bos_token_id: get_usize(&raw, "bos_token_id").map(|v| v as u32),
            eos_token_ids,
            raw,
        })
    }

    /// The JSON to write as `config.json`: the original keys with our interpreted fields
    /// written back (so a pruned model's `num_hidden_layers` is updated).
    pub fn to_json(&self) -> Value {
        let mut m = self.raw.clone();
        m.insert("num_hidden_layers".into(), self.num_hidden_layers.into());
        m.insert("hidden_size".into(), self.hidden_size.into());
        m.insert("intermediate_size".into(), self.intermediate_size.into());
        m.insert(
            "num_attention_heads".into(),
            self.num_attention_heads.into(),
        );
        m.insert(
            "num_key_value_heads".into(),
            self.num_key_value_heads.into(),
        );
        m.insert("vocab_size".into(), self.vocab_size.into());
        // Width pruning can leave `hidden_size / num_attention_heads != head_dim`.
        let derived = (self.num_attention_heads > 0
            && self.hidden_size.is_multiple_of(self.num_attention_heads))
        .then(|| self.hidden_size / self.num_attention_heads);
        if m.contains_key("head_dim") || derived != Some(self.head_dim) {
            m.insert("head_dim".into(), self.head_dim.into());
        }
        m.insert(
            "tie_word_embeddings".into(),
            self.tie_word_embeddings.into(),
        );
        m.entry("model_type")
            .or_insert_with(|| self.architecture.model_type().into());
        m.entry("architectures")
            .or_insert_with(|| Value::Array(vec![self.architecture.hf_class().into()]));
        // Per-layer lists (e.g. `layer_types` in newer configs) must follow the layer count.
        if let Some(Value::Array(types)) = m.get_mut("layer_types") {
            types.truncate(self.num_hidden_layers);
        }
        Value::Object(m)
    }

    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Parameter count of the model (embeddings counted once when tied).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let per_layer = self.layer_parameter_count();
        let emb = self.vocab_size as u64 * h;
        let head = if self.tie_word_embeddings { 0 } else { emb };
        emb + head + h + per_layer * self.num_hidden_layers as u64
    }

    pub fn layer_parameter_count(&self) -> u64 {
        let h = self.hidden_size as u64;
        let q = self.q_dim() as u64;
        let kv = self.kv_dim() as u64;
        let i = self.intermediate_size as u64;
        let attn = h * q + 2 * h * kv + q * h;
        let attn_bias =
            if self.qkv_bias { q + 2 * kv } else { 0 } + if self.o_bias { h } else { 0 };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        attn + attn_bias + mlp + 2 * h
    }

    /// Forward FLOPs per token (2 × multiply-adds of the matmuls, incl. LM head), attention
    /// scores over `context` previous tokens included.
    pub fn flops_per_token(&self, context: usize) -> u64 {
        let h = self.hidden_size as u64;
        let q = self.q_dim() as u64;
        let kv = self.kv_dim() as u64;
        let i = self.intermediate_size as u64;
        let linear = h * q + 2 * h * kv + q * h + 3 * h * i;
        let attn = 2 * q * context as u64;
        let per_layer = 2 * (linear + attn);
        per_layer * self.num_hidden_layers as u64 + 2 * h * self.vocab_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smol() -> Value {
        json!({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
               "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
               "num_key_value_heads":3,"vocab_size":49152,"rms_norm_eps":1e-5,"rope_theta":100000.0,
               "tie_word_embeddings":true,"max_position_embeddings":8192,"eos_token_id":2})
    }

    #[test]
    fn parses_smollm2_and_counts_parameters() {
        let c = ModelConfig::from_json(smol(), "config.json").unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.num_kv_groups(), 3);
        // The reference README gives 134,515,008 parameters for the full model.
        assert_eq!(c.parameter_count(), 134_515_008);
        let mut p = c.clone();
        p.num_hidden_layers = 24;
        assert_eq!(p.parameter_count(), 113_274_432);
    }

    #[test]
    fn unknown_architecture_is_a_clear_error() {
        let mut v = smol();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        v["model_type"] = json!("gpt2");
        let e = ModelConfig::from_json(v, "x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x/config.json") && e.contains("unknown architecture"),
            "{e}"
        );
    }

    #[test]
    fn llama3_rope_scaling_and_qwen2_bias() {
        let mut v = smol();
        v["rope_scaling"] = json!({"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192});
        let c = ModelConfig::from_json(v, "c").unwrap();
        assert!(matches!(c.rope_scaling, RopeScaling::Llama3 { .. }));
        let mut q = smol();
        q["architectures"] = json!(["Qwen2ForCausalLM"]);
        let c = ModelConfig::from_json(q, "c").unwrap();
        assert!(c.qkv_bias && !c.o_bias);
    }

    #[test]
    fn overflowing_dimensions_are_a_clear_error() {
        for (key, value) in [
            ("head_dim", json!(1u64 << 62)),
            ("num_hidden_layers", json!(u64::MAX)),
            ("vocab_size", json!(1u64 << 61)),
        ] {
            let mut v = smol();
            v[key] = value;
            let e = ModelConfig::from_json(v, "c").unwrap_err().to_string();
            assert!(e.contains("too large"), "{key}: {e}");
        }
    }

    #[test]
    fn to_json_updates_layer_count() {
        let mut c = ModelConfig::from_json(smol(), "c").unwrap();
        c.num_hidden_layers = 24;
        assert_eq!(c.to_json()["num_hidden_layers"], 24);
    }
}
