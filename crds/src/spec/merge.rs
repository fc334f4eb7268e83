//! Merging fine-tuned models (mergekit semantics).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::recovery::RecoveryMethod;

/// How merged weights are interpolated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
// Bounds the string for the apiserver's CEL cost estimate.
#[schemars(extend("maxLength" = 16))]
pub enum MergeMethod {
    /// Spherical linear interpolation between exactly two models (mergekit `slerp`; nearly
    /// colinear tensors fall back to linear interpolation).
    #[default]
    Slerp,
    /// Linear interpolation: two models are mixed as (1 - t)·a + t·b, more models are averaged.
    Linear,
}

impl MergeMethod {
    /// The name as written in manifests (and mergekit's method name).
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Slerp => "slerp",
            MergeMethod::Linear => "linear",
        }
    }
}

/// Merge the fine-tuned models of each block size into one model.
///
/// The interpolation factor is `t` (0 keeps the first model, 1 the second). `tGradient`, when
/// set, replaces `t` with a mergekit gradient: its values are anchors spread evenly over the
/// layers and linearly interpolated in between.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.enabled || size(self.models) >= 2").message("spec.merge.models: name at least 2 recovery methods to merge").field_path(".models"),
    validation = Rule::new("!self.enabled || self.method != 'slerp' || size(self.models) == 2").message("spec.merge.models: slerp merges exactly 2 models").field_path(".models"),
    validation = Rule::new("!('none' in self.models)").message("spec.merge.models: `none` has no fine-tuned model to merge").field_path(".models"),
    validation = Rule::new("self.t >= 0.0 && self.t <= 1.0").message("spec.merge.t must be between 0 and 1").field_path(".t"),
    validation = Rule::new("self.tGradient.all(v, v >= 0.0 && v <= 1.0)").message("spec.merge.tGradient: every value must be between 0 and 1").field_path(".tGradient"),
    validation = Rule::new("size(self.tGradient) != 1").message("spec.merge.tGradient needs at least 2 anchors (use t for a single value)").field_path(".tGradient")
)]
pub struct MergeSpec {
    /// Run the merge stage.
    #[serde(default)]
    pub enabled: bool,
    /// slerp (exactly two models) or linear.
    #[serde(default)]
    pub method: MergeMethod,
    /// Interpolation factor in [0, 1].
    #[serde(default = "default_t")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub t: f64,
    /// Per-layer gradient of t (2..64 anchors in [0, 1]); empty uses `t` for every layer.
    #[serde(default)]
    #[schemars(length(max = 64), inner(range(min = 0.0, max = 1.0)))]
    pub t_gradient: Vec<f64>,
    /// Recovery methods whose fine-tuned models are merged, in order (the first is t = 0).
    #[serde(default = "default_models")]
    #[schemars(length(max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub models: Vec<RecoveryMethod>,
}

fn default_t() -> f64 {
    0.5
}

fn default_models() -> Vec<RecoveryMethod> {
    vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill]
}

impl Default for MergeSpec {
    fn default() -> Self {
        MergeSpec {
            enabled: false,
            method: MergeMethod::Slerp,
            t: default_t(),
            t_gradient: Vec::new(),
            models: default_models(),
        }
    }
}
