use serde::{Deserialize, Serialize};

use crate::plan::Shape;

use crate::spec::{DatasetRef, DraftModel};

/// `speculate`: speculative decoding with the base model verifying a pruned draft. Inputs:
/// `target` (the imported model) and `draft`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpeculateParams {
    /// Block size of the draft; 0 for the `int8` draft (the unpruned base in 8 bits).
    pub block_size: u32,
    /// The width variant this stage belongs to (`spec.pruning.widths[].name`); absent for
    /// depth-only variants. A name only: left out of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
    /// pruned, merged or int8.
    pub draft: DraftModel,
    /// The most tokens proposed per step (k).
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

impl SpeculateParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }
}
