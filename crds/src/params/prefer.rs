use serde::{Deserialize, Serialize};

use crate::plan::Shape;
use crate::spec::{LoraSpec, OptimizerSpec, PreferenceDataset, PreferenceLoss, RecoveryMethod};

/// `prefer`: a LoRA on a fine-tuned model trained with a preference loss against that model as
/// the reference, then merged. Input `model`: the fine-tune it continues (its `merged/`), or
/// for SPIN iteration k > 1 the stage of iteration k − 1; for SPIN also `pairs`, the
/// iteration's `self-play` stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferParams {
    /// Block size of the pruned model.
    pub block_size: u32,
    /// The width variant (a name only: left out of the cache key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_variant: Option<String>,
    /// The recovery method whose fine-tuned model this stage continues.
    pub after: RecoveryMethod,
    /// Where the pairs come from.
    pub pairs: PreferencePairs,
    /// β of the loss.
    pub beta: f64,
    /// The loss over the log-ratio margin.
    pub loss: PreferenceLoss,
    /// Conservative DPO's ε.
    #[serde(default)]
    pub label_smoothing: f64,
    /// LoRA shape.
    pub lora: LoraSpec,
    /// Optimizer and schedule (`batchSize` counts pairs).
    pub optimizer: OptimizerSpec,
    /// Checkpoint interval in steps (0: none). Not part of the cache key.
    #[serde(default)]
    pub checkpoint_every: u32,
}

/// The pairs of a `prefer` stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PreferencePairs {
    /// DPO: pairs read from a data set.
    #[serde(rename_all = "camelCase")]
    Dataset { dataset: PreferenceDataset },
    /// SPIN iteration `iteration` (1-based): the pairs of input `pairs`, the `self-play`
    /// stage of this iteration (the data sets' answers chosen, the input model's own rejected).
    #[serde(rename_all = "camelCase")]
    SelfPlay { iteration: u32 },
}

impl PreferParams {
    /// The pruned model this stage derives from.
    pub fn shape(&self) -> Shape {
        Shape {
            block_size: self.block_size,
            width: self.width_variant.clone(),
        }
    }

    /// Serialized fields that steer execution but not the result; left out of the cache key.
    pub const EXECUTION_ONLY_FIELDS: &'static [&'static str] = &["checkpointEvery"];

    /// The variant's preference suffix: `dpo` or `spin<k>`.
    pub fn suffix(&self) -> String {
        match &self.pairs {
            PreferencePairs::Dataset { .. } => "dpo".into(),
            PreferencePairs::SelfPlay { iteration, .. } => format!("spin{iteration}"),
        }
    }
}
