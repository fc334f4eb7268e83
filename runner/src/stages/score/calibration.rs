//! The calibration set of `score`: `N` sequences of `L` token ids, from text (default: the
//! reference recipe on the Alpaca stream) or from pre-tokenized ids.
//!
//! Shortfalls are clamped, never padded with invented data: when the source holds fewer than
//! `N` sequences, fewer are used (with a warning); when it cannot fill a single sequence (or
//! every document is empty), it is an error that says what to change.

use super::token_rows::TokenRows;
use crate::data::calibration::alpaca_text;
use crate::data::sft::load_alpaca;
use crate::data::tasks::perplexity::DEFAULT_TEXT_FIELD;
use crate::data::TextSource;
use crate::resolve::Resolver;
use crate::stages::{Result, StageError};
use crate::tokenizer::Tokenizer;
use pruneforge_api::spec::DatasetRef;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The default calibration dataset (the reference recipe).
pub const DEFAULT_DATASET: &str = "builtin:alpaca";
/// The tensor read from an ids file unless told otherwise.
pub const DEFAULT_IDS_TENSOR: &str = "input_ids";
/// Separator between documents when several are packed into one stream.
pub const DOCUMENT_SEPARATOR: &str = "\n\n";

/// Where the calibration tokens come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CalibrationData {
    /// Text, tokenized without special tokens. `dataset` is `builtin:NAME` or a path: a `.json`
    /// Alpaca array becomes the reference calibration stream (records as
    /// `instruction [+ "\n\n" + input] + "\n\n" + output`, joined with `"\n\n"`); a `.jsonl`
    /// file gives the string `field` (default `text`) of every record; any other file is plain
    /// text (one document, or one per non-empty line with `packing: rows`). With
    /// `packing: rows` an Alpaca array gives one row per record.
    Text {
        dataset: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        #[serde(default)]
        packing: Packing,
    },
    /// The records of a data set reference (its format, field mapping, offset and limit
    /// honoured), each rendered as `instruction [+ "\n\n" + input] + "\n\n" + output` and
    /// packed as one stream: for `builtin:alpaca` exactly the reference recipe.
    Dataset { dataset: DatasetRef },
    /// Pre-tokenized ids: an integer tensor `[N', L']` in a safetensors file (with an optional
    /// right-padding `attention_mask`). The first `N` rows and `L` columns are used.
    Ids {
        path: PathBuf,
        #[serde(default = "default_ids_tensor")]
        tensor: String,
    },
}

fn default_ids_tensor() -> String {
    DEFAULT_IDS_TENSOR.to_string()
}

impl Default for CalibrationData {
    fn default() -> Self {
        Self::Text {
            dataset: DEFAULT_DATASET.into(),
            field: None,
            packing: Packing::Stream,
        }
    }
}

/// How text documents become rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// Documents joined with `"\n\n"`, tokenized in one call, the first `N × L` ids cut into
    /// `N` rows of `L` (the reference recipe; no padding).
    #[default]
    Stream,
    /// One document per row, cut to `L` tokens, shorter ones right-padded; empty documents are
    /// skipped.
    Rows,
}

impl CalibrationData {
    /// A short human-readable description (recorded in `scores.json`).
    pub fn describe(&self) -> String {
        match self {
            Self::Text {
                dataset,
                field,
                packing,
            } => {
                let field = field
                    .as_deref()
                    .map(|f| format!(", field {f}"))
                    .unwrap_or_default();
                let packing = match packing {
                    Packing::Stream => "stream",
                    Packing::Rows => "rows",
                };
                format!("text {dataset}{field}, {packing} packing")
            }
            Self::Dataset { dataset } => {
                let limit = dataset
                    .limit
                    .map(|l| format!(", limit {l}"))
                    .unwrap_or_default();
                format!(
                    "records {} ({}, offset {}{limit}), stream packing",
                    dataset.uri,
                    serde_json::to_value(dataset.format)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    dataset.offset
                )
            }
            Self::Ids { path, tensor } => format!("ids {} [{tensor}]", path.display()),
        }
    }
}

fn text_source(path: &Path, field: Option<&str>, packing: Packing) -> TextSource {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => TextSource::AlpacaStream(path.to_path_buf()),
        Some("jsonl") => TextSource::JsonlField {
            path: path.to_path_buf(),
            field: field.unwrap_or(DEFAULT_TEXT_FIELD).to_string(),
        },
        _ => match packing {
            Packing::Stream => TextSource::PlainFile(path.to_path_buf()),
            Packing::Rows => TextSource::Lines(path.to_path_buf()),
        },
    }
}

/// Builds up to `sequences` rows of `length` tokens (see the module docs for clamping).
pub fn build(
    data: &CalibrationData,
    tokenizer: &Tokenizer,
    sequences: usize,
    length: usize,
    resolver: &Resolver,
) -> Result<TokenRows> {
    if sequences == 0 || length == 0 {
        return Err(StageError::Input(format!(
            "the calibration set needs at least 1 sequence of at least 1 token (asked for {sequences} × {length})"
        )));
    }
    let rows = match data {
        CalibrationData::Text {
            dataset,
            field,
            packing,
        } => {
            let path = resolver.resolve(dataset)?;
            let docs = match (packing, path.extension().and_then(|e| e.to_str())) {
                // One Alpaca record per row.
                (Packing::Rows, Some("json")) => {
                    load_alpaca(&path)?.iter().map(alpaca_text).collect()
                }
                _ => text_source(&path, field.as_deref(), *packing).load()?,
            };
            let what = format!("calibration text {}", path.display());
            match packing {
                Packing::Stream => stream_rows(&docs, tokenizer, sequences, length, &what)?,
                Packing::Rows => document_rows(&docs, tokenizer, sequences, length, &what)?,
            }
        }
        CalibrationData::Dataset { dataset } => {
            let records = crate::stages::inputs::load_sft(dataset, resolver)?;
            let docs: Vec<String> = records.records.iter().map(alpaca_text).collect();
            let what = format!("calibration records of {}", dataset.uri);
            stream_rows(&docs, tokenizer, sequences, length, &what)?
        }
        CalibrationData::Ids { path, tensor } => {
            let mut rows = TokenRows::from_safetensors(path, tensor)?;
            if rows.width() < length {
                return Err(StageError::Input(format!(
                    "{}: `{tensor}` has sequences of {} tokens, fewer than the {length} asked for; lower sequence_length to at most {}",
                    path.display(),
                    rows.width(),
                    rows.width()
                )));
            }
            rows.truncate_width(length);
            if rows.rows() < sequences {
                warn_fewer(&path.display().to_string(), rows.rows(), sequences);
            }
            rows.truncate_rows(sequences);
            rows
        }
    };
    Ok(rows)
}

fn warn_fewer(what: &str, have: usize, asked: usize) {
    tracing::warn!(
        source = what,
        sequences = have,
        asked,
        "the calibration source is shorter than asked: using {have} sequences instead of {asked}"
    );
}

/// The reference recipe: one stream, tokenized in one call, cut into rows.
fn stream_rows(
    docs: &[String],
    tokenizer: &Tokenizer,
    sequences: usize,
    length: usize,
    what: &str,
) -> Result<TokenRows> {
    let stream = docs.join(DOCUMENT_SEPARATOR);
    let ids = tokenizer.encode(&stream, false)?;
    let available = ids.len() / length;
    if available == 0 {
        return Err(StageError::Input(format!(
            "{what} has {} tokens, fewer than one sequence of {length}; give more text or a smaller sequence_length",
            ids.len()
        )));
    }
    if available < sequences {
        warn_fewer(what, available, sequences);
    }
    let rows = available.min(sequences);
    let mut ids = ids;
    ids.truncate(rows * length);
    TokenRows::from_matrix(ids, length)
}

/// One document per row, cut to `length`, right-padded with the tokenizer's pad id.
fn document_rows(
    docs: &[String],
    tokenizer: &Tokenizer,
    sequences: usize,
    length: usize,
    what: &str,
) -> Result<TokenRows> {
    let mut rows = Vec::new();
    let mut empty = 0usize;
    for doc in docs {
        if rows.len() == sequences {
            break;
        }
        let mut ids = tokenizer.encode(doc, false)?;
        if ids.is_empty() {
            empty += 1;
            continue;
        }
        ids.truncate(length);
        rows.push(ids);
    }
    if empty > 0 {
        tracing::warn!(source = what, documents = empty, "skipping empty documents");
    }
    if rows.is_empty() {
        return Err(StageError::Input(format!(
            "{what} has no non-empty document to calibrate on"
        )));
    }
    if rows.len() < sequences {
        warn_fewer(what, rows.len(), sequences);
    }
    let pad = tokenizer
        .pad_id
        .or(tokenizer.eos_ids.first().copied())
        .unwrap_or(0);
    TokenRows::from_rows(&rows, pad)
}
