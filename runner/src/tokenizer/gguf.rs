//! Rebuilds an HF `tokenizer.json` (byte-level BPE) from GGUF `tokenizer.ggml.*` metadata.

use crate::model::error::ModelError;
use crate::model::gguf::{GgufFile, MetaValue};
use serde_json::{json, Map, Value};

const GGUF_TOKEN_CONTROL: i64 = 3;
const GGUF_TOKEN_USER_DEFINED: i64 = 4;

const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`.
fn pre_tokenizer(f: &GgufFile, pre: &str) -> Result<Value, ModelError> {
    Ok(match pre {
        // SmolLM: every digit split off, then the GPT-2 regex (llama.cpp `smollm`).
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "gpt2" | "default" | "gpt-2" => byte_level(true),
        "llama-bpe" | "llama3" | "smaug-bpe" => json!({"type": "Sequence", "pretokenizers": [
            split(LLAMA3_PATTERN), byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_PATTERN), byte_level(false)]}),
        other => {
            return Err(f.error(format!(
                "tokenizer pre-tokenizer `{other}` is not supported (supported: smollm, gpt2, llama-bpe, qwen2)"
            )))
        }
    })
}

pub struct GgufTokenizerFiles {
    pub tokenizer_json: Value,
    pub tokenizer_config: Value,
    pub chat_template: Option<String>,
}

fn strings(f: &GgufFile, key: &str) -> Result<Vec<String>, ModelError> {
    let arr = f
        .meta(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| f.error(format!("missing tokenizer metadata `{key}`")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(String::from)
                .ok_or_else(|| f.error(format!("`{key}` holds a non-string")))
        })
        .collect()
}

pub fn from_gguf(f: &GgufFile) -> Result<GgufTokenizerFiles, ModelError> {
    let model = f
        .meta("tokenizer.ggml.model")
        .and_then(MetaValue::as_str)
        .unwrap_or("<missing>");
    if model != "gpt2" {
        return Err(f.error(format!(
            "tokenizer model `{model}` is not supported (supported: gpt2 byte-level BPE)"
        )));
    }
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let types: Vec<i64> = f
        .meta("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_u64().map(|u| u as i64).unwrap_or(1))
                .collect()
        })
        .unwrap_or_else(|| vec![1; tokens.len()]);
    let pre = f
        .meta("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("default");

    let mut vocab = Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.clone(), id.into());
    }
    let mut merge_pairs = Vec::with_capacity(merges.len());
    for m in &merges {
        let (a, b) = m
            .split_once(' ')
            .ok_or_else(|| f.error(format!("merge `{m}` is not two space-separated tokens")))?;
        merge_pairs.push(json!([a, b]));
    }
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            matches!(
                types.get(*i),
                Some(&GGUF_TOKEN_CONTROL) | Some(&GGUF_TOKEN_USER_DEFINED)
            )
        })
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let id_meta = |k: &str| {
        f.meta(&format!("tokenizer.ggml.{k}"))
            .and_then(MetaValue::as_u64)
            .map(|v| v as usize)
    };
    let tok_str = |id: Option<usize>| id.and_then(|i| tokens.get(i)).cloned();
    let bos = tok_str(id_meta("bos_token_id"));
    let eos = tok_str(id_meta("eos_token_id"));
    let unk = tok_str(id_meta("unknown_token_id"));
    let pad = tok_str(id_meta("padding_token_id"));
    let add_bos = f
        .meta("tokenizer.ggml.add_bos_token")
        .and_then(MetaValue::as_bool)
        .unwrap_or(false);
    let single: Vec<Value> = match (&bos, add_bos) {
        (Some(b), true) => vec![
            json!({"SpecialToken": {"id": b, "type_id": 0}}),
            json!({"Sequence": {"id": "A", "type_id": 0}}),
        ],
        _ => vec![json!({"Sequence": {"id": "A", "type_id": 0}})],
    };
    let special_tokens = match (&bos, add_bos) {
        (Some(b), true) => {
            json!({ b.clone(): {"id": b, "ids": [id_meta("bos_token_id")], "tokens": [b]} })
        }
        _ => json!({}),
    };
    let tokenizer_json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(f, pre)?,
        "post_processor": {"type": "TemplateProcessing", "single": single,
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": special_tokens},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merge_pairs},
    });
    let chat_template = f
        .meta("tokenizer.chat_template")
        .and_then(MetaValue::as_str)
        .map(String::from);
    let mut tokenizer_config = json!({
        "add_bos_token": add_bos,
        "model_max_length": 1_000_000_000_000u64,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    for (k, v) in [
        ("bos_token", bos),
        ("eos_token", eos),
        ("unk_token", unk),
        ("pad_token", pad),
    ] {
        if let Some(v) = v {
            tokenizer_config[k] = v.into();
        }
    }
    if let Some(t) = &chat_template {
        tokenizer_config["chat_template"] = t.clone().into();
    }
    Ok(GgufTokenizerFiles {
        tokenizer_json,
        tokenizer_config,
        chat_template,
    })
}
