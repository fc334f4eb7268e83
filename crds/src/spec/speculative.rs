//! Speculative decoding: a pruned model drafts tokens that the base model verifies.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{DatasetFormat, DatasetRef};
use crate::builtin::BuiltinDataset;

/// Which model of each block size drafts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
// Bounds the string for the apiserver's CEL cost estimate.
#[schemars(extend("maxLength" = 16))]
pub enum DraftModel {
    /// The pruned model without recovery.
    #[default]
    Pruned,
    /// The merged model (needs `merge.enabled`).
    Merged,
    /// The base model itself, decoding with 8-bit copies of its weights (one scale per 32
    /// values): it reads under a third of the bytes per token and predicts the base's next
    /// token almost always, so on a CPU it drafts cheaply. No pruned model is involved: one
    /// stage, `speculate-int8`, runs for the job.
    Int8,
}

/// Speculative decoding benchmark: acceptance rate, mean accepted length and speed-up of the
/// base model with a pruned draft (or an 8-bit copy of itself). Each step drafts at most
/// `draftTokens`; how many is chosen from the acceptance measured so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeculativeSpec {
    /// Run one speculate stage per block size.
    #[serde(default)]
    pub enabled: bool,
    /// The most tokens the draft proposes per verification step (k); each step's length is
    /// chosen from the measured acceptance, down to none when drafting does not pay.
    #[serde(default = "default_draft_tokens")]
    #[schemars(range(min = 1, max = 16))]
    pub draft_tokens: u32,
    /// New tokens generated per prompt.
    #[serde(default = "default_max_new_tokens")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_new_tokens: u32,
    /// Sampling temperature; 0 is greedy (exact-match acceptance).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Prompt source (instructions are used); its `limit` is the number of prompts.
    #[serde(default = "default_prompts")]
    pub prompts: DatasetRef,
    /// pruned, merged or int8.
    #[serde(default)]
    pub draft: DraftModel,
    /// Sampling seed.
    #[serde(default)]
    pub seed: u32,
}

fn default_draft_tokens() -> u32 {
    4
}

fn default_max_new_tokens() -> u32 {
    128
}

fn default_prompts() -> DatasetRef {
    DatasetRef::builtin(BuiltinDataset::Alpaca, DatasetFormat::Alpaca).with_limit(16)
}

impl Default for SpeculativeSpec {
    fn default() -> Self {
        SpeculativeSpec {
            enabled: false,
            draft_tokens: default_draft_tokens(),
            max_new_tokens: default_max_new_tokens(),
            temperature: 0.0,
            prompts: default_prompts(),
            draft: DraftModel::Pruned,
            seed: 0,
        }
    }
}
