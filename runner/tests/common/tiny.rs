//! A tiny random Llama in a temporary HF directory, with the reference SmolLM2 tokenizer
//! (vocab 49152), for tests that need a model but not its quality.

use pruneforge::model::safetensors_io::{encode_f32, write_safetensors, RawTensor, SaveDtype};
use std::path::Path;

#[derive(Clone, Debug)]
pub struct TinySpec {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            intermediate: 96,
            vocab: 49152,
            max_positions: 2048,
            seed: 1,
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn fill(&mut self, n: usize, bound: f32, center: f32) -> Vec<f32> {
        (0..n).map(|_| center + bound * self.next()).collect()
    }
}

/// Writes config.json, model.safetensors and the tokenizer files into `dir`.
pub fn write_tiny_model(dir: &Path, spec: &TinySpec) {
    std::fs::create_dir_all(dir).unwrap();
    let s = spec;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": s.vocab,
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "max_position_embeddings": s.max_positions,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let mut rng = Rng(s.seed);
    let mut tensors: Vec<(String, RawTensor)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, values: Vec<f32>| {
        let mut t = encode_f32(&values, SaveDtype::F32);
        t.shape = shape;
        tensors.push((name, t));
    };
    let (h, q, kv, i) = (
        s.hidden,
        s.heads * s.head_dim,
        s.kv_heads * s.head_dim,
        s.intermediate,
    );
    push(
        "model.embed_tokens.weight".into(),
        vec![s.vocab, h],
        rng.fill(s.vocab * h, 0.5, 0.0),
    );
    for l in 0..s.layers {
        let p = format!("model.layers.{l}");
        let b = |n: usize| 1.0 / (n as f32).sqrt();
        for (name, rows, cols) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            push(
                format!("{p}.{name}.weight"),
                vec![rows, cols],
                rng.fill(rows * cols, b(cols), 0.0),
            );
        }
        push(
            format!("{p}.input_layernorm.weight"),
            vec![h],
            rng.fill(h, 0.1, 1.0),
        );
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            rng.fill(h, 0.1, 1.0),
        );
    }
    push("model.norm.weight".into(), vec![h], rng.fill(h, 0.1, 1.0));
    write_safetensors(dir, &tensors, usize::MAX).unwrap();
    let tok = super::reference("tokenizer");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
}
