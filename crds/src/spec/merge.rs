//! Merging fine-tuned models (mergekit semantics).

use std::fmt;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::recovery::RecoveryMethod;

/// What the merged models differ in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(extend("maxLength" = 16))]
pub enum MergeAcross {
    /// One fine-tuned model per recovery method in `models` (each trained on every data set).
    #[default]
    Methods,
    /// The paper's structure: `models` names one recovery method; it is fine-tuned once per
    /// distillation data set (each run on that set alone, evaluated as
    /// `<shape>-<method>-on-<dataset>`), and those fine-tunes are merged.
    Datasets,
}

impl MergeAcross {
    fn is_methods(&self) -> bool {
        *self == MergeAcross::Methods
    }
}

/// How merged weights are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
// Bounds the string for the apiserver's CEL cost estimate.
#[schemars(extend("maxLength" = 16))]
pub enum MergeMethod {
    /// Spherical linear interpolation between exactly two models (mergekit `slerp`; nearly
    /// colinear tensors fall back to linear interpolation).
    #[default]
    Slerp,
    /// Linear interpolation: two models are mixed as (1 - t)·a + t·b, more models are averaged;
    /// with `weights`, the weighted sum (divided by the sum of the weights unless `normalize`
    /// is false).
    Linear,
    /// SLERP of the two task vectors (fine-tuned model minus the pruned model) at `t`, added
    /// back to the pruned model (mergekit `nuslerp` with a base model, flattened tensors).
    Nuslerp,
    /// The pruned model plus `lambda` times the weighted sum of the task vectors (mergekit
    /// `task_arithmetic`; `normalize` divides by the sum of the weights, off by default).
    TaskArithmetic,
    /// TIES: each task vector keeps its `density` share of largest-magnitude entries, the sign
    /// of the weighted sum elects a sign per entry, only agreeing entries are summed (mergekit
    /// `ties`; `normalize`, on by default, divides by the weights of the agreeing models).
    Ties,
}

impl MergeMethod {
    /// The name as written in manifests (mergekit's method name, with `-` for `_`).
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Slerp => "slerp",
            MergeMethod::Linear => "linear",
            MergeMethod::Nuslerp => "nuslerp",
            MergeMethod::TaskArithmetic => "task-arithmetic",
            MergeMethod::Ties => "ties",
        }
    }

    /// Merges task vectors (model minus base): needs the pruned model as mergekit's
    /// `base_model`.
    pub fn uses_task_vectors(self) -> bool {
        matches!(
            self,
            MergeMethod::Nuslerp | MergeMethod::TaskArithmetic | MergeMethod::Ties
        )
    }

    /// Merges exactly two models (slerp, nuslerp).
    pub fn needs_two_models(self) -> bool {
        matches!(self, MergeMethod::Slerp | MergeMethod::Nuslerp)
    }

    /// Takes one weight per model (linear, task-arithmetic, ties).
    pub fn takes_weights(self) -> bool {
        matches!(
            self,
            MergeMethod::Linear | MergeMethod::TaskArithmetic | MergeMethod::Ties
        )
    }

    /// Scales the merged task vector by `lambda` (task-arithmetic, ties).
    pub fn takes_lambda(self) -> bool {
        matches!(self, MergeMethod::TaskArithmetic | MergeMethod::Ties)
    }

    /// Sparsifies task vectors to `density` (ties).
    pub fn takes_density(self) -> bool {
        self == MergeMethod::Ties
    }

    /// mergekit's default of `normalize`; `None` for the methods without the setting (slerp,
    /// nuslerp).
    pub fn default_normalize(self) -> Option<bool> {
        match self {
            MergeMethod::Linear | MergeMethod::Ties => Some(true),
            MergeMethod::TaskArithmetic => Some(false),
            MergeMethod::Slerp | MergeMethod::Nuslerp => None,
        }
    }
}

impl fmt::Display for MergeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Merge the fine-tuned models of each block size into one model.
///
/// slerp, nuslerp and linear without weights interpolate with `t` (0 keeps the first model,
/// 1 the second). `tGradient`, when set, replaces `t` with a mergekit gradient: its values are
/// anchors spread evenly over the layers and linearly interpolated in between. nuslerp,
/// task-arithmetic and ties merge task vectors: each fine-tuned model minus the pruned model
/// the fine-tunes started from (mergekit's `base_model`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.enabled || (has(self.across) && self.across == 'datasets') || size(self.models) >= 2").message("spec.merge.models: name at least 2 recovery methods to merge").field_path(".models"),
    validation = Rule::new("!self.enabled || (has(self.across) && self.across == 'datasets') || !(self.method in ['slerp', 'nuslerp']) || size(self.models) == 2").message("spec.merge.models: slerp and nuslerp merge exactly 2 models").field_path(".models"),
    validation = Rule::new("!has(self.across) || self.across != 'datasets' || size(self.models) == 1").message("spec.merge.models: with across: datasets, name the one recovery method whose per-data-set fine-tunes are merged").field_path(".models"),
    validation = Rule::new("!('none' in self.models)").message("spec.merge.models: `none` has no fine-tuned model to merge").field_path(".models"),
    validation = Rule::new("self.t >= 0.0 && self.t <= 1.0").message("spec.merge.t must be between 0 and 1").field_path(".t"),
    validation = Rule::new("self.tGradient.all(v, v >= 0.0 && v <= 1.0)").message("spec.merge.tGradient: every value must be between 0 and 1").field_path(".tGradient"),
    validation = Rule::new("size(self.tGradient) != 1").message("spec.merge.tGradient needs at least 2 anchors (use t for a single value)").field_path(".tGradient"),
    validation = Rule::new("size(self.weights) == 0 || self.method in ['linear', 'task-arithmetic', 'ties']").message("spec.merge.weights: only linear, task-arithmetic and ties take weights (slerp and nuslerp use t); remove weights or change spec.merge.method").field_path(".weights"),
    validation = Rule::new("size(self.weights) == 0 || (has(self.across) && self.across == 'datasets') || size(self.weights) == size(self.models)").message("spec.merge.weights: give one weight per model of spec.merge.models, in the same order").field_path(".weights"),
    validation = Rule::new("self.weights.all(w, w >= -10.0 && w <= 10.0)").message("spec.merge.weights: every weight must be between -10 and 10").field_path(".weights"),
    validation = Rule::new("self.density > 0.0 && self.density <= 1.0").message("spec.merge.density must be greater than 0 and at most 1").field_path(".density"),
    validation = Rule::new("self.density == 1.0 || self.method == 'ties'").message("spec.merge.density: only ties sparsifies the task vectors; remove density or use method ties").field_path(".density"),
    validation = Rule::new("self.lambda >= 0.0 && self.lambda <= 10.0").message("spec.merge.lambda must be between 0 and 10").field_path(".lambda"),
    validation = Rule::new("self.lambda == 1.0 || self.method in ['task-arithmetic', 'ties']").message("spec.merge.lambda: only task-arithmetic and ties scale the merged task vector; remove lambda or change spec.merge.method").field_path(".lambda"),
    validation = Rule::new("!has(self.normalize) || self.method in ['linear', 'task-arithmetic', 'ties']").message("spec.merge.normalize: only linear, task-arithmetic and ties normalise by the weights; remove normalize or change spec.merge.method").field_path(".normalize")
)]
pub struct MergeSpec {
    /// Run the merge stage.
    #[serde(default)]
    pub enabled: bool,
    /// slerp, nuslerp (exactly two models), linear, task-arithmetic or ties.
    #[serde(default)]
    pub method: MergeMethod,
    /// Interpolation factor in [0, 1] (slerp, nuslerp, linear without weights).
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
    /// `methods` (default): merge one fine-tune per method of `models`. `datasets`: merge the
    /// per-data-set fine-tunes of the one method in `models` (the paper merges two models
    /// self-distilled on different data sets).
    #[serde(default, skip_serializing_if = "MergeAcross::is_methods")]
    pub across: MergeAcross,
    /// One weight per model of `models`, in the same order, each in [-10, 10] (linear,
    /// task-arithmetic, ties); empty means 1 for every model.
    #[serde(default)]
    #[schemars(length(max = 6), inner(range(min = -10.0, max = 10.0)))]
    pub weights: Vec<f64>,
    /// ties: the share of each task vector's entries kept, the largest in magnitude, in (0, 1].
    #[serde(default = "default_one")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub density: f64,
    /// task-arithmetic, ties: the merged task vector is scaled by lambda, in [0, 10].
    #[serde(default = "default_one")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub lambda: f64,
    /// linear, task-arithmetic, ties: divide by the sum of the weights (ties: of the models
    /// whose sign agrees). Unset means mergekit's default: true for linear and ties, false for
    /// task-arithmetic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

fn default_t() -> f64 {
    0.5
}

fn default_one() -> f64 {
    1.0
}

fn default_models() -> Vec<RecoveryMethod> {
    vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill]
}

impl MergeSpec {
    /// `normalize` as the merge uses it: the setting, or the method's mergekit default (false
    /// for the methods without the setting).
    pub fn effective_normalize(&self) -> bool {
        self.normalize
            .or(self.method.default_normalize())
            .unwrap_or(false)
    }
}

impl Default for MergeSpec {
    fn default() -> Self {
        MergeSpec {
            enabled: false,
            method: MergeMethod::Slerp,
            t: default_t(),
            t_gradient: Vec::new(),
            models: default_models(),
            across: MergeAcross::Methods,
            weights: Vec::new(),
            density: default_one(),
            lambda: default_one(),
            normalize: None,
        }
    }
}
