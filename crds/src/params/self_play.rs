use serde::{Deserialize, Serialize};

use crate::plan::Shape;
use crate::spec::{DistillDataset, GenerationSpec, RecoveryMethod};

/// `self-play`: SPIN iteration `iteration`'s generation. The input model (the fine-tune, or
/// iteration k − 1's preference stage) answers the SFT prompts of `datasets`; each answer is
/// paired, as the rejected side, with the data set's answer. Sharded like distill: shard k of
/// K answers a contiguous slice of the prompts, with the same sampling streams as one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfPlayParams {
    /// Block size of the pruned model.
    pub block_size: u32,
    /// The width variant (a name only: left out of the cache key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
    /// The recovery method whose fine-tuned model the SPIN chain continues.
    pub after: RecoveryMethod,
    /// SPIN iteration, 1-based (it seeds the sampling).
    pub iteration: u32,
    pub datasets: Vec<DistillDataset>,
    pub generation: GenerationSpec,
    /// Answer the first this-many prompts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<u32>,
}

impl SelfPlayParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }
}
