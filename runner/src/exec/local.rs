//! `pruneforge run`: a whole PruneDistillJob on this machine. The job file is validated like
//! the API server would (schema + CEL), planned with the shared planner, and every stage runs
//! in dependency order. A stage whose artifact is already committed under its content key is
//! not run again (the cache); a failed stage keeps its work directory, so the next run resumes
//! it (distill journal, finetune checkpoints), and its dependants are skipped.

use super::artifacts;
use super::context::ExecContext;
use super::request::execute;
use crate::data::DataRoot;
use pruneforge_api::contract::{JobRef, StageRequest, StageResult, StageSummary};
use pruneforge_api::plan::{plan_for, Plan};
use pruneforge_api::spec::{ComputeDevice, ComputeDtype, ComputeSpec, ResolvedCompute};
use pruneforge_api::validate::ManifestValidator;
use pruneforge_api::PruneDistillJob;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path} holds {count} PruneDistillJob documents; pass a file with exactly one")]
    DocumentCount { path: String, count: usize },
    #[error("cannot plan the job: {0}")]
    Plan(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Artifact already committed under the same key: nothing to do.
    Cached,
    Ran,
    Failed,
    /// An input stage failed.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    pub id: String,
    pub kind: String,
    pub key: String,
    pub status: RunStatus,
    pub seconds: f64,
    pub artifact_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<StageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub storage: String,
    pub wall_s: f64,
    pub stages: Vec<StageRun>,
}

impl RunReport {
    pub fn failed(&self) -> bool {
        self.stages
            .iter()
            .any(|s| matches!(s.status, RunStatus::Failed | RunStatus::Skipped))
    }
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces `spec.storage.uri` (any object_store URI or a local path).
    pub storage: Option<String>,
    /// Work directories (default `<storage>/.work` for local storage, else a temp dir).
    pub work_root: Option<PathBuf>,
    pub data_root: Option<DataRoot>,
    /// `--device`, replacing `spec.compute.device` (None: the spec's).
    pub device: Option<crate::device::DeviceSpec>,
    /// `--dtype`, replacing `spec.compute.dtype` (None: the spec's).
    pub dtype: Option<crate::device::DTypeSpec>,
}

/// Reads and validates a job file (one PruneDistillJob document).
pub fn load_job(path: &Path) -> Result<PruneDistillJob, RunError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let jobs = ManifestValidator::new()
        .validate_yaml(&text)
        .map_err(|e| RunError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    if jobs.len() != 1 {
        return Err(RunError::DocumentCount {
            path: path.display().to_string(),
            count: jobs.len(),
        });
    }
    Ok(jobs.into_iter().next().expect("one job"))
}

/// The plan of `job` with the storage override applied.
pub fn plan_job(job: &PruneDistillJob, opts: &RunOptions) -> Result<Plan, RunError> {
    let mut spec = job.spec.clone();
    if let Some(s) = &opts.storage {
        spec.storage.uri = s.clone();
    }
    let compute = local_compute(&spec.compute, opts);
    plan_for(&spec, compute).map_err(|e| RunError::Plan(e.to_string()))
}

/// The device and dtype of a local run: the flags over `spec.compute`, `auto` resolved on this
/// machine (CUDA when built with `cuda` and a device is visible; a run uses the first visible
/// device, choose it with CUDA_VISIBLE_DEVICES).
pub fn local_compute(spec: &ComputeSpec, opts: &RunOptions) -> ResolvedCompute {
    use crate::device::{DTypeSpec, DeviceSpec};
    let device = match opts.device {
        Some(DeviceSpec::Cpu) => ComputeDevice::Cpu,
        Some(DeviceSpec::Cuda(_)) => ComputeDevice::Cuda,
        Some(DeviceSpec::Auto) => ComputeDevice::Auto,
        None => spec.device,
    };
    let device = match device {
        ComputeDevice::Auto if crate::device::cuda_device_count() > 0 => ComputeDevice::Cuda,
        ComputeDevice::Auto => ComputeDevice::Cpu,
        d => d,
    };
    let dtype = match opts.dtype {
        Some(DTypeSpec::Auto) => ComputeDtype::Auto,
        Some(DTypeSpec::F32) => ComputeDtype::F32,
        Some(DTypeSpec::Bf16) => ComputeDtype::Bf16,
        Some(DTypeSpec::F16) => ComputeDtype::F16,
        None => spec.dtype,
    };
    ComputeSpec { device, dtype }.resolve(None)
}

fn local_root(uri: &str) -> Option<PathBuf> {
    crate::storage::StorageUri::parse(uri)
        .ok()
        .and_then(|u| match u {
            crate::storage::StorageUri::Local { root } => Some(root),
            _ => None,
        })
}

/// The stored result of the stage whose artifact is `uri`, when it is committed (the stage is
/// cached and a run skips it).
pub fn cached_result(uri: &str) -> Option<StageResult> {
    artifacts::committed_result(uri, "")
}

/// Runs every stage of the job. `on_stage` sees each stage as it starts and ends.
pub fn run_job(
    job: &PruneDistillJob,
    opts: &RunOptions,
    mut on_stage: impl FnMut(usize, usize, &StageRun, bool),
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let plan = plan_job(job, opts)?;
    let storage = opts
        .storage
        .clone()
        .unwrap_or_else(|| job.spec.storage.uri.clone());
    let local = local_root(&storage);
    let work_root = opts.work_root.clone().unwrap_or_else(|| match &local {
        Some(root) => root.join(".work"),
        None => std::env::temp_dir().join("pruneforge-work"),
    });
    let ctx = ExecContext::new(work_root, opts.data_root.clone(), true);
    let name = job.metadata.name.clone().unwrap_or_else(|| "job".into());
    let job_ref = JobRef {
        name: name.clone(),
        namespace: None,
    };
    let order = plan.topological_order();
    let total = order.len();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut runs = Vec::with_capacity(total);
    for (i, id) in order.iter().enumerate() {
        let stage = plan.get(id.as_str()).expect("planned stage");
        let mut run = StageRun {
            id: id.to_string(),
            kind: stage.params.kind().to_string(),
            key: stage.key.clone(),
            status: RunStatus::Ran,
            seconds: 0.0,
            artifact_uri: stage.artifact_uri.clone(),
            summary: None,
            message: None,
        };
        if let Some(dep) = stage.inputs.values().find(|d| failed.contains(d.as_str())) {
            run.status = RunStatus::Skipped;
            run.message = Some(format!("input stage {dep} failed"));
            failed.insert(id.to_string());
            on_stage(i, total, &run, true);
            runs.push(run);
            continue;
        }
        if let Some(r) = cached_result(&stage.artifact_uri) {
            run.status = RunStatus::Cached;
            run.summary = r.summary;
            on_stage(i, total, &run, true);
            runs.push(run);
            continue;
        }
        on_stage(i, total, &run, false);
        let t = Instant::now();
        let outcome = StageRequest::from_plan(&plan, id.as_str(), job_ref.clone())
            .map_err(|e| e.to_string())
            .and_then(|req| execute(&req, &ctx).map_err(|e| e.to_string()));
        run.seconds = t.elapsed().as_secs_f64();
        match outcome {
            Ok(done) => {
                // Another writer (a concurrent run of the same job) committed it meanwhile.
                if done.reused {
                    run.status = RunStatus::Cached;
                }
                run.summary = done.result.summary;
            }
            Err(message) => {
                tracing::error!(stage = %id, %message, "stage failed");
                run.status = RunStatus::Failed;
                run.message = Some(message);
                failed.insert(id.to_string());
            }
        }
        on_stage(i, total, &run, true);
        runs.push(run);
    }
    Ok(RunReport {
        job: name,
        storage,
        wall_s: started.elapsed().as_secs_f64(),
        stages: runs,
    })
}
