//! A tiny random-weight Llama in a temporary HF directory (config.json, model.safetensors,
//! a byte-level BPE tokenizer with 256 byte tokens + 2 specials), for fast tests of stages;
//! and [`write_tiny_model`], a tiny model with the embedded model's tokenizer (chat template).

use pruneforge::model::safetensors_io::{encode_f32, write_safetensors, RawTensor, SaveDtype};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Shape and quirks of the tiny model.
#[derive(Debug, Clone)]
pub struct Tiny {
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub seed: u64,
    /// All-zero embeddings: every hidden state is the zero vector.
    pub zero_embeddings: bool,
    /// A NaN in this layer's down projection.
    pub nan_layer: Option<usize>,
}

impl Default for Tiny {
    fn default() -> Self {
        Self {
            layers: 4,
            hidden: 32,
            intermediate: 64,
            heads: 4,
            kv_heads: 2,
            vocab: 300,
            seed: 7,
            zero_embeddings: false,
            nan_layer: None,
        }
    }
}

/// GPT-2's byte → printable char mapping (byte-level BPE alphabet).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec![' '; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap();
    }
    out
}

/// tokenizer.json: one token per byte (ids 0..255), `<|endoftext|>` = 256, `<|im_end|>` = 257.
pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = byte_chars()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(256, "<|endoftext|>"), special(257, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    })
}

struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

impl Tiny {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Writes the model into `dir` (created) and returns it.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let config = json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": self.hidden, "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "vocab_size": self.vocab,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 512,
            "tie_word_embeddings": true, "bos_token_id": 256, "eos_token_id": 257,
            "torch_dtype": "float32"
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            serde_json::to_vec(&tokenizer_json()).unwrap(),
        )
        .unwrap();
        let tok_cfg = json!({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>",
                             "pad_token": "<|im_end|>", "add_bos_token": false});
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_vec_pretty(&tok_cfg).unwrap(),
        )
        .unwrap();
        let mut rng = Rng(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut tensors = Vec::new();
        let mut add = |name: String, shape: Vec<usize>, values: Vec<f32>| {
            let mut raw = encode_f32(&values, SaveDtype::F32);
            raw.shape = shape;
            tensors.push((name, raw));
        };
        let random = |rows: usize, cols: usize, rng: &mut Rng| -> Vec<f32> {
            let scale = 1.0 / (cols as f32).sqrt();
            (0..rows * cols).map(|_| rng.next() * scale * 1.7).collect()
        };
        let (h, i) = (self.hidden, self.intermediate);
        let (q, kv) = (
            self.heads * self.head_dim(),
            self.kv_heads * self.head_dim(),
        );
        let embed = if self.zero_embeddings {
            vec![0.0; self.vocab * h]
        } else {
            random(self.vocab, h, &mut rng)
        };
        add(
            "model.embed_tokens.weight".into(),
            vec![self.vocab, h],
            embed,
        );
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            add(format!("{p}.input_layernorm.weight"), vec![h], vec![1.0; h]);
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                vec![1.0; h],
            );
            for (name, rows, cols) in [
                ("self_attn.q_proj", q, h),
                ("self_attn.k_proj", kv, h),
                ("self_attn.v_proj", kv, h),
                ("self_attn.o_proj", h, q),
                ("mlp.gate_proj", i, h),
                ("mlp.up_proj", i, h),
                ("mlp.down_proj", h, i),
            ] {
                let mut w = random(rows, cols, &mut rng);
                if self.nan_layer == Some(l) && name == "mlp.down_proj" {
                    w[0] = f32::NAN;
                }
                add(format!("{p}.{name}.weight"), vec![rows, cols], w);
            }
        }
        add("model.norm.weight".into(), vec![h], vec![1.0; h]);
        write_safetensors(dir, &tensors, usize::MAX).unwrap();
        dir.to_path_buf()
    }
}

// --- A tiny model with the reference SmolLM2 tokenizer (vocab 49152, chat template). ---

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

struct SpecRng(u64);
impl SpecRng {
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
    let mut rng = SpecRng(s.seed);
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
