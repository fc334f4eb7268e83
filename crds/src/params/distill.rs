use serde::{Deserialize, Serialize};

use crate::spec::{AnswerCheck, DistillDataset, GenerationSpec, PromptTemplate};

/// `distill`: the unpruned model rewrites every answer of `dataset`; rewrites failing the answer
/// check fall back to the original. Input `model`: the imported (unpruned) model. Sharded: shard
/// i of n handles the records with index % n == i; the reader gathers the shard files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DistillParams {
    /// The data set to rewrite.
    pub dataset: DistillDataset,
    /// Rewrite prompt.
    pub template: PromptTemplate,
    /// Which rewrites are kept.
    pub answer_check: AnswerCheck,
    /// Sampling settings.
    pub generation: GenerationSpec,
}
