//! A tiny random-weight Llama in a temporary HF directory (config.json, model.safetensors,
//! a byte-level BPE tokenizer with 256 byte tokens + 2 specials), for fast tests of stages;
//! and [`write_tiny_model`], a tiny model with the embedded model's tokenizer (chat template).

use pruneforge::generate::SplitMix64;
use pruneforge::model::safetensors_io::{encode_f32, write_safetensors, SaveDtype};
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

// --- A tiny model with the embedded SmolLM2 tokenizer (vocab 49152, chat template). ---

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
