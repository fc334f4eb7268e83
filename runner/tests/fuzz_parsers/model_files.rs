//! HF model directories: `model.safetensors` (header, dtypes, shapes, offsets), the shard
//! index, and `config.json`, each loaded as every stage loads a model and run. The other files
//! of the directory come from a tiny valid model.

use pruneforge::model::safetensors_io::SafetensorsWeights;
use pruneforge_api::fuzz::{boundary_u64, hostile_value, mutate_json, Rng, Verdict};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::common::tiny::Tiny;
use super::support::{load_and_run, scratch, write};

const SHARD: &str = "model-00001-of-00001.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The files of a tiny valid model (1 layer, hidden 16, 260 tokens).
fn tiny_files() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let tiny = Tiny {
            layers: 1,
            hidden: 16,
            intermediate: 16,
            heads: 2,
            kv_heads: 1,
            vocab: 260,
            ..Tiny::default()
        };
        let dir = tiny.write(&tmp.path().join("m"));
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors",
        ]
        .iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(name)).expect("tiny model file");
            (name.to_string(), bytes)
        })
        .collect()
    })
}

fn tiny_file(name: &str) -> &'static [u8] {
    tiny_files()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_default()
}

/// A scratch model directory holding the tiny model's files except `skip`.
fn model_dir(name: &str, skip: &[&str]) -> PathBuf {
    let dir = scratch(name);
    for (file, bytes) in tiny_files() {
        if !skip.contains(&file.as_str()) {
            write(&dir.join(file), bytes);
        }
    }
    dir
}

/// Selector 0: `model.safetensors` itself; 1: a shard index over one shard.
pub fn safetensors_seeds() -> Vec<Vec<u8>> {
    let st = tiny_file("model.safetensors");
    let (_, header) = split_safetensors(st).expect("tiny safetensors");
    let names: Vec<String> = header
        .as_object()
        .map(|o| o.keys().filter(|k| *k != "__metadata__").cloned().collect())
        .unwrap_or_default();
    let map: Map<String, Value> = names.into_iter().map(|n| (n, json!(SHARD))).collect();
    let index = json!({"metadata": {"total_size": st.len()}, "weight_map": map});
    let mut single = vec![0u8];
    single.extend_from_slice(st);
    let mut sharded = vec![1u8];
    sharded.extend(serde_json::to_vec(&index).expect("index JSON"));
    vec![single, sharded]
}

/// `(data after the header, header JSON)` of a safetensors file.
pub fn split_safetensors(bytes: &[u8]) -> Option<(&[u8], Value)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let value = serde_json::from_slice(header).ok()?;
    Some((&bytes[8 + n..], value))
}

const DTYPES: [&str; 16] = [
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U32", "U64", "BOOL", "F8_E4M3",
    "F8_E5M2", "F4", "F6_E2M3",
];

/// Structure-aware safetensors mutation: a header entry's dtype, shape or offsets replaced,
/// entries added or renamed, the header length or the data cut or grown.
pub fn mutate_safetensors(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let (data, mut header) = split_safetensors(bytes)?;
    let donor = header.clone();
    let names: Vec<String> = header.as_object()?.keys().cloned().collect();
    let name = rng.pick(&names)?.clone();
    let obj = header.as_object_mut()?;
    let entry = obj.get_mut(&name).and_then(Value::as_object_mut);
    match (rng.below(8), entry) {
        (2, Some(e)) => {
            e.insert("dtype".into(), json!(DTYPES[rng.below(DTYPES.len())]));
        }
        (3, Some(e)) => {
            let dims: Vec<Value> = (0..rng.below(5))
                .map(|_| {
                    if rng.one_in(2) {
                        json!(boundary_u64(rng))
                    } else {
                        json!(rng.below(40))
                    }
                })
                .collect();
            e.insert("shape".into(), Value::Array(dims));
        }
        (4, Some(e)) => {
            let offset = |i: usize| {
                e.get("data_offsets")
                    .and_then(|o| o.get(i))
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            };
            let (a, b) = (offset(0), offset(1));
            let offsets = match rng.below(4) {
                0 => json!([b, a]),
                1 => json!([a, boundary_u64(rng)]),
                2 => json!([boundary_u64(rng), b]),
                _ => json!([a, a]),
            };
            e.insert("data_offsets".into(), offsets);
        }
        (5, Some(e)) => {
            let copy = Value::Object(e.clone());
            let new = *rng
                .pick(&[
                    "lm_head.weight",
                    "model.layers.1.self_attn.q_proj.weight",
                    "model.layers.0.self_attn.q_proj.bias",
                    "model.norm.weight",
                    "",
                ])
                .unwrap_or(&"x");
            obj.insert(new.to_string(), copy);
        }
        (6, _) => {
            obj.remove(&name);
        }
        (7, _) => {
            obj.insert("__metadata__".into(), hostile_value(rng));
        }
        _ => mutate_json(rng, &mut header, &donor),
    }
    let header = serde_json::to_vec(&header).ok()?;
    let len = if rng.one_in(10) {
        boundary_u64(rng)
    } else {
        header.len() as u64
    };
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    match rng.below(10) {
        0 => out.extend_from_slice(&data[..rng.below(data.len() + 1)]),
        1 => {
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0u8, 1 + rng.below(256)));
        }
        _ => out.extend_from_slice(data),
    }
    Some(out)
}

pub fn safetensors_mutant(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let (&selector, body) = input.split_first()?;
    if selector != 0 {
        return None;
    }
    let mut out = vec![0];
    out.extend(mutate_safetensors(rng, body)?);
    Some(out)
}

/// Every tensor read as the prune and merge stages stream them.
fn read_all_tensors(dir: &Path) -> Result<(), String> {
    let w = SafetensorsWeights::open_dir(dir, candle_core::DType::F32, &candle_core::Device::Cpu)
        .map_err(|e| e.to_string())?;
    for name in w.names() {
        let _ = w.shape(&name);
        let _ = w.stored_dtype(&name);
        let _ = w.file_of(&name);
        w.load_f32(&name).map_err(|e| e.to_string())?;
    }
    Ok(())
}

pub fn check_safetensors(input: &[u8]) -> Verdict {
    let Some((&selector, body)) = input.split_first() else {
        return Verdict::Rejected("empty".into());
    };
    let dir = if selector % 2 == 0 {
        let dir = model_dir("st", &["model.safetensors"]);
        let _ = std::fs::remove_file(dir.join(INDEX));
        write(&dir.join("model.safetensors"), body);
        dir
    } else {
        let dir = model_dir("st", &["model.safetensors"]);
        let _ = std::fs::remove_file(dir.join("model.safetensors"));
        write(&dir.join(SHARD), tiny_file("model.safetensors"));
        write(&dir.join(INDEX), body);
        dir
    };
    if let Err(e) = read_all_tensors(&dir) {
        return Verdict::Rejected(e);
    }
    load_and_run(&dir)
}

/// The tiny model's config, and one with every optional key the parser reads.
pub fn config_seeds() -> Vec<Vec<u8>> {
    let plain = tiny_file("config.json").to_vec();
    let mut full: Value = serde_json::from_slice(&plain).expect("tiny config");
    full["head_dim"] = json!(8);
    full["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    full["attention_bias"] = json!(false);
    full["mlp_bias"] = json!(false);
    full["eos_token_id"] = json!([257, 256]);
    full["layer_types"] = json!(["full_attention"]);
    let mut linear = full.clone();
    linear["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
    linear["rope_parameters"] = json!({"rope_theta": 500000.0});
    vec![
        plain,
        serde_json::to_vec(&full).expect("JSON"),
        serde_json::to_vec(&linear).expect("JSON"),
    ]
}

const CONFIG_KEYS: [&str; 18] = [
    "head_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_size",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "rope_theta",
    "rms_norm_eps",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "torch_dtype",
    "layer_types",
    "model_type",
];

/// A key the parser reads set to a boundary value (or a rope scaling object with one).
pub fn config_mutant(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(input).ok()?;
    let obj = v.as_object_mut()?;
    let value = match rng.below(4) {
        0 => json!(boundary_u64(rng)),
        1 => json!(rng.below(70)),
        2 => hostile_value(rng),
        _ => json!(-(rng.below(3) as i64)),
    };
    if rng.one_in(4) {
        let kind = *rng
            .pick(&["llama3", "linear", "default", "dynamic"])
            .unwrap_or(&"llama3");
        let field = *rng
            .pick(&[
                "factor",
                "low_freq_factor",
                "high_freq_factor",
                "original_max_position_embeddings",
            ])
            .unwrap_or(&"factor");
        let mut scaling = json!({"rope_type": kind, "factor": 4.0});
        scaling[field] = value;
        obj.insert("rope_scaling".into(), scaling);
    } else {
        let key = CONFIG_KEYS[rng.below(CONFIG_KEYS.len())];
        obj.insert(key.into(), value);
    }
    serde_json::to_vec(&v).ok()
}

pub fn check_config(input: &[u8]) -> Verdict {
    let dir = model_dir("cfg", &["config.json"]);
    write(&dir.join("config.json"), input);
    load_and_run(&dir)
}
