use serde::{Deserialize, Serialize};

use crate::plan::Shape;

use crate::spec::{MergeMethod, RecoveryMethod};

/// `merge`: combine the fine-tuned models of one block size. Inputs: `base` (the pruned
/// model the adapters apply to) and `model-0`, `model-1`, ... in `models` order. nuslerp,
/// task-arithmetic and ties merge task vectors against `base` (mergekit's `base_model`);
/// slerp and linear mix the models themselves (`model-0` is the `t = 0` end).
///
/// The settings added after slerp/linear (`weights`, `density`, `lambda`, `normalize`) are
/// left out of the serialized request at their defaults, so that the cache keys of earlier
/// plans do not change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergeParams {
    /// Block size of the pruned models.
    pub block_size: u32,
    /// The width variant this stage belongs to (`spec.pruning.widths[].name`); absent for
    /// depth-only variants. A name only: left out of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
    /// slerp, linear, nuslerp, task-arithmetic or ties.
    pub method: MergeMethod,
    /// Interpolation factor.
    pub t: f64,
    /// Per-layer gradient of t; empty uses `t`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub t_gradient: Vec<f64>,
    /// Merged recovery methods, in input order.
    pub models: Vec<RecoveryMethod>,
    /// With `merge.across: datasets`: the data set of each merged fine-tune, in input order
    /// (`models` then repeats the one method). Empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
    /// One weight per model (linear, task-arithmetic, ties); empty means 1 each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<f64>,
    /// ties: share of each task vector kept (1 keeps all).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub density: f64,
    /// task-arithmetic, ties: scale of the merged task vector.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lambda: f64,
    /// Divide by the sum of the weights; `None` is the method's mergekit default (the planner
    /// leaves it unset when the spec asks for the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl MergeParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }
}
