//! Preference fine-tuning after recovery: DPO on preference pairs from a data set
//! (OpenBezoar's last stage) and SPIN self-play (Chen et al. 2024), whose pairs are the data
//! set's answers against the model's own.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::recovery::RecoveryMethod;

/// The loss over the policy-against-reference log-ratio margin
/// `h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))` of a pair (chosen `c`,
/// rejected `r`), as TRL's `DPOTrainer` defines it.
///
/// | loss | per pair |
/// |---|---|
/// | `sigmoid` | `−(1 − ε)·log σ(β h) − ε·log σ(−β h)` (DPO; conservative DPO with label smoothing ε > 0) |
/// | `hinge` | `max(0, 1 − β h)` (SLiC; SPIN's hinge variant) |
/// | `ipo` | `(h − 1/(2β))²` with log-probabilities averaged over answer tokens (IPO) |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[schemars(extend("maxLength" = 16))]
pub enum PreferenceLoss {
    #[default]
    Sigmoid,
    Hinge,
    Ipo,
}

impl PreferenceLoss {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            PreferenceLoss::Sigmoid => "sigmoid",
            PreferenceLoss::Hinge => "hinge",
            PreferenceLoss::Ipo => "ipo",
        }
    }

    /// Whether sequence log-probabilities are averaged over answer tokens (IPO) instead of
    /// summed.
    pub fn averages_tokens(self) -> bool {
        self == PreferenceLoss::Ipo
    }
}

/// A data set of preference pairs, JSONL. Either TRL's explicit layout, `{prompt, chosen,
/// rejected}` with plain-text answers, or Anthropic HH-RLHF's, `{chosen, rejected}` where each
/// is a whole dialogue (`\n\nHuman: …\n\nAssistant: …`) and the two differ only in the last
/// assistant turn.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::uri::cel_scheme_rule("self.uri")).message(format!("spec.recovery.preference.dpo.dataset.uri: only the schemes {} are supported (or a plain path)", crate::uri::schemes_prose().replace(" or ", " and ")).as_str()).field_path(".uri")
)]
pub struct PreferenceDataset {
    /// Location: a path, or a file://, s3://, gs:// or az:// URI.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
    /// Use at most this many pairs (after `offset`); unset means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub limit: Option<u32>,
    /// Skip this many pairs first.
    #[serde(default)]
    #[schemars(range(max = 10000000))]
    pub offset: u32,
}

/// DPO on preference pairs from a data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DpoSpec {
    /// The preference pairs.
    pub dataset: PreferenceDataset,
    /// β: how far the policy may move from the reference (the model it starts from).
    #[serde(default = "default_beta")]
    #[schemars(range(min = 0.0001, max = 100.0))]
    pub beta: f64,
    /// The loss over the log-ratio margin.
    #[serde(default)]
    pub loss: PreferenceLoss,
    /// Conservative DPO: the share ε of pairs assumed mislabelled (`sigmoid` only).
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub label_smoothing: f64,
}

/// SPIN: each iteration samples the current model's answers to the prompts of
/// `spec.distillation.datasets` (with `spec.distillation.generation`), pairs each data-set answer
/// (chosen) with the model's own (rejected) and trains against the previous iteration as the
/// reference. One stage per iteration, so a longer run reuses the earlier iterations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpinSpec {
    /// Self-play iterations.
    #[serde(default = "default_iterations")]
    #[schemars(range(min = 1, max = 8))]
    pub iterations: u32,
    /// β of the SPIN loss.
    #[serde(default = "default_beta")]
    #[schemars(range(min = 0.0001, max = 100.0))]
    pub beta: f64,
    /// `sigmoid` (SPIN's default, the logistic loss) or `hinge`.
    #[serde(default)]
    pub loss: PreferenceLoss,
    /// Prompts per iteration (the first of each data set's records); unset: all the records
    /// fine-tuning uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub prompts: Option<u32>,
}

/// Preference stages after recovery fine-tuning: a LoRA on the fine-tuned (merged) model,
/// trained with a preference loss against that model as the reference, merged again and
/// evaluated as variant `n<N>-<method>-dpo` or `n<N>-<method>-spin<k>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.dpo) || has(self.spin)").message("spec.recovery.preference: set dpo, spin or both"),
    validation = Rule::new("!has(self.dpo) || self.dpo.loss != 'ipo' || self.dpo.labelSmoothing == 0.0").message("spec.recovery.preference.dpo.labelSmoothing applies to the sigmoid and hinge losses only").field_path(".dpo.labelSmoothing"),
    validation = Rule::new("!has(self.spin) || self.spin.loss != 'ipo'").message("spec.recovery.preference.spin.loss: SPIN uses sigmoid or hinge").field_path(".spin.loss")
)]
pub struct PreferenceSpec {
    /// Recovery methods whose fine-tuned models go on to the preference stages.
    #[serde(default = "default_after")]
    #[schemars(length(min = 1, max = 6))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub after: Vec<RecoveryMethod>,
    /// DPO on a preference data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpo: Option<DpoSpec>,
    /// SPIN self-play.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spin: Option<SpinSpec>,
    /// Optimizer steps per stage (per SPIN iteration); default `spec.recovery.optimizer.steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub steps: Option<u32>,
    /// Peak learning rate; default `spec.recovery.optimizer.learningRate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub learning_rate: Option<f64>,
}

fn default_beta() -> f64 {
    0.1
}

fn default_iterations() -> u32 {
    2
}

fn default_after() -> Vec<RecoveryMethod> {
    vec![RecoveryMethod::Sft]
}
