//! Per-stage status entries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::{StageInstance, StageKind};

/// Longest `message` kept in a stage status entry; the operator trims longer messages.
pub const STAGE_MESSAGE_MAX: usize = 1024;

/// Phase of one stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StagePhase {
    /// Waiting for its dependencies or a free slot.
    #[default]
    Pending,
    /// Its Job is running.
    Running,
    /// Finished; its artifacts are in storage.
    Succeeded,
    /// Failed after its retries.
    Failed,
    /// Not run because its artifacts were already in storage (same cache key).
    Skipped,
}

impl StagePhase {
    /// Whether the stage's output is available to its dependents.
    pub fn is_done(self) -> bool {
        matches!(self, StagePhase::Succeeded | StagePhase::Skipped)
    }
}

/// Status of one planned stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Stage id, e.g. `prune-n6` or `eval-n6-self-distill`.
    pub id: String,
    /// Stage kind.
    pub kind: StageKind,
    /// Content-addressed cache key (sha256 hex).
    pub key: String,
    /// Pending, Running, Succeeded, Failed or Skipped.
    #[serde(default)]
    pub phase: StagePhase,
    /// Pod attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the stage's Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the stage finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Short human-readable message (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Name of the stage's Kubernetes Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// URI of the stage's `result.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_uri: Option<String>,
}

impl StageStatus {
    /// The initial (Pending) entry of a planned stage.
    pub fn pending(stage: &StageInstance) -> Self {
        StageStatus {
            id: stage.id.to_string(),
            kind: stage.kind(),
            key: stage.key.clone(),
            phase: StagePhase::Pending,
            attempts: 0,
            start_time: None,
            completion_time: None,
            message: None,
            job_name: None,
            result_uri: None,
        }
    }
}
