//! GGUF → HF: config.json from the metadata, HF tensor names, and llama.cpp's rotary
//! permutation of q/k undone (HF row `h*D + p*D/2 + j` = GGUF row `h*D + 2j + p`).

use super::dequant::dequantize;
use super::reader::{GgufFile, MetaValue};
use crate::model::error::ModelError;
use serde_json::{json, Value};

/// The HF name of a GGUF tensor, or `None` for tensors HF does not store (e.g. `rope_freqs`).
pub fn hf_name(gguf: &str) -> Option<String> {
    let direct = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(d) = direct {
        return Some(d.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// [`unpermute_rows`] after checking that `data` is `heads * head_dim` rows of `cols` with an
/// even `head_dim` (metadata and tensor shapes of a GGUF need not agree).
fn unpermuted(
    f: &GgufFile,
    name: &str,
    data: &[f32],
    heads: usize,
    head_dim: usize,
    cols: usize,
) -> Result<Vec<f32>, ModelError> {
    let rows = heads.checked_mul(head_dim);
    if !head_dim.is_multiple_of(2) || rows.and_then(|r| r.checked_mul(cols)) != Some(data.len()) {
        return Err(f.error(format!(
            "tensor `{name}`: {} values are not {heads} heads × head_dim {head_dim} (even) × \
             {cols} columns",
            data.len()
        )));
    }
    Ok(unpermute_rows(data, heads, head_dim, cols))
}

/// Undo llama.cpp's permutation of a q or k weight `[heads * head_dim, cols]` (row-major).
/// `data` must hold exactly `heads * head_dim * cols` values and `head_dim` be even.
pub fn unpermute_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for p in 0..2 {
            for j in 0..half {
                let hf_row = h * head_dim + p * half + j;
                let gg_row = h * head_dim + 2 * j + p;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&data[gg_row * cols..(gg_row + 1) * cols]);
            }
        }
    }
    out
}

pub struct ConvertedTensor {
    pub name: String,
    /// HF shape (`[out, in]` for matrices).
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

fn meta_usize(f: &GgufFile, key: &str) -> Option<usize> {
    f.meta(key).and_then(MetaValue::as_u64).map(|v| v as usize)
}

/// HF `config.json` for the GGUF's model.
pub fn hf_config(f: &GgufFile) -> Result<Value, ModelError> {
    let arch = f
        .meta("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| f.error("missing `general.architecture`"))?;
    let (class, model_type) = match arch {
        "llama" => ("LlamaForCausalLM", "llama"),
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        other => {
            return Err(f.error(format!(
                "unknown architecture `{other}` (supported: llama, qwen2)"
            )))
        }
    };
    let need = |k: &str| {
        meta_usize(f, &format!("{arch}.{k}"))
            .ok_or_else(|| f.error(format!("missing metadata `{arch}.{k}`")))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = meta_usize(f, &format!("{arch}.attention.head_count_kv")).unwrap_or(heads);
    let layers = need("block_count")?;
    let inter = need("feed_forward_length")?;
    let ctx = need("context_length")?;
    let head_dim =
        meta_usize(f, &format!("{arch}.attention.key_length")).unwrap_or(hidden / heads.max(1));
    let eps = f
        .meta(&format!("{arch}.attention.layer_norm_rms_epsilon"))
        .and_then(MetaValue::as_f64)
        .unwrap_or(1e-5);
    let theta = f
        .meta(&format!("{arch}.rope.freq_base"))
        .and_then(MetaValue::as_f64)
        .unwrap_or(10000.0);
    let vocab = meta_usize(f, &format!("{arch}.vocab_size"))
        .or_else(|| {
            f.meta("tokenizer.ggml.tokens")
                .and_then(MetaValue::as_array)
                .map(<[MetaValue]>::len)
        })
        .or_else(|| {
            f.tensor_info("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
        })
        .ok_or_else(|| f.error("cannot determine the vocabulary size"))?;
    let tied = f.tensor_info("output.weight").is_none();
    let tok_id = |k: &str| meta_usize(f, &format!("tokenizer.ggml.{k}"));
    let mut cfg = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": ctx,
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "tie_word_embeddings": tied,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    if let Some(b) = tok_id("bos_token_id") {
        cfg["bos_token_id"] = b.into();
    }
    if let Some(e) = tok_id("eos_token_id") {
        cfg["eos_token_id"] = e.into();
    }
    if let Some(p) = tok_id("padding_token_id") {
        cfg["pad_token_id"] = p.into();
    }
    if let Some(scaling) = rope_scaling(f, arch, theta, head_dim)? {
        cfg["rope_scaling"] = scaling;
    }
    Ok(cfg)
}

/// llama3-style GGUFs carry `rope_freqs.weight` (per-frequency divisors) instead of scaling
/// metadata; recognise the standard llama3 parameters from it.
fn rope_scaling(
    f: &GgufFile,
    arch: &str,
    theta: f64,
    head_dim: usize,
) -> Result<Option<Value>, ModelError> {
    if let Some(kind) = f
        .meta(&format!("{arch}.rope.scaling.type"))
        .and_then(MetaValue::as_str)
    {
        let factor = f
            .meta(&format!("{arch}.rope.scaling.factor"))
            .and_then(MetaValue::as_f64)
            .unwrap_or(1.0);
        return Ok(match kind {
            "none" => None,
            "linear" => Some(json!({"rope_type": "linear", "factor": factor})),
            other => return Err(f.error(format!("rope scaling `{other}` is not supported"))),
        });
    }
    let Some(info) = f.tensor_info("rope_freqs.weight") else {
        return Ok(None);
    };
    let divisors = dequantize(f, info)?;
    let candidate = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    let probe = json!({"architectures": ["LlamaForCausalLM"], "hidden_size": head_dim, "intermediate_size": 1,
        "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 1, "rope_theta": theta,
        "rope_scaling": candidate.clone()});
    let cfg = crate::model::config::ModelConfig::from_json(probe, "rope probe")?;
    let scaled = crate::model::rope::inverse_frequencies(&cfg);
    let ok = divisors.len() == scaled.len()
        && divisors.iter().enumerate().all(|(i, d)| {
            let base = 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            ((base / d) - scaled[i]).abs() <= 1e-3 * scaled[i].abs()
        });
    if !ok {
        return Err(f.error(
            "`rope_freqs.weight` does not match llama3 scaling (factor 8, low 1, high 4, 8192)",
        ));
    }
    Ok(Some(candidate))
}

/// Every tensor of the GGUF under its HF name, dequantized to f32, q/k un-permuted for llama.
pub fn hf_tensors(f: &GgufFile, cfg: &Value) -> Result<Vec<ConvertedTensor>, ModelError> {
    let permute = cfg["model_type"] == "llama";
    let heads = cfg["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = cfg["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let head_dim = cfg["head_dim"].as_u64().unwrap_or(1) as usize;
    let mut out = Vec::with_capacity(f.tensors.len());
    let mut sources: std::collections::BTreeMap<String, &str> = Default::default();
    for info in &f.tensors {
        let Some(name) = hf_name(&info.name) else {
            continue;
        };
        // `blk.1.*` and `blk.01.*` are the same HF tensor; a checkpoint cannot hold it twice.
        if let Some(first) = sources.insert(name.clone(), &info.name) {
            return Err(f.error(format!(
                "tensors `{first}` and `{}` are both `{name}`",
                info.name
            )));
        }
        let mut data = dequantize(f, info)?;
        let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
        if permute && shape.len() == 2 {
            let cols = shape[1];
            if name.ends_with("self_attn.q_proj.weight") {
                data = unpermuted(f, &info.name, &data, heads, head_dim, cols)?;
            } else if name.ends_with("self_attn.k_proj.weight") {
                data = unpermuted(f, &info.name, &data, kv_heads, head_dim, cols)?;
            }
        }
        if permute
            && shape.len() == 1
            && (name.ends_with("q_proj.bias") || name.ends_with("k_proj.bias"))
        {
            let h = if name.contains("q_proj") {
                heads
            } else {
                kv_heads
            };
            data = unpermuted(f, &info.name, &data, h, head_dim, 1)?;
        }
        out.push(ConvertedTensor { name, shape, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hf() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_matches_reference_rule() {
        // 1 head, head_dim 4, 1 column: GGUF rows [a0 b0 a1 b1] → HF [a0 a1 b0 b1].
        let g = [0.0, 10.0, 1.0, 11.0];
        assert_eq!(unpermute_rows(&g, 1, 4, 1), vec![0.0, 1.0, 10.0, 11.0]);
    }
}
