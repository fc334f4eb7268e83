use serde::{Deserialize, Serialize};

use crate::plan::Shape;

use crate::spec::{
    DistillDataset, HiddenStatesKd, LoraSpec, OptimizerSpec, RecoveryMethod, TrainingRecipe,
};

/// `finetune`: LoRA on one pruned model with one recovery method. Inputs: `model` (the pruned
/// model), `teacher` (the imported model, when the recipe uses logit distillation) and, for
/// distilled data, `data-<name>` per distill stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinetuneParams {
    /// Block size of the pruned model.
    pub block_size: u32,
    /// The width variant this stage belongs to (`spec.pruning.widths[].name`); absent for
    /// depth-only variants. A name only: left out of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
    /// The recovery method.
    pub method: RecoveryMethod,
    /// Data and loss weights of the method.
    pub recipe: TrainingRecipe,
    /// Original data sets (recipes on original data only; distilled data comes as inputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DistillDataset>,
    /// LoRA shape.
    pub lora: LoraSpec,
    /// Optimizer and schedule.
    pub optimizer: OptimizerSpec,
    /// Softmax temperature of logit distillation (recipes with a KD term only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd_temperature: Option<f64>,
    /// Hidden-state distillation (recipes with a KD term only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kd_hidden_states: Option<HiddenStatesKd>,
    /// Train on at most this many items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<u32>,
    /// Teacher correction: this stage fine-tunes the unpruned model (input `model` is the
    /// import), whose merged result becomes the teacher.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub teacher_correction: bool,
    /// Checkpoint interval in steps (0: final adapter only). Not part of the cache key.
    #[serde(default)]
    pub checkpoint_every: u32,
}

impl FinetuneParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }

    /// Serialized fields that steer execution but not the result; left out of the cache key.
    pub const EXECUTION_ONLY_FIELDS: &'static [&'static str] = &["checkpointEvery"];
}
