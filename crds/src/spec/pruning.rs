//! Which layers to score and drop.

use kube::KubeSchema;

use super::width::{WidthAggregation, WidthVariant};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Layer-importance metric used to choose the block to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreMetric {
    /// Angular distance between the hidden states entering and leaving the block, at the last
    /// token of each calibration sequence (Gromov et al.).
    #[default]
    AngularLastToken,
    /// Angular distance averaged over all tokens.
    AngularAllTokens,
    /// ShortGPT Block Influence (1 - cosine similarity per layer), summed over the block.
    BlockInfluence,
    /// Calibration perplexity of the model with the block removed.
    Perplexity,
}

impl ScoreMetric {
    /// Every metric.
    pub const ALL: [ScoreMetric; 4] = [
        ScoreMetric::AngularLastToken,
        ScoreMetric::AngularAllTokens,
        ScoreMetric::BlockInfluence,
        ScoreMetric::Perplexity,
    ];

    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreMetric::AngularLastToken => "angular-last-token",
            ScoreMetric::AngularAllTokens => "angular-all-tokens",
            ScoreMetric::BlockInfluence => "block-influence",
            ScoreMetric::Perplexity => "perplexity",
        }
    }
}

impl std::fmt::Display for ScoreMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ScoreMetric {
    type Err = String;

    /// The manifest name; `_` may stand for `-` (`angular_last_token`).
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == wanted)
            .ok_or_else(|| {
                format!(
                    "unknown metric `{s}` (valid: {})",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

/// Pruning: drop the least important contiguous block of `n` layers, for each `n` in
/// `blockSizes`; and prune width (alone or with a block) for each entry of `widths`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.blockSizes.all(n, n >= 1)").message("spec.pruning.blockSizes: every block size must be at least 1").field_path(".blockSizes"),
    validation = Rule::new("size(self.blockSizes) > 0 || (has(self.widths) && size(self.widths) > 0)").message("spec.pruning: list at least one block size or width variant").field_path(".blockSizes")
)]
pub struct PruningSpec {
    /// Layer-importance metric: angular-last-token, angular-all-tokens, block-influence or
    /// perplexity.
    #[serde(default)]
    pub metric: ScoreMetric,
    /// Numbers of consecutive layers to drop; one pruned model per entry.
    #[serde(default = "default_block_sizes")]
    #[schemars(length(max = 8), inner(range(min = 1, max = 256)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub block_sizes: Vec<u32>,
    /// Never drop the first layer.
    #[serde(default = "default_true")]
    pub exclude_first_layer: bool,
    /// Never drop the last layer.
    #[serde(default = "default_true")]
    pub exclude_last_layer: bool,
    /// Drop the block starting at this layer (0-based) instead of the best-scored one; applies to
    /// every block size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1024))]
    pub start: Option<u32>,
    /// Width-pruned variants (Minitron: MLP neurons, KV groups and heads, embedding channels by
    /// activation importance), each alone or combined with a block of layers; they join the
    /// grid beside the depth-only variants of `blockSizes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub widths: Vec<WidthVariant>,
    /// How activation importance is aggregated (default: mean over a sequence, L2 over
    /// sequences, as NVIDIA ModelOpt does). Used only when `widths` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_importance: Option<WidthAggregation>,
}

fn default_block_sizes() -> Vec<u32> {
    vec![6]
}

fn default_true() -> bool {
    true
}

impl Default for PruningSpec {
    fn default() -> Self {
        PruningSpec {
            metric: ScoreMetric::default(),
            block_sizes: default_block_sizes(),
            exclude_first_layer: true,
            exclude_last_layer: true,
            start: None,
            widths: Vec::new(),
            width_importance: None,
        }
    }
}
