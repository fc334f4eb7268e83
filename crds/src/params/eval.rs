use serde::{Deserialize, Serialize};

use crate::spec::{DriftSpec, EvalTask};

/// `eval`: benchmark one model. Inputs: `model`; for a variant also `base-eval` (the base
/// model's eval) and `base` (the imported model) when drift is measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalParams {
    /// Tasks, sorted by name.
    pub tasks: Vec<EvalTask>,
    /// Seed for few-shot sampling.
    pub seed: u32,
    /// Sequences scored together.
    pub batch_size: u32,
    /// Drift settings; `None` when drift is disabled. The base model's eval computes the base
    /// responses with them; a variant's eval measures its drift against those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
}
