//! The result a runner reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ContractError, ShardRef, StageRequest, StageSummary, CONTRACT_VERSION};
use crate::plan::StageId;

/// How a stage ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Artifacts written.
    Succeeded,
    /// The stage failed; `message` says why.
    Failed,
}

/// The outcome of one stage (or one shard of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageResult {
    /// [`CONTRACT_VERSION`].
    pub contract_version: u32,
    /// Stage id.
    pub stage_id: StageId,
    /// Cache key of the stage.
    pub key: String,
    /// succeeded or failed.
    pub outcome: Outcome,
    /// Human-readable detail (the error for failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Compact per-kind summary (successes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<StageSummary>,
    /// Artifact name → URI (e.g. `model`, `adapter`, `scores`, `result`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
    /// Wall-clock seconds the stage ran.
    #[serde(with = "super::float")]
    pub duration_seconds: f64,
    /// The shard this result covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRef>,
    /// Set when parts were dropped to fit a termination message; the full result is in
    /// `<output uri>/result.json`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Where the stage computed (model-computing stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ComputeReport>,
}

/// Where a stage computed and how much device memory it took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeReport {
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// GPU name as the driver reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_name: Option<String>,
    /// Peak memory in use on the GPU while the stage ran (the driver's view: includes the CUDA
    /// context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_device_memory_bytes: Option<u64>,
    /// Peak resident memory of the runner process (Linux `VmHWM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_host_memory_bytes: Option<u64>,
}

impl StageResult {
    /// A successful result for `request`.
    pub fn succeeded(
        request: &StageRequest,
        summary: StageSummary,
        artifacts: BTreeMap<String, String>,
        duration_seconds: f64,
    ) -> Self {
        StageResult {
            contract_version: CONTRACT_VERSION,
            stage_id: request.stage_id.clone(),
            key: request.key.clone(),
            outcome: Outcome::Succeeded,
            message: None,
            summary: Some(summary),
            artifacts,
            duration_seconds,
            shard: request.shard,
            truncated: false,
            compute: None,
        }
    }

    /// A failed result for `request`.
    pub fn failed(
        request: &StageRequest,
        message: impl Into<String>,
        duration_seconds: f64,
    ) -> Self {
        StageResult {
            contract_version: CONTRACT_VERSION,
            stage_id: request.stage_id.clone(),
            key: request.key.clone(),
            outcome: Outcome::Failed,
            message: Some(message.into()),
            summary: None,
            artifacts: BTreeMap::new(),
            duration_seconds,
            shard: request.shard,
            truncated: false,
            compute: None,
        }
    }

    /// Whether the stage succeeded.
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Succeeded
    }

    /// Compact JSON (the full form, as written to `result.json`).
    pub fn to_json(&self) -> String {
        // Strings, numbers, maps and lists always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a result (full or termination-message form) and checks its contract version.
    pub fn from_json(json: &str) -> Result<Self, ContractError> {
        let result: StageResult =
            serde_json::from_str(json.trim()).map_err(|source| ContractError::Json {
                what: "stage result",
                source,
            })?;
        if result.contract_version != CONTRACT_VERSION {
            return Err(ContractError::Version {
                found: result.contract_version,
                expected: CONTRACT_VERSION,
            });
        }
        Ok(result)
    }
}
