use serde::{Deserialize, Serialize};

use crate::spec::{MergeMethod, RecoveryMethod};

/// `merge`: interpolate the fine-tuned models of one block size. Inputs: `base` (the pruned
/// model the adapters apply to) and `model-0`, `model-1`, ... in `models` order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeParams {
    /// Block size of the pruned models.
    pub block_size: u32,
    /// slerp or linear.
    pub method: MergeMethod,
    /// Interpolation factor.
    pub t: f64,
    /// Per-layer gradient of t; empty uses `t`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub t_gradient: Vec<f64>,
    /// Merged recovery methods, in input order.
    pub models: Vec<RecoveryMethod>,
}
