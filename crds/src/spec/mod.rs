//! The `PruneDistillJob` custom resource and its spec, one section per file.

pub mod calibration;
pub mod compute;
pub mod dataset;
pub mod distillation;
pub mod evaluation;
pub mod merge;
pub mod model;
pub mod preference;
pub mod pruning;
pub mod recovery;
pub mod runner;
pub mod speculative;
pub mod storage;
pub mod width;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use calibration::CalibrationSpec;
pub use compute::{ComputeDevice, ComputeDtype, ComputeSpec, ResolvedCompute};
pub use dataset::{DatasetFormat, DatasetRef, FieldMapping};
pub use distillation::{
    AnswerCheck, DataKind, DistillDataset, DistillationSpec, GenerationSpec, PromptTemplate,
};
pub use evaluation::{
    DriftSpec, EvalPreset, EvalTask, EvalTaskName, EvaluationSpec, MainMetric, OutputType, TaskDef,
    UnknownTask, ANSWER_NLL_FIRST_RECORD,
};
pub use merge::{MergeAcross, MergeMethod, MergeSpec};
pub use model::{DType, ModelFormat, ModelSource, ModelSpec};
pub use preference::{DpoSpec, PreferenceDataset, PreferenceLoss, PreferenceSpec, SpinSpec};
pub use pruning::{PruningSpec, ScoreMetric};
pub use recovery::{
    BaseQuantization, HiddenStatesKd, KdSpec, LoraSpec, LoraTarget, OptimizerSpec, RecoveryMethod,
    RecoverySpec, TeacherCorrectionSpec, TrainingData, TrainingRecipe,
};
pub use runner::{GpuSpec, PullPolicy, RunnerSpec, DEFAULT_GPU_RESOURCE};
pub use speculative::{DraftModel, SpeculativeSpec};
pub use storage::{Retention, StorageSpec};
pub use width::{Reduce, WidthAggregation, WidthSize, WidthTargets, WidthVariant};

use crate::status::PruneDistillJobStatus;

/// A depth-pruning job: score the layers of a model, drop the least important block for each
/// block size, win the quality back with self-data distillation and LoRA fine-tuning, merge,
/// evaluate and measure speculative decoding.
// clippy::duplicated_attributes misreads the repeated `type_ = "string"` of printcolumn(...).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "pruneforge.dev",
    version = "v1alpha1",
    kind = "PruneDistillJob",
    namespaced,
    shortname = "pdj",
    category = "pruneforge",
    status = "PruneDistillJobStatus",
    doc = "PruneDistillJob prunes contiguous layer blocks from a Llama-family model and recovers its quality with self-data distillation, LoRA fine-tuning and model merging.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded or Failed"
    ),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.currentStage",
        description = "Stage(s) running now"
    ),
    printcolumn(
        name = "Pruned",
        type_ = "string",
        json_path = ".status.prunedBlocks",
        description = "Dropped layer blocks, first-last (0-based, inclusive)"
    ),
    printcolumn(
        name = "Recovery",
        type_ = "number",
        json_path = ".status.bestRecovery.percent",
        description = "Best recovery % (pruned or recovered average / base average)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // The name is copied into label values (`pruneforge.dev/job` on every Job, Pod and
    // ConfigMap of the job), which are at most 63 characters: a longer name would make every
    // create fail with 422.
    validation = Rule::new("!has(self.metadata.name) || size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it is copied into the pruneforge.dev/job label of the job's Jobs, Pods and ConfigMaps)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!self.recovery.methods.exists(m, m.startsWith('self-distill')) || size(self.distillation.datasets) > 0").message("spec.distillation.datasets: self-distill needs at least one data set to distill").field_path(".distillation.datasets"),
    validation = Rule::new("!self.recovery.methods.exists(m, m == 'sft' || m.contains('logit-kd')) || size(self.distillation.datasets) > 0").message("spec.distillation.datasets: sft and logit-kd train on spec.distillation.datasets; add at least one data set").field_path(".distillation.datasets"),
    validation = Rule::new("!self.merge.enabled || self.merge.models.all(m, m in self.recovery.methods)").message("spec.merge.models: every merged model must also be listed in spec.recovery.methods").field_path(".merge.models"),
    validation = Rule::new("!self.speculative.enabled || self.speculative.draft != 'merged' || self.merge.enabled").message("spec.speculative.draft: merged needs spec.merge.enabled").field_path(".speculative.draft")
)]
pub struct PruneDistillJobSpec {
    /// Model to prune (default: the embedded SmolLM2-135M-Instruct).
    #[serde(default)]
    pub model: ModelSpec,
    /// Calibration text for layer scoring.
    #[serde(default)]
    pub calibration: CalibrationSpec,
    /// Scoring metric, block sizes and excluded layers.
    #[serde(default)]
    pub pruning: PruningSpec,
    /// Self-data distillation (also the SFT data sets).
    #[serde(default)]
    pub distillation: DistillationSpec,
    /// Recovery methods, LoRA and optimizer.
    #[serde(default)]
    pub recovery: RecoverySpec,
    /// Merging of the fine-tuned models.
    #[serde(default)]
    pub merge: MergeSpec,
    /// Benchmarks and drift.
    #[serde(default)]
    pub evaluation: EvaluationSpec,
    /// Speculative decoding with a pruned draft or an 8-bit copy of the base.
    #[serde(default)]
    pub speculative: SpeculativeSpec,
    /// Pod settings of stage Jobs (never part of a cache key).
    #[serde(default)]
    pub runner: RunnerSpec,
    /// Device and precision of the model-computing stages.
    #[serde(default)]
    pub compute: ComputeSpec,
    /// Artifact storage.
    pub storage: StorageSpec,
    /// Stages that may run at the same time.
    #[serde(default = "default_max_parallel_stages")]
    #[schemars(range(min = 1, max = 64))]
    pub max_parallel_stages: u32,
}

fn default_max_parallel_stages() -> u32 {
    2
}

impl PruneDistillJobSpec {
    /// A spec with every section at its default and the given storage root.
    pub fn with_storage(uri: impl Into<String>) -> Self {
        PruneDistillJobSpec {
            model: ModelSpec::default(),
            calibration: CalibrationSpec::default(),
            pruning: PruningSpec::default(),
            distillation: DistillationSpec::default(),
            recovery: RecoverySpec::default(),
            merge: MergeSpec::default(),
            evaluation: EvaluationSpec::default(),
            speculative: SpeculativeSpec::default(),
            runner: RunnerSpec::default(),
            compute: ComputeSpec::default(),
            storage: StorageSpec::new(uri),
            max_parallel_stages: default_max_parallel_stages(),
        }
    }
}
