//! `scores.json`: what `score` writes and `prune` reads. Keys follow the reference
//! (`shared/reference/layer_scores.json`): `n` → `{d_lasttok[], d_alltok[]}`, `BI`, `BI_lasttok`.

use super::choose::{BlockChoice, ScoreMetric};
use crate::stages::{Result, StageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const SCORES_FILE: &str = "scores.json";
pub const HEATMAP_FILE: &str = "heatmap.svg";
pub const SCORES_FORMAT: &str = "pruneforge.scores/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoresFile {
    /// [`SCORES_FORMAT`].
    pub format: String,
    pub model: ScoredModel,
    pub data: ScoredData,
    /// The metric the blocks were chosen by.
    #[serde(with = "super::choose::metric_serde")]
    pub metric: ScoreMetric,
    pub include_first_layer: bool,
    pub include_last_layer: bool,
    /// Per block size (JSON keys are the sizes as strings).
    pub n: BTreeMap<usize, BlockSizeScores>,
    /// ShortGPT Block Influence per layer, `1 − mean cos(h_l, h_{l+1})` over all tokens.
    #[serde(rename = "BI")]
    pub bi: Vec<f64>,
    /// The same at the last token of each sequence.
    #[serde(rename = "BI_lasttok")]
    pub bi_lasttok: Vec<f64>,
    /// Layers by increasing BI (ShortGPT's removal order; ties → smaller layer).
    pub shortgpt_order_lowest_bi_first: Vec<usize>,
    /// Calibration perplexity of the full model (metric `perplexity` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_full: Option<f64>,
    /// Cosines taken with a zero hidden vector (defined as 1 when both are zero, else 0).
    pub degenerate_comparisons: u64,
    pub throughput: Throughput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredModel {
    /// The model directory as given (informational).
    pub dir: String,
    /// [`super::digest::model_sha256`] of the directory.
    pub sha256: String,
    pub num_hidden_layers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredData {
    pub source: String,
    /// sha256 of the calibration ids as int64 LE `[N, L]` (see `TokenRows::sha256`).
    pub sha256: String,
    pub num_sequences: usize,
    pub sequence_length: usize,
    /// Real (non-pad) tokens.
    pub tokens: u64,
    pub padded_rows: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSizeScores {
    /// `d_lasttok[l]`: mean angular distance of `(h_l, h_{l+n})` over the last tokens.
    pub d_lasttok: Vec<f64>,
    /// The same over all real tokens.
    pub d_alltok: Vec<f64>,
    /// `Σ BI[l..l+n]`.
    pub bi_sum: Vec<f64>,
    /// Calibration perplexity with the block removed (`null` = not computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppl: Option<Vec<Option<f64>>>,
    /// The block chosen by `metric` within the layer limits; `null` when no block of this
    /// size fits them.
    pub chosen: Option<BlockChoice>,
    /// One line for humans.
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub tokens: u64,
    /// Wall time of the scoring pass (forward with hidden states + accumulation).
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub batch_size: usize,
}

impl ScoresFile {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
        let scores: Self = serde_json::from_str(&text).map_err(|e| {
            StageError::Input(format!(
                "{}: not a scores.json written by `pruneforge score`: {e}",
                path.display()
            ))
        })?;
        if scores.format != SCORES_FORMAT {
            return Err(StageError::Input(format!(
                "{}: format `{}` is not `{SCORES_FORMAT}`",
                path.display(),
                scores.format
            )));
        }
        Ok(scores)
    }

    /// The chosen block of size `n`.
    pub fn chosen(&self, n: usize) -> Result<&BlockChoice> {
        let sizes = || {
            self.n
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let entry = self.n.get(&n).ok_or_else(|| {
            StageError::Input(format!(
                "scores.json has no block size {n} (it has: {}); re-run `score` with this block size",
                sizes()
            ))
        })?;
        entry.chosen.as_ref().ok_or_else(|| {
            StageError::Input(format!(
                "no block of {n} layers fits the layer limits the scores were made with (include_first_layer = {}, include_last_layer = {})",
                self.include_first_layer, self.include_last_layer
            ))
        })
    }
}
