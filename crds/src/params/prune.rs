use serde::{Deserialize, Serialize};

use crate::plan::Shape;
use crate::spec::WidthTargets;

/// `prune`: drop `blockSize` consecutive layers (0: none), starting at `start` or at the best
/// block of the `scores` input, after keeping the `width` targets by the activation importance
/// of `scores`. Inputs: `model` (imported), `scores` (absent when `start` is given and no width
/// is pruned).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneParams {
    /// Layers to drop.
    pub block_size: u32,
    /// Explicit first layer; `None` takes the best-scored block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u32>,
    /// Width targets (Minitron), chosen on the full model before the block is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<WidthTargets>,
    /// The width variant this stage belongs to (`spec.pruning.widths[].name`); absent for
    /// depth-only variants. A name only: left out of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
}

impl PruneParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }
}
