//! Checks that models can be merged tensor by tensor: same architecture and shapes, the same
//! tensors, the same vocabulary. Every error names the models, and the tensor or file, that
//! differ.

use super::inputs::ModelInput;
use crate::stages::{Result, StageError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Checks `other` against `base`.
pub fn check_pair(base: &ModelInput, other: &ModelInput) -> Result<()> {
    check_configs(base, other)?;
    check_tensors(base, other)?;
    check_vocab(base, other)
}

fn mismatch(base: &ModelInput, other: &ModelInput, what: String) -> StageError {
    StageError::Input(format!(
        "cannot merge {} with {}: {what}; merging needs models of the same shape \
         (prune and fine-tune them from the same base)",
        base.label(),
        other.label()
    ))
}

fn check_configs(base: &ModelInput, other: &ModelInput) -> Result<()> {
    let (a, b) = (&base.config, &other.config);
    let fields: [(&str, String, String); 9] = [
        (
            "architecture",
            a.architecture.hf_class().into(),
            b.architecture.hf_class().into(),
        ),
        (
            "num_hidden_layers",
            a.num_hidden_layers.to_string(),
            b.num_hidden_layers.to_string(),
        ),
        (
            "hidden_size",
            a.hidden_size.to_string(),
            b.hidden_size.to_string(),
        ),
        (
            "intermediate_size",
            a.intermediate_size.to_string(),
            b.intermediate_size.to_string(),
        ),
        (
            "num_attention_heads",
            a.num_attention_heads.to_string(),
            b.num_attention_heads.to_string(),
        ),
        (
            "num_key_value_heads",
            a.num_key_value_heads.to_string(),
            b.num_key_value_heads.to_string(),
        ),
        ("head_dim", a.head_dim.to_string(), b.head_dim.to_string()),
        (
            "vocab_size",
            a.vocab_size.to_string(),
            b.vocab_size.to_string(),
        ),
        (
            "tie_word_embeddings",
            a.tie_word_embeddings.to_string(),
            b.tie_word_embeddings.to_string(),
        ),
    ];
    for (key, va, vb) in fields {
        if va != vb {
            return Err(mismatch(
                base,
                other,
                format!(
                    "`{key}` is {va} in {} but {vb} in {}",
                    base.dir.join("config.json").display(),
                    other.dir.join("config.json").display()
                ),
            ));
        }
    }
    Ok(())
}

fn check_tensors(base: &ModelInput, other: &ModelInput) -> Result<()> {
    let (na, nb) = (base.weights.names(), other.weights.names());
    let file = |m: &ModelInput, n: &str| {
        m.weights
            .file_of(n)
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    if let Some(n) = na.iter().find(|n| other.weights.shape(n).is_none()) {
        return Err(mismatch(
            base,
            other,
            format!(
                "tensor `{n}` is in {} but missing from {}",
                file(base, n),
                other.label()
            ),
        ));
    }
    if let Some(n) = nb.iter().find(|n| base.weights.shape(n).is_none()) {
        return Err(mismatch(
            base,
            other,
            format!(
                "tensor `{n}` is in {} but missing from {}",
                file(other, n),
                base.label()
            ),
        ));
    }
    for n in &na {
        let (sa, sb) = (base.weights.shape(n), other.weights.shape(n));
        if sa != sb {
            return Err(mismatch(
                base,
                other,
                format!(
                    "tensor `{n}` has shape {:?} in {} but {:?} in {}",
                    sa.unwrap_or_default(),
                    file(base, n),
                    sb.unwrap_or_default(),
                    file(other, n)
                ),
            ));
        }
    }
    Ok(())
}

/// token → id of a `tokenizer.json`: the model's vocabulary (BPE/WordPiece/WordLevel map or
/// Unigram list) plus the added tokens.
pub fn read_vocab(path: &Path) -> Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| StageError::Input(format!("{}: not valid JSON: {e}", path.display())))?;
    let mut vocab = BTreeMap::new();
    match json.pointer("/model/vocab") {
        Some(Value::Object(m)) => {
            for (token, id) in m {
                let id = id.as_u64().ok_or_else(|| {
                    StageError::Input(format!(
                        "{}: model.vocab[{token:?}] is not a token id",
                        path.display()
                    ))
                })?;
                vocab.insert(token.clone(), id);
            }
        }
        Some(Value::Array(pieces)) => {
            for (id, piece) in pieces.iter().enumerate() {
                let token = piece.get(0).and_then(Value::as_str).ok_or_else(|| {
                    StageError::Input(format!(
                        "{}: model.vocab[{id}] is not a [piece, score] pair",
                        path.display()
                    ))
                })?;
                vocab.insert(token.to_string(), id as u64);
            }
        }
        _ => {
            return Err(StageError::Input(format!(
                "{}: no model.vocab (not an HF fast tokenizer?)",
                path.display()
            )))
        }
    }
    if let Some(Value::Array(added)) = json.get("added_tokens") {
        for t in added {
            if let (Some(content), Some(id)) = (
                t.get("content").and_then(Value::as_str),
                t.get("id").and_then(Value::as_u64),
            ) {
                vocab.insert(content.to_string(), id);
            }
        }
    }
    Ok(vocab)
}

fn check_vocab(base: &ModelInput, other: &ModelInput) -> Result<()> {
    let (pa, pb) = (
        base.dir.join("tokenizer.json"),
        other.dir.join("tokenizer.json"),
    );
    match (pa.exists(), pb.exists()) {
        (false, false) => return Ok(()),
        (true, false) | (false, true) => {
            let (has, lacks) = if pa.exists() {
                (&pa, other)
            } else {
                (&pb, base)
            };
            return Err(mismatch(
                base,
                other,
                format!(
                    "{} exists but {} has no tokenizer.json, so the vocabularies cannot be compared",
                    has.display(),
                    lacks.label()
                ),
            ));
        }
        (true, true) => {}
    }
    let (va, vb) = (read_vocab(&pa)?, read_vocab(&pb)?);
    if va == vb {
        return Ok(());
    }
    let show = |id: Option<&u64>| id.map_or("missing".to_string(), |i| format!("id {i}"));
    let first = va
        .iter()
        .filter(|(tok, id)| vb.get(*tok) != Some(*id))
        .min_by_key(|(_, id)| **id)
        .map(|(tok, id)| (tok, Some(id), vb.get(tok)))
        .or_else(|| {
            vb.iter()
                .filter(|(tok, _)| !va.contains_key(*tok))
                .min_by_key(|(_, id)| **id)
                .map(|(tok, id)| (tok, None, Some(id)))
        });
    let detail = match first {
        Some((tok, ia, ib)) => format!(
            "token {tok:?} is {} in {} but {} in {}",
            show(ia),
            pa.display(),
            show(ib),
            pb.display()
        ),
        None => String::new(),
    };
    Err(mismatch(
        base,
        other,
        format!(
            "the tokenizer vocabularies differ ({} vs {} tokens; {detail})",
            va.len(),
            vb.len()
        ),
    ))
}
