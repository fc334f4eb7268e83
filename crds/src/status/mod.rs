//! The status the operator writes. It stays bounded: artifact URIs and compact summaries only;
//! full results live in object storage.

pub mod results;
pub mod stage;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use results::{
    BestRecovery, EvaluationStatus, LayerScoreStatus, ModelArtifactStatus, SpeculativeStatus,
};
pub use stage::{StagePhase, StageStatus};

/// kstatus condition: the job finished and all its results are in the status.
pub const CONDITION_READY: &str = "Ready";
/// kstatus condition: the operator is working towards the desired state.
pub const CONDITION_RECONCILING: &str = "Reconciling";
/// kstatus condition: the job cannot make progress without a change (failed stage, bad spec).
pub const CONDITION_STALLED: &str = "Stalled";

/// Overall phase of a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobPhase {
    /// Accepted, no stage started yet.
    #[default]
    Pending,
    /// At least one stage is running or ready to run.
    Running,
    /// Every stage succeeded or was skipped.
    Succeeded,
    /// A stage failed after its retries.
    Failed,
}

/// Observed state of a `PruneDistillJob`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneDistillJobStatus {
    /// kstatus conditions: Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<JobPhase>,
    /// Ids of the running stages, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<String>,
    /// Dropped blocks as `first-last` (0-based, inclusive), comma-separated per block size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_blocks: Option<String>,
    /// One entry per planned stage, in plan order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// Chosen block per block size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layer_scores: Vec<LayerScoreStatus>,
    /// Pruned models (no recovery), one per block size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned_models: Vec<ModelArtifactStatus>,
    /// LoRA adapters, one per block size and recovery method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adapters: Vec<ModelArtifactStatus>,
    /// Merged models, one per block size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_models: Vec<ModelArtifactStatus>,
    /// Benchmark results per model variant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations: Vec<EvaluationStatus>,
    /// Speculative decoding results per block size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub speculative: Vec<SpeculativeStatus>,
    /// The variant with the highest recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_recovery: Option<BestRecovery>,
}
