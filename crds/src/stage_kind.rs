//! Stage kinds.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a stage does. Each kind is one runner subcommand.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// Model source to canonical Hugging Face directory.
    Import,
    /// Layer importance scores.
    Score,
    /// Drop one block of layers.
    Prune,
    /// Self-data distillation of one data set.
    Distill,
    /// LoRA fine-tuning of one pruned model.
    Finetune,
    /// SPIN's generation: a model's own answers to the SFT prompts (sharded like distill).
    SelfPlay,
    /// Preference training (DPO, SPIN) of one fine-tuned model.
    Prefer,
    /// Merge fine-tuned models.
    Merge,
    /// Benchmarks of one model.
    Eval,
    /// Speculative decoding.
    Speculate,
}

impl StageKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StageKind; 10] = [
        StageKind::Import,
        StageKind::Score,
        StageKind::Prune,
        StageKind::Distill,
        StageKind::Finetune,
        StageKind::SelfPlay,
        StageKind::Prefer,
        StageKind::Merge,
        StageKind::Eval,
        StageKind::Speculate,
    ];

    /// Whether the stage runs the model (and so honours `spec.compute`): score, distill,
    /// finetune, self-play, prefer, eval and speculate. Import, prune and merge stream tensors on the CPU.
    pub fn computes_with_model(self) -> bool {
        matches!(
            self,
            StageKind::Score
                | StageKind::Distill
                | StageKind::Finetune
                | StageKind::SelfPlay
                | StageKind::Prefer
                | StageKind::Eval
                | StageKind::Speculate
        )
    }

    /// The kind's name, as in JSON, artifact paths and runner subcommands.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Import => "import",
            StageKind::Score => "score",
            StageKind::Prune => "prune",
            StageKind::Distill => "distill",
            StageKind::Finetune => "finetune",
            StageKind::SelfPlay => "self-play",
            StageKind::Prefer => "prefer",
            StageKind::Merge => "merge",
            StageKind::Eval => "eval",
            StageKind::Speculate => "speculate",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
