//! Stage ids.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::spec::RecoveryMethod;

/// Stable id of a stage instance within a plan, e.g. `import`, `score`, `prune-n6`,
/// `distill-gsm8k`, `finetune-n6-self-distill`, `merge-n6`, `eval-base`, `eval-n6`,
/// `eval-n6-sft`, `eval-n6-merged`, `speculate-n6`. Ids are lowercase DNS labels, so they can be
/// part of Kubernetes object names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageId(String);

impl StageId {
    /// `import`.
    pub fn import() -> Self {
        StageId("import".into())
    }

    /// `score`.
    pub fn score() -> Self {
        StageId("score".into())
    }

    /// `prune-n<n>`.
    pub fn prune(n: u32) -> Self {
        StageId(format!("prune-n{n}"))
    }

    /// `distill-<dataset name>`.
    pub fn distill(dataset: &str) -> Self {
        StageId(format!("distill-{dataset}"))
    }

    /// `finetune-n<n>-<method slug>`.
    pub fn finetune(n: u32, method: RecoveryMethod) -> Self {
        StageId(format!("finetune-n{n}-{}", method.slug()))
    }

    /// `finetune-n<n>-sft-seed<seed>`: the noise-floor control of the `sft` arm.
    pub fn finetune_control(n: u32, seed: u32) -> Self {
        StageId(format!("finetune-{}", variant::control(n, seed)))
    }

    /// `merge-n<n>`.
    pub fn merge(n: u32) -> Self {
        StageId(format!("merge-n{n}"))
    }

    /// `eval-<variant>`, e.g. `eval-base`, `eval-n6`, `eval-n6-sft`, `eval-n6-merged`.
    pub fn eval(variant: &str) -> Self {
        StageId(format!("eval-{variant}"))
    }

    /// `speculate-n<n>`.
    pub fn speculate(n: u32) -> Self {
        StageId(format!("speculate-n{n}"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StageId {
    fn from(s: &str) -> Self {
        StageId(s.to_string())
    }
}

impl AsRef<str> for StageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Variant names used in eval stage ids and in the status.
pub mod variant {
    use crate::spec::RecoveryMethod;

    /// The unpruned model.
    pub const BASE: &str = "base";

    /// The pruned model without recovery: `n6`.
    pub fn pruned(n: u32) -> String {
        format!("n{n}")
    }

    /// A fine-tuned model: `n6-self-distill`.
    pub fn finetuned(n: u32, method: RecoveryMethod) -> String {
        format!("n{n}-{}", method.slug())
    }

    /// The `sft` arm trained again with another seed (the noise-floor control): `n6-sft-seed7`.
    pub fn control(n: u32, seed: u32) -> String {
        format!("n{n}-sft-seed{seed}")
    }

    /// A merged model: `n6-merged`.
    pub fn merged(n: u32) -> String {
        format!("n{n}-merged")
    }
}
