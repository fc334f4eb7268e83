use serde::{Deserialize, Serialize};

use crate::spec::{DatasetRef, DraftModel};

/// `speculate`: speculative decoding with the base model verifying a pruned draft. Inputs:
/// `target` (the imported model) and `draft`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpeculateParams {
    /// Block size of the draft.
    pub block_size: u32,
    /// pruned or merged.
    pub draft: DraftModel,
    /// Tokens proposed per step (k).
    pub draft_tokens: u32,
    /// New tokens per prompt.
    pub max_new_tokens: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// Prompt source.
    pub prompts: DatasetRef,
    /// Sampling seed.
    pub seed: u32,
}
