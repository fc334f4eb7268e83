//! Compact result summaries kept in the status.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::ScoreMetric;

/// The block chosen for one block size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayerScoreStatus {
    /// Block size n.
    pub block_size: u32,
    /// First dropped layer (0-based).
    pub start: u32,
    /// Last dropped layer (0-based, inclusive).
    pub end: u32,
    /// Score of the chosen block (angular distance, influence or perplexity).
    pub score: f64,
    /// Metric the score is measured in.
    pub metric: ScoreMetric,
    /// URI of the full score table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores_uri: Option<String>,
}

impl ModelArtifactStatus {
    /// The pruned model this artifact derives from.
    pub fn shape(&self) -> crate::plan::Shape {
        crate::plan::Shape {
            block_size: self.block_size,
            width: self.width.clone(),
        }
    }
}

impl LayerScoreStatus {
    /// The dropped block as `start-end`, e.g. `13-18`.
    pub fn block_range(&self) -> String {
        format!("{}-{}", self.start, self.end)
    }
}

/// A model artifact (pruned model, adapter or merged model).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelArtifactStatus {
    /// Variant name, e.g. `n6`, `n6-sft`, `n6-merged`, `w-mlp75-sft`.
    pub variant: String,
    /// Block size n (0: no layer removed).
    pub block_size: u32,
    /// Width variant name (`spec.pruning.widths[].name`), when width-pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<String>,
    /// Recovery method (adapters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Artifact URI.
    pub uri: String,
    /// One-line summary, e.g. `30 -> 24 layers, 134.5M -> 106.2M params`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Benchmark results of one model variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationStatus {
    /// Variant name: `base`, `n6`, `n6-sft`, `n6-merged`, ...
    pub variant: String,
    /// Task name to its primary metric (accuracy in [0, 1], perplexity for `perplexity`).
    #[serde(default)]
    pub tasks: BTreeMap<String, f64>,
    /// Mean of the accuracy tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// average / base average × 100 (absent for the base model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_percent: Option<f64>,
    /// URI of the full results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_uri: Option<String>,
}

/// Speculative decoding with one draft.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeculativeStatus {
    /// Draft variant, e.g. `n6`, `n6-merged`, or `int8` (an 8-bit copy of the base).
    pub variant: String,
    /// Accepted draft tokens / proposed draft tokens.
    pub acceptance_rate: f64,
    /// Mean tokens accepted per verification step.
    pub mean_accepted_length: f64,
    /// Wall-clock speed-up over plain decoding with the base model.
    pub speedup: f64,
    /// URI of the full results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_uri: Option<String>,
}

/// The best recovered variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestRecovery {
    /// Variant name.
    pub variant: String,
    /// Recovery in percent of the base model's average.
    pub percent: f64,
}
