//! The request a runner pod receives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ContractError, CONTRACT_VERSION};
use crate::params::StageParams;
use crate::plan::{Plan, StageId, StageKind};
use crate::spec::ResolvedCompute;

/// The job a stage belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRef {
    /// `metadata.name` of the PruneDistillJob (or the job file's name for local runs).
    pub name: String,
    /// Namespace; absent for local runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One input artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInput {
    /// Producing stage.
    pub stage_id: StageId,
    /// Its cache key.
    pub key: String,
    /// Its artifact URI.
    pub uri: String,
}

/// Which part of a sharded stage a pod runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardRef {
    /// 0-based shard index (the Indexed Job's completion index).
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

/// Everything a runner needs to run one stage. Serialized as
/// `{"contractVersion":1,"job":{..},"stageId":"prune-n6","kind":"prune","params":{..},"key":"..",
/// "inputs":{..},"outputUri":"..","shard":{..}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRequest {
    /// [`CONTRACT_VERSION`].
    pub contract_version: u32,
    /// The job.
    pub job: JobRef,
    /// Stage id.
    pub stage_id: StageId,
    /// Stage kind (`kind`) and its typed parameters (`params`).
    #[serde(flatten)]
    pub params: StageParams,
    /// Cache key of the stage.
    pub key: String,
    /// Input name → artifact.
    pub inputs: BTreeMap<String, StageInput>,
    /// Where the stage writes its artifacts (ends with `/`).
    pub output_uri: String,
    /// The shard this pod runs; absent for unsharded stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRef>,
    /// Device and dtype of a model-computing stage; absent means the CPU in f32 (and for
    /// import, prune and merge, which stream tensors on the CPU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<ResolvedCompute>,
}

impl StageRequest {
    /// The request for stage `id` of `plan`. Sharded stages get shard 0 of n; use
    /// [`StageRequest::for_shard`] for the others.
    pub fn from_plan(plan: &Plan, id: &str, job: JobRef) -> Result<Self, ContractError> {
        let stage = plan
            .get(id)
            .ok_or_else(|| ContractError::UnknownStage(id.to_string()))?;
        let mut inputs = BTreeMap::new();
        for (name, dep) in &stage.inputs {
            let producer = plan
                .get(dep.as_str())
                .ok_or_else(|| ContractError::UnknownStage(dep.to_string()))?;
            inputs.insert(
                name.clone(),
                StageInput {
                    stage_id: producer.id.clone(),
                    key: producer.key.clone(),
                    uri: producer.artifact_uri.clone(),
                },
            );
        }
        Ok(StageRequest {
            contract_version: CONTRACT_VERSION,
            job,
            stage_id: stage.id.clone(),
            params: stage.params.clone(),
            key: stage.key.clone(),
            inputs,
            output_uri: stage.artifact_uri.clone(),
            shard: (stage.shards > 1).then_some(ShardRef {
                index: 0,
                count: stage.shards,
            }),
            compute: (stage.kind().computes_with_model() && !plan.compute.is_cpu_f32())
                .then_some(plan.compute),
        })
    }

    /// The same request for shard `index`.
    pub fn for_shard(&self, index: u32) -> Result<Self, ContractError> {
        let count = self.shard.map_or(1, |s| s.count);
        if index >= count {
            return Err(ContractError::ShardOutOfRange {
                stage: self.stage_id.to_string(),
                index,
                count,
            });
        }
        let mut out = self.clone();
        if count > 1 {
            out.shard = Some(ShardRef { index, count });
        }
        Ok(out)
    }

    /// The stage kind.
    pub fn kind(&self) -> StageKind {
        self.params.kind()
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers, maps and lists always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a request and checks its contract version.
    pub fn from_json(json: &str) -> Result<Self, ContractError> {
        let request: StageRequest =
            serde_json::from_str(json).map_err(|source| ContractError::Json {
                what: "stage request",
                source,
            })?;
        if request.contract_version != CONTRACT_VERSION {
            return Err(ContractError::Version {
                found: request.contract_version,
                expected: CONTRACT_VERSION,
            });
        }
        Ok(request)
    }
}
