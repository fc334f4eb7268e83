use serde::{Deserialize, Serialize};

use crate::spec::{DriftSpec, EvalTask};

/// `eval`: benchmark one model. Inputs: `model`, and `base` (the imported model) when drift is
/// measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvalParams {
    /// Tasks, sorted by name.
    pub tasks: Vec<EvalTask>,
    /// Seed for few-shot sampling.
    pub seed: u32,
    /// Sequences scored together.
    pub batch_size: u32,
    /// Drift settings; `None` for the base model or when drift is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
}
