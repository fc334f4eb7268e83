use serde::{Deserialize, Serialize};

/// `prune`: drop `blockSize` consecutive layers, starting at `start` or at the best block of the
/// `scores` input. Inputs: `model` (imported), `scores` (absent when `start` is given).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PruneParams {
    /// Layers to drop.
    pub block_size: u32,
    /// Explicit first layer; `None` takes the best-scored block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u32>,
}
