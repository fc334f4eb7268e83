//! GGUF: a tiny llama GGUF (every quantized type we read, a byte-level BPE tokenizer with
//! merges and a chat template in the metadata) imported as `pruneforge import` does, then the
//! imported directory loaded and run. The structured mutator edits metadata values and tensor
//! records (dims, types, offsets, names) and re-encodes the file.

use pruneforge::loader::gguf_import::import_gguf;
use pruneforge::model::gguf::MetaValue;
use pruneforge_api::fuzz::{boundary_u64, Rng, Verdict};

use super::support::{load_and_run, scratch, write};

/// One tensor record and its data.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order (`dims[0]` = columns).
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    /// Offset written instead of the computed one.
    pub offset: Option<u64>,
}

/// A GGUF file before encoding.
#[derive(Clone, Debug)]
pub struct GgufSpec {
    pub version: u32,
    pub meta: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorSpec>,
}

const ALIGN: usize = 32;

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            let ty = items.first().map_or(0, type_id);
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl GgufSpec {
    /// The file's bytes and the length of its header (metadata and tensor records).
    pub fn encode(&self) -> (Vec<u8>, usize) {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.meta.len() as u64).to_le_bytes());
        for (k, v) in &self.meta {
            put_str(&mut out, k);
            out.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.data.len()).div_ceil(ALIGN) * ALIGN;
        }
        let header = out.len();
        out.resize(header.div_ceil(ALIGN) * ALIGN, 0);
        let start = out.len();
        for (t, o) in self.tensors.iter().zip(offsets) {
            out.resize(start + o, 0);
            out.extend_from_slice(&t.data);
        }
        (out, header)
    }
}

/// Bytes per block and values per block of the types the seed uses.
fn layout(ty: u32) -> (usize, usize) {
    match ty {
        0 => (4, 1),
        1 | 30 => (2, 1),
        2 => (18, 32),
        3 => (20, 32),
        6 => (22, 32),
        7 => (24, 32),
        8 => (34, 32),
        _ => (1, 1),
    }
}

/// Plausible data: small floats, quant blocks with scale 0.01 and offset 0.
fn tensor_data(ty: u32, elems: usize, rng: &mut Rng) -> Vec<u8> {
    let (block_bytes, block_elems) = layout(ty);
    let blocks = elems / block_elems;
    let mut out = Vec::with_capacity(blocks * block_bytes);
    for _ in 0..blocks {
        let r = (rng.next_u64() % 2000) as f32 / 10_000.0 - 0.1;
        match ty {
            0 => out.extend_from_slice(&r.to_le_bytes()),
            1 => out.extend_from_slice(&half::f16::from_f32(r).to_le_bytes()),
            30 => out.extend_from_slice(&half::bf16::from_f32(r).to_le_bytes()),
            _ => {
                let mut block: Vec<u8> = (0..block_bytes).map(|_| rng.next_u64() as u8).collect();
                block[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                if matches!(ty, 3 | 7) {
                    block[2..4].copy_from_slice(&half::f16::from_f32(0.0).to_le_bytes());
                }
                out.extend_from_slice(&block);
            }
        }
    }
    out
}

const HIDDEN: u64 = 32;
const INTER: u64 = 32;
const KV_DIM: u64 = 16;

/// The seed model: 1 layer, hidden 32, 4 heads (2 kv), a 20-token BPE vocabulary.
pub fn base_spec(arch: &str) -> GgufSpec {
    let s = |v: &str| MetaValue::String(v.into());
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_end|>".into()];
    tokens.extend(
        [
            "a", "d", "e", "h", "l", "o", "r", "w", "Ġ", "1", "2", "3", "Ġw", "he", "ll", "<", ">",
            "|",
        ]
        .map(String::from),
    );
    let vocab = tokens.len() as u64;
    let mut types = vec![MetaValue::I32(1); tokens.len()];
    types[0] = MetaValue::I32(3);
    types[1] = MetaValue::I32(3);
    let a = |k: &str| format!("{arch}.{k}");
    let meta = vec![
        ("general.architecture".into(), s(arch)),
        ("general.name".into(), s("fuzz")),
        ("general.alignment".into(), MetaValue::U32(ALIGN as u32)),
        (a("context_length"), MetaValue::U32(64)),
        (a("embedding_length"), MetaValue::U32(HIDDEN as u32)),
        (a("block_count"), MetaValue::U32(1)),
        (a("feed_forward_length"), MetaValue::U32(INTER as u32)),
        (a("attention.head_count"), MetaValue::U32(4)),
        (a("attention.head_count_kv"), MetaValue::U32(2)),
        (a("attention.layer_norm_rms_epsilon"), MetaValue::F32(1e-5)),
        (a("rope.freq_base"), MetaValue::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        ("tokenizer.ggml.pre".into(), s("smollm")),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), MetaValue::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(vec![s("Ġ w"), s("h e"), s("l l")]),
        ),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(1)),
        ("tokenizer.ggml.padding_token_id".into(), MetaValue::U32(1)),
        ("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            s("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
        ),
    ];
    let mut rng = Rng::new(42);
    let mut tensor = |name: &str, dims: &[u64], ty: u32| {
        let elems = dims.iter().product::<u64>() as usize;
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
            data: tensor_data(ty, elems, &mut rng),
            offset: None,
        }
    };
    let tensors = vec![
        tensor("token_embd.weight", &[HIDDEN, vocab], 8),
        tensor("output_norm.weight", &[HIDDEN], 0),
        tensor("blk.0.attn_norm.weight", &[HIDDEN], 0),
        tensor("blk.0.ffn_norm.weight", &[HIDDEN], 1),
        tensor("blk.0.attn_q.weight", &[HIDDEN, HIDDEN], 2),
        tensor("blk.0.attn_k.weight", &[HIDDEN, KV_DIM], 3),
        tensor("blk.0.attn_v.weight", &[HIDDEN, KV_DIM], 6),
        tensor("blk.0.attn_output.weight", &[HIDDEN, HIDDEN], 7),
        tensor("blk.0.ffn_gate.weight", &[HIDDEN, INTER], 30),
        tensor("blk.0.ffn_up.weight", &[HIDDEN, INTER], 0),
        tensor("blk.0.ffn_down.weight", &[INTER, HIDDEN], 8),
    ];
    GgufSpec {
        version: 3,
        meta,
        tensors,
    }
}

/// A llama and a qwen2 GGUF (the latter with q/k/v biases and an untied `output.weight`).
pub fn seeds() -> Vec<Vec<u8>> {
    let llama = base_spec("llama");
    let mut qwen = base_spec("qwen2");
    let mut rng = Rng::new(7);
    for (name, dims) in [
        ("output.weight", vec![HIDDEN, 20]),
        ("blk.0.attn_q.bias", vec![HIDDEN]),
        ("blk.0.attn_k.bias", vec![KV_DIM]),
        ("blk.0.attn_v.bias", vec![KV_DIM]),
    ] {
        let elems = dims.iter().product::<u64>() as usize;
        qwen.tensors.push(TensorSpec {
            name: name.into(),
            dims,
            ty: 0,
            data: tensor_data(0, elems, &mut rng),
            offset: None,
        });
    }
    vec![llama.encode().0, qwen.encode().0]
}

/// Header length of the seed (position-based byte mutations favour it).
pub fn header_len() -> usize {
    base_spec("llama").encode().1
}

/// Keys the converter reads, for metadata the mutator adds.
const KEYS: [&str; 16] = [
    "llama.attention.key_length",
    "llama.vocab_size",
    "llama.rope.scaling.type",
    "llama.rope.scaling.factor",
    "llama.rope.freq_base",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.embedding_length",
    "llama.block_count",
    "general.alignment",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.model",
    "tokenizer.chat_template",
];

fn hostile_meta(rng: &mut Rng) -> MetaValue {
    let n = boundary_u64(rng);
    match rng.below(14) {
        0 => MetaValue::U32(n as u32),
        1 => MetaValue::U64(n),
        2 => MetaValue::I32(n as i32),
        3 => MetaValue::I64(n as i64),
        4 => MetaValue::U8(n as u8),
        5 => MetaValue::F32(
            *rng.pick(&[f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30, 8.0])
                .unwrap_or(&0.0),
        ),
        6 => MetaValue::F64(*rng.pick(&[f64::NAN, -1.0, 0.0, 1e300]).unwrap_or(&0.0)),
        7 => MetaValue::Bool(rng.one_in(2)),
        8 => MetaValue::String(
            rng.pick(&[
                "",
                "llama",
                "qwen2",
                "gpt2",
                "llama3",
                "linear",
                "yarn",
                "smollm",
                "llama-bpe",
                "qwen2",
                "default",
                "{{",
                "{% for %}",
            ])
            .copied()
            .unwrap_or("")
            .into(),
        ),
        9 => MetaValue::Array(Vec::new()),
        10 => MetaValue::Array(vec![MetaValue::U32(n as u32); 1 + rng.below(64)]),
        11 => MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::Bool(true)])]),
        12 => MetaValue::U32(rng.below(70) as u32),
        _ => MetaValue::String("ä…".repeat(rng.below(100))),
    }
}

const TENSOR_NAMES: [&str; 8] = [
    "rope_freqs.weight",
    "output.weight",
    "blk.1.attn_q.weight",
    "blk.0.attn_q.bias",
    "blk.0.attn_k.bias",
    "blk.18446744073709551615.attn_q.weight",
    "token_embd.weight",
    "blk.0.attn_q.weight",
];

fn mutate_spec(rng: &mut Rng, spec: &mut GgufSpec) {
    match rng.below(12) {
        0..=3 if !spec.meta.is_empty() => {
            let i = rng.below(spec.meta.len());
            spec.meta[i].1 = hostile_meta(rng);
        }
        4 => {
            let key = KEYS[rng.below(KEYS.len())].to_string();
            let value = hostile_meta(rng);
            spec.meta.push((key, value));
        }
        5 if !spec.meta.is_empty() => {
            let i = rng.below(spec.meta.len());
            spec.meta.remove(i);
        }
        6 | 7 if !spec.tensors.is_empty() => {
            let i = rng.below(spec.tensors.len());
            let t = &mut spec.tensors[i];
            match rng.below(4) {
                0 => {
                    let d = rng.below(t.dims.len().max(1));
                    if let Some(slot) = t.dims.get_mut(d) {
                        *slot = boundary_u64(rng);
                    }
                }
                1 => t.dims.reverse(),
                2 => {
                    t.dims = (0..rng.below(6))
                        .map(|_| 1 + rng.below(64) as u64)
                        .collect()
                }
                _ => t.dims.push(1 + rng.below(4) as u64),
            }
        }
        8 if !spec.tensors.is_empty() => {
            let i = rng.below(spec.tensors.len());
            spec.tensors[i].ty = *rng
                .pick(&[0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 30, 4, 99])
                .unwrap_or(&0);
        }
        9 if !spec.tensors.is_empty() => {
            let i = rng.below(spec.tensors.len());
            spec.tensors[i].offset = Some(boundary_u64(rng));
        }
        10 if !spec.tensors.is_empty() => {
            let i = rng.below(spec.tensors.len());
            let mut t = spec.tensors[i].clone();
            t.name = TENSOR_NAMES[rng.below(TENSOR_NAMES.len())].into();
            if rng.one_in(2) {
                spec.tensors[i] = t;
            } else {
                spec.tensors.push(t);
            }
        }
        _ => spec.version = *rng.pick(&[1, 2, 3, 4, u32::MAX]).unwrap_or(&3),
    }
}

/// A seed with one to three structural edits, re-encoded.
pub fn structured_mutant(rng: &mut Rng, _input: &[u8]) -> Option<Vec<u8>> {
    let mut spec = base_spec(if rng.one_in(4) { "qwen2" } else { "llama" });
    for _ in 0..1 + rng.below(3) {
        mutate_spec(rng, &mut spec);
    }
    Some(spec.encode().0)
}

/// `pruneforge import` of the file, then the imported model loaded and run.
pub fn check(input: &[u8]) -> Verdict {
    let dir = scratch("gguf");
    let path = dir.join("model.gguf");
    write(&path, input);
    let out = dir.join("hf");
    let _ = std::fs::remove_dir_all(&out);
    match import_gguf(&path, &out) {
        Ok(_) => load_and_run(&out),
        Err(e) => Verdict::Rejected(e.to_string()),
    }
}
