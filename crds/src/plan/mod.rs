//! The stage plan: a DAG of stage instances derived from a spec by a pure function.
//!
//! Stages, in plan (topological) order:
//!
//! | id | kind | inputs |
//! |---|---|---|
//! | `import` | import | — |
//! | `score` | score | `model` = import |
//! | `prune-n<n>` per block size | prune | `model` = import, `scores` = score (unless `pruning.start`) |
//! | `distill-<name>` per data set (when a method trains on distilled data) | distill | `model` = import |
//! | `finetune-n<n>-<method>` per block size × method ≠ none | finetune | `model` = prune-n<n>, `teacher` = import (KD), `data-<name>` = distill-<name> (distilled data) |
//! | `merge-n<n>` per block size (merge enabled) | merge | `base` = prune-n<n>, `model-<i>` = finetune-n<n>-<models[i]> |
//! | `eval-base`, `eval-n<n>` (method none), `eval-n<n>-<method>`, `eval-n<n>-merged` | eval | `model`, `base` = import (drift) |
//! | `speculate-n<n>` per block size (speculative enabled, draft pruned or merged) | speculate | `target` = import, `draft` = prune-n<n> or merge-n<n> |
//! | `speculate-int8` once (speculative enabled, draft int8) | speculate | `target` = `draft` = import |
//!
//! Every stage gets a content-addressed cache key ([`key::cache_key`]) over its kind, its
//! parameters and its inputs' keys, and an artifact path `<storage>/<kind>/<16 hex of key>/`.

mod build;
mod error;
mod id;
pub mod key;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use crate::stage_kind::StageKind;
pub use build::{plan, plan_for};
pub use error::PlanError;
pub use id::{variant, Shape, StageId};

use crate::params::StageParams;
use crate::spec::ResolvedCompute;

/// One stage of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInstance {
    /// Stable id, e.g. `finetune-n6-self-distill`.
    pub id: StageId,
    /// Kind and resolved parameters.
    #[serde(flatten)]
    pub params: StageParams,
    /// Input name → producing stage.
    pub inputs: BTreeMap<String, StageId>,
    /// Content-addressed cache key (64 hex digits).
    pub key: String,
    /// Where the stage writes its artifacts (ends with `/`).
    pub artifact_uri: String,
    /// Pods that run the stage together (an Indexed Job when > 1).
    pub shards: u32,
}

impl StageInstance {
    /// The stage's kind.
    pub fn kind(&self) -> StageKind {
        self.params.kind()
    }

    /// Ids of the stages this one depends on (sorted, unique).
    pub fn dependencies(&self) -> BTreeSet<&StageId> {
        self.inputs.values().collect()
    }
}

/// A DAG of stages in topological order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Storage root the artifact URIs are under.
    pub storage_root: String,
    /// Stages that may run at the same time.
    pub max_parallel_stages: u32,
    /// Device and dtype of the model-computing stages.
    #[serde(default)]
    pub compute: ResolvedCompute,
    stages: Vec<StageInstance>,
}

impl Plan {
    pub(crate) fn new(
        storage_root: String,
        max_parallel_stages: u32,
        compute: ResolvedCompute,
        stages: Vec<StageInstance>,
    ) -> Self {
        Plan {
            storage_root,
            max_parallel_stages,
            compute,
            stages,
        }
    }

    /// The stages, dependencies before dependents.
    pub fn stages(&self) -> &[StageInstance] {
        &self.stages
    }

    /// Number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether the plan has no stages (never true for a plan from [`plan`]).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The stage with this id.
    pub fn get(&self, id: &str) -> Option<&StageInstance> {
        self.stages.iter().find(|s| s.id.as_str() == id)
    }

    /// Stage ids in topological order.
    pub fn topological_order(&self) -> Vec<StageId> {
        self.stages.iter().map(|s| s.id.clone()).collect()
    }

    /// Stages that are not finished and whose dependencies all are, in plan order. The caller
    /// removes the ones already running.
    pub fn ready(&self, finished: &BTreeSet<StageId>) -> Vec<StageId> {
        self.stages
            .iter()
            .filter(|s| !finished.contains(&s.id))
            .filter(|s| s.inputs.values().all(|dep| finished.contains(dep)))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Stages that depend on `id` directly.
    pub fn dependents(&self, id: &StageId) -> Vec<StageId> {
        self.stages
            .iter()
            .filter(|s| s.inputs.values().any(|d| d == id))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Stages that depend on `id` directly or transitively (e.g. to skip them after a failure).
    pub fn downstream(&self, id: &StageId) -> BTreeSet<StageId> {
        let mut out: BTreeSet<StageId> = BTreeSet::new();
        for stage in &self.stages {
            let hit = stage.inputs.values().any(|d| d == id || out.contains(d));
            if hit {
                out.insert(stage.id.clone());
            }
        }
        out
    }
}
