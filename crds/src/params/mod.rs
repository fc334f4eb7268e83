//! Resolved stage parameters: for each stage kind, exactly the parts of the spec that affect the
//! stage's output. They are hashed into the stage's cache key (see [`crate::plan::key`]) and sent
//! to the runner in the [`crate::contract::StageRequest`].

mod distill;
mod eval;
mod finetune;
mod import;
mod merge;
mod prefer;
mod prune;
mod score;
mod self_play;
mod speculate;

use serde::{Deserialize, Serialize};

pub use distill::DistillParams;
pub use eval::EvalParams;
pub use finetune::FinetuneParams;
pub use import::ImportParams;
pub use merge::MergeParams;
pub use prefer::{PreferParams, PreferencePairs};
pub use prune::PruneParams;
pub use score::ScoreParams;
pub use self_play::SelfPlayParams;
pub use speculate::SpeculateParams;

use crate::stage_kind::StageKind;

/// Marks the cache material of a score stage whose calibration records are read with their
/// format, offset and limit honoured where older runners read them otherwise (see
/// [`ScoreParams::calibration_reads_records_differently`]).
pub const CALIBRATION_RECORDS_FIELD: &str = "calibrationReadAsRecords";

/// The name of a stage's width variant: names the stage, never enters its cache key (renaming
/// a variant reuses its artifacts).
pub const WIDTH_VARIANT_FIELD: &str = "widthVariant";

/// Parameters of one stage, tagged by kind. Serialized as `{"kind": "...", "params": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "kebab-case")]
pub enum StageParams {
    /// Model source to canonical Hugging Face directory.
    Import(ImportParams),
    /// Layer importance scores.
    Score(ScoreParams),
    /// Drop one block.
    Prune(PruneParams),
    /// Rewrite one data set's answers with the unpruned model.
    Distill(DistillParams),
    /// LoRA fine-tune one pruned model with one recovery method.
    Finetune(FinetuneParams),
    /// One SPIN iteration's generation: the model's own answers to the SFT prompts.
    SelfPlay(SelfPlayParams),
    /// Preference-train one fine-tuned model (DPO, one SPIN iteration).
    Prefer(PreferParams),
    /// Merge the fine-tuned models of one block size.
    Merge(MergeParams),
    /// Benchmark one model.
    Eval(EvalParams),
    /// Speculative decoding with one draft.
    Speculate(SpeculateParams),
}

impl StageParams {
    /// The stage kind these parameters belong to.
    pub fn kind(&self) -> StageKind {
        match self {
            StageParams::Import(_) => StageKind::Import,
            StageParams::Score(_) => StageKind::Score,
            StageParams::Prune(_) => StageKind::Prune,
            StageParams::Distill(_) => StageKind::Distill,
            StageParams::Finetune(_) => StageKind::Finetune,
            StageParams::SelfPlay(_) => StageKind::SelfPlay,
            StageParams::Prefer(_) => StageKind::Prefer,
            StageParams::Merge(_) => StageKind::Merge,
            StageParams::Eval(_) => StageKind::Eval,
            StageParams::Speculate(_) => StageKind::Speculate,
        }
    }

    /// The JSON hashed into the cache key: the parameters without the fields that only steer
    /// execution (e.g. `checkpointEvery`).
    pub fn cache_material(&self) -> serde_json::Value {
        let mut value = match self {
            StageParams::Import(p) => serde_json::to_value(p),
            StageParams::Score(p) => serde_json::to_value(p),
            StageParams::Prune(p) => serde_json::to_value(p),
            StageParams::Distill(p) => serde_json::to_value(p),
            StageParams::Finetune(p) => serde_json::to_value(p),
            StageParams::SelfPlay(p) => serde_json::to_value(p),
            StageParams::Prefer(p) => serde_json::to_value(p),
            StageParams::Merge(p) => serde_json::to_value(p),
            StageParams::Eval(p) => serde_json::to_value(p),
            StageParams::Speculate(p) => serde_json::to_value(p),
        }
        // Plain structs of strings, numbers and lists always serialize.
        .unwrap_or(serde_json::Value::Null);
        if let Some(obj) = value.as_object_mut() {
            obj.remove(WIDTH_VARIANT_FIELD);
        }
        match (self, value.as_object_mut()) {
            (StageParams::Finetune(_), Some(obj)) => {
                for field in FinetuneParams::EXECUTION_ONLY_FIELDS {
                    obj.remove(*field);
                }
            }
            (StageParams::Prefer(_), Some(obj)) => {
                for field in PreferParams::EXECUTION_ONLY_FIELDS {
                    obj.remove(*field);
                }
            }
            (StageParams::Score(p), Some(obj)) if p.calibration_reads_records_differently() => {
                obj.insert(
                    CALIBRATION_RECORDS_FIELD.into(),
                    serde_json::Value::Bool(true),
                );
            }
            _ => {}
        }
        value
    }
}
