//! A tiny random-weight Llama (embedded tokenizer, small dims) written to a temp dir, for
//! testing stage mechanics quickly.

use pruneforge::generate::SplitMix64;
use pruneforge::model::safetensors_io::{encode_f32, write_safetensors, SaveDtype};
use std::path::Path;

pub struct TinySpec {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            layers: 4,
            hidden: 64,
            intermediate: 128,
            heads: 4,
            kv_heads: 2,
            seed: 1,
        }
    }
}

/// Writes the tiny model into `dir` (created), with the embedded model's tokenizer files.
pub fn write_tiny_model(dir: &Path, spec: &TinySpec) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = 49152;
    let head_dim = spec.hidden / spec.heads;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": spec.hidden, "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads, "head_dim": head_dim, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": true, "max_position_embeddings": 2048,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let mut rng = SplitMix64::new(spec.seed);
    let mut rand = |n: usize, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) as f32) * scale)
            .collect()
    };
    let h = spec.hidden;
    let q = spec.heads * head_dim;
    let kv = spec.kv_heads * head_dim;
    let i = spec.intermediate;
    let mut tensors = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        let mut t = encode_f32(&data, SaveDtype::F32);
        t.shape = shape;
        tensors.push((name, t));
    };
    push(
        "model.embed_tokens.weight".into(),
        vec![vocab, h],
        rand(vocab * h, 0.5),
    );
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        push(format!("{p}.input_layernorm.weight"), vec![h], vec![1.0; h]);
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            vec![1.0; h],
        );
        let s = 1.0 / (h as f32).sqrt();
        push(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q, h],
            rand(q * h, s),
        );
        push(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv, h],
            rand(kv * h, s),
        );
        push(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv, h],
            rand(kv * h, s),
        );
        push(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, q],
            rand(h * q, s),
        );
        push(
            format!("{p}.mlp.gate_proj.weight"),
            vec![i, h],
            rand(i * h, s),
        );
        push(
            format!("{p}.mlp.up_proj.weight"),
            vec![i, h],
            rand(i * h, s),
        );
        push(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, i],
            rand(h * i, 1.0 / (i as f32).sqrt()),
        );
    }
    push("model.norm.weight".into(), vec![h], vec![1.0; h]);
    write_safetensors(dir, &tensors, usize::MAX).unwrap();
    let src = super::embedded_dir();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
}
