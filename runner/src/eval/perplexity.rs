//! Perplexity on rows of token ids, each row scored on its own: tokens `1..L` given the earlier
//! tokens of the row, no BOS (the recipe of `shared/reference`, "Perplexity"). Rows longer than
//! the model window are cut into lm-eval-style rolling windows: every window predicts new tokens
//! only and sees as much of the preceding text as fits (`get_rolling_token_windows` +
//! `make_disjoint_window` with `context_len = 1`). Unlike lm-eval's `loglikelihood_rolling` no
//! end-of-text token is put in front, so the first token of a row is not scored.
//!
//! Where rows come from ([`PerplexitySource`]):
//! - a `.safetensors` file with an integer tensor `input_ids` (`[rows, len]` or `[len]`);
//! - an Alpaca JSON array (the default, `builtin:alpaca`): the reference held-out set. The
//!   calibration stream is tokenized in one call, the first [`HELDOUT_OFFSET_TOKENS`] (the
//!   calibration windows) are skipped and the rest is cut into rows of [`ROW_TOKENS`]; the
//!   first [`HELDOUT_DEFAULT_ROWS`] rows are exactly `shared/reference/heldout_ids.safetensors`;
//! - any other text source: one row per document (plain file, JSONL `text` field), with
//!   word and byte perplexities as lm-eval reports them.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::scorer::{EncodedRequest, LlScore};
use crate::data::tasks::perplexity::source_for_path;
use crate::data::TextSource;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Tokens per held-out row.
pub const ROW_TOKENS: usize = 256;
/// Tokens of the Alpaca stream used for calibration (64 × 128), skipped by the held-out rows.
pub const HELDOUT_OFFSET_TOKENS: usize = 8192;
/// Held-out rows scored when no limit is given.
pub const HELDOUT_DEFAULT_ROWS: usize = 64;
/// The tensor read from token-id files.
pub const TOKEN_TENSOR: &str = "input_ids";

static WHITESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+").expect("constant pattern compiles"));

/// Where perplexity rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PerplexitySource {
    /// Token ids stored in a safetensors file.
    TokenIds(PathBuf),
    /// The held-out rows of an Alpaca file's calibration stream.
    AlpacaHeldout(PathBuf),
    /// One row per document.
    Documents(TextSource),
}

impl PerplexitySource {
    pub fn for_path(path: &Path) -> Self {
        if path.extension().is_some_and(|e| e == "safetensors") {
            return PerplexitySource::TokenIds(path.to_path_buf());
        }
        match source_for_path(path) {
            TextSource::AlpacaStream(p) => PerplexitySource::AlpacaHeldout(p),
            other => PerplexitySource::Documents(other),
        }
    }

    /// Rows scored when the task gives no limit.
    pub fn default_limit(&self) -> Option<usize> {
        matches!(self, PerplexitySource::AlpacaHeldout(_)).then_some(HELDOUT_DEFAULT_ROWS)
    }
}

/// One row to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Position among all rows of the source.
    pub idx: usize,
    pub tokens: Vec<u32>,
    /// UTF-8 bytes and whitespace-separated words of the row's text (documents only).
    pub text_bytes: Option<usize>,
    pub words: Option<usize>,
}

/// All rows of a source, in order (selection is applied by the caller).
pub fn load_rows(source: &PerplexitySource, tokenizer: &Tokenizer) -> Result<Vec<TokenRow>> {
    let plain = |rows: Vec<Vec<u32>>| -> Vec<TokenRow> {
        rows.into_iter()
            .enumerate()
            .map(|(idx, tokens)| TokenRow {
                idx,
                tokens,
                text_bytes: None,
                words: None,
            })
            .collect()
    };
    match source {
        PerplexitySource::TokenIds(path) => Ok(plain(read_token_rows(path)?)),
        PerplexitySource::AlpacaHeldout(path) => {
            let stream = TextSource::AlpacaStream(path.clone()).load()?;
            let text = stream.concat();
            let ids = tokenizer.encode(&text, false)?;
            let rest = ids.get(HELDOUT_OFFSET_TOKENS..).unwrap_or_default();
            Ok(plain(
                rest.chunks(ROW_TOKENS)
                    .filter(|c| c.len() >= 2)
                    .map(<[u32]>::to_vec)
                    .collect(),
            ))
        }
        PerplexitySource::Documents(text) => text
            .load()?
            .into_iter()
            .enumerate()
            .map(|(idx, doc)| {
                Ok(TokenRow {
                    idx,
                    tokens: tokenizer.encode(&doc, false)?,
                    text_bytes: Some(doc.len()),
                    words: Some(WHITESPACE.split(&doc).count()),
                })
            })
            .collect(),
    }
}

/// Reads `input_ids` (`[rows, len]` or `[len]`) from a safetensors file; rows keep their real
/// tokens (an `attention_mask`, when present, cuts the padding off) and empty rows are dropped.
pub fn read_token_rows(path: &Path) -> Result<Vec<Vec<u32>>> {
    let m = crate::data::token_ids::read_token_ids(path, TOKEN_TENSOR)?;
    Ok((0..m.rows)
        .map(|r| m.row(r).to_vec())
        .filter(|r| !r.is_empty())
        .collect())
}

/// The requests scoring tokens `1..L` of a row with windows of at most `max_length` inputs.
pub fn rolling_requests(tokens: &[u32], max_length: usize) -> Vec<EncodedRequest> {
    let len = tokens.len();
    if len < 2 || max_length == 0 {
        return Vec::new();
    }
    let request = |ctx: &[u32], cont: &[u32]| EncodedRequest {
        context: ctx.to_vec(),
        continuation: cont.to_vec(),
        context_is_prefix: true,
    };
    let mut out = Vec::new();
    let mut predicted = len.min(max_length + 1);
    out.push(request(&tokens[..1], &tokens[1..predicted]));
    while predicted < len {
        let end = len.min(predicted + max_length);
        let ctx_start = end.saturating_sub(max_length + 1);
        out.push(request(
            &tokens[ctx_start..predicted],
            &tokens[predicted..end],
        ));
        predicted = end;
    }
    out
}

/// Perplexity metrics of a set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityScores {
    /// exp(Σ NLL / Σ scored tokens).
    pub perplexity: f64,
    pub nll_per_token: f64,
    pub nll_sum: f64,
    pub tokens: usize,
    pub rows: usize,
    /// lm-eval's `word_perplexity`, `byte_perplexity` and `bits_per_byte` (text rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_perplexity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_perplexity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
}

/// NLL of one row: the sum over its windows.
pub fn row_nll(windows: &[LlScore]) -> (f64, usize) {
    (
        -windows.iter().map(|s| s.ll).sum::<f64>(),
        windows.iter().map(|s| s.tokens).sum(),
    )
}

/// Aggregates `(row, nll, scored tokens)`.
pub fn aggregate(rows: &[(&TokenRow, f64, usize)]) -> PerplexityScores {
    let nll_sum: f64 = rows.iter().map(|r| r.1).sum();
    let tokens: usize = rows.iter().map(|r| r.2).sum();
    let nll_per_token = nll_sum / tokens.max(1) as f64;
    let total = |f: fn(&TokenRow) -> Option<usize>| -> Option<usize> {
        rows.iter().map(|r| f(r.0)).sum::<Option<usize>>()
    };
    let words = total(|r| r.words).filter(|&w| w > 0);
    let bytes = total(|r| r.text_bytes).filter(|&b| b > 0);
    PerplexityScores {
        perplexity: nll_per_token.exp(),
        nll_per_token,
        nll_sum,
        tokens,
        rows: rows.len(),
        word_perplexity: words.map(|w| (nll_sum / w as f64).exp()),
        byte_perplexity: bytes.map(|b| (nll_sum / b as f64).exp()),
        bits_per_byte: bytes.map(|b| nll_sum / b as f64 / std::f64::consts::LN_2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(reqs: &[EncodedRequest], max_length: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for r in reqs {
            assert!(!r.context.is_empty());
            let whole = r.context.len() + r.continuation.len();
            assert!(whole.min(max_length + 1) > r.continuation.len());
            out.extend_from_slice(&r.continuation);
        }
        out
    }

    #[test]
    fn one_window_scores_tokens_after_the_first() {
        let toks: Vec<u32> = (0..10).collect();
        let reqs = rolling_requests(&toks, 16);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].context, vec![0]);
        assert_eq!(covered(&reqs, 16), (1..10).collect::<Vec<u32>>());
    }

    #[test]
    fn rolling_windows_are_disjoint_and_full() {
        let toks: Vec<u32> = (0..23).collect();
        let reqs = rolling_requests(&toks, 5);
        assert_eq!(covered(&reqs, 5), (1..23).collect::<Vec<u32>>());
        // First window: inputs 0..5 predict 1..6; then 5 new tokens from 5 inputs each (the
        // input is the last context token plus the continuation minus its last token).
        assert_eq!(reqs[0].continuation, vec![1, 2, 3, 4, 5]);
        assert_eq!(reqs[1].context, vec![5]);
        assert_eq!(reqs[1].continuation, vec![6, 7, 8, 9, 10]);
        let last = reqs.last().expect("windows");
        assert_eq!(last.continuation, vec![21, 22]);
        assert_eq!(last.context.len() + last.continuation.len(), 6);
        assert!(rolling_requests(&[7], 5).is_empty());
    }

    #[test]
    fn aggregate_perplexity() {
        let row = TokenRow {
            idx: 0,
            tokens: vec![1, 2, 3],
            text_bytes: Some(10),
            words: Some(2),
        };
        let s = aggregate(&[(&row, 4.0, 2)]);
        assert!((s.perplexity - 2f64.exp()).abs() < 1e-12);
        assert!((s.word_perplexity.expect("words") - 2f64.exp()).abs() < 1e-12);
        assert!((s.bits_per_byte.expect("bytes") - 0.4 / std::f64::consts::LN_2).abs() < 1e-12);
    }
}
