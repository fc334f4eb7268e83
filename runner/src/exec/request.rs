//! Executing one stage request: materialise inputs, run the stage into a work directory,
//! record `result.json`, commit the artifact (or the shard's sub-artifact).

use super::artifacts::{self, ArtifactError};
use super::context::ExecContext;
use super::dispatch::dispatch;
use super::resume::ResumeStore;
use crate::device::{describe, dtype_name, Compute, MemoryWatch};
use crate::stages::StageError;
use pruneforge_api::contract::{StageRequest, StageResult};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("stage {stage}: {source}")]
    Stage {
        stage: String,
        #[source]
        source: Box<StageError>,
    },
    #[error("stage {stage}: {source}")]
    Device {
        stage: String,
        #[source]
        source: crate::device::DeviceError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The stage's result (also stored as `result.json` in the artifact).
    pub result: StageResult,
    /// The artifact was already committed under the request's key (before this call, or by
    /// another writer this call waited for): nothing ran.
    pub reused: bool,
}

/// Runs `req` and commits its artifact. The returned result is also stored as `result.json`
/// in the artifact. On failure the work directory is kept so a rerun resumes.
pub fn execute_request(req: &StageRequest, ctx: &ExecContext) -> Result<StageResult, ExecError> {
    execute(req, ctx).map(|e| e.result)
}

/// [`execute_request`], also saying whether the stage ran or its artifact was reused.
pub fn execute(req: &StageRequest, ctx: &ExecContext) -> Result<Executed, ExecError> {
    let reused = |result| Executed {
        result,
        reused: true,
    };
    let started = Instant::now();
    // The same key was computed before (this job or another): reuse it.
    let shard_sub = match req.shard {
        Some(s) if s.count > 1 => format!("shards/{:05}", s.index),
        _ => String::new(),
    };
    if let Some(done) =
        artifacts::committed_result(&req.output_uri, &shard_sub).filter(|r| r.key == req.key)
    {
        tracing::info!(stage = %req.stage_id, key = %req.key, "artifact already committed; reusing it");
        return Ok(reused(done));
    }
    // One writer per artifact: wait while another pod (any resource, any namespace) computes
    // the same key, then reuse what it committed.
    let claim = artifacts::claim_writer(&req.output_uri, &shard_sub)?;
    if let Some(other) = claim.waited_for() {
        if let Some(done) =
            artifacts::committed_result(&req.output_uri, &shard_sub).filter(|r| r.key == req.key)
        {
            tracing::info!(stage = %req.stage_id, key = %req.key, writer = other, "another writer committed this artifact; reusing it");
            claim.release();
            return Ok(reused(done));
        }
    }
    let mut inputs = BTreeMap::new();
    for (name, input) in &req.inputs {
        inputs.insert(
            name.clone(),
            artifacts::materialize(&input.uri, &ctx.cache)?,
        );
    }
    let work = ctx.work_dir(req);
    let out = work.join("out");
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let compute = Compute::from_request(req.compute).map_err(|source| ExecError::Device {
        stage: req.stage_id.to_string(),
        source,
    })?;
    tracing::info!(
        stage = %req.stage_id,
        kind = %req.params.kind(),
        key = %req.key,
        device = %describe(&compute.device).device,
        dtype = dtype_name(compute.dtype),
        "stage started"
    );
    let resume = ResumeStore::for_request(req)?;
    let memory = MemoryWatch::start(&compute.device);
    let outcome =
        dispatch(req, &inputs, &work, &out, ctx, &compute, resume.as_ref()).map_err(|source| {
            ExecError::Stage {
                stage: req.stage_id.to_string(),
                source: Box::new(source),
            }
        })?;
    let peak_device = memory.map(MemoryWatch::finish);
    let mut artifacts_map = BTreeMap::new();
    for name in outcome.files {
        artifacts_map.insert(name.clone(), format!("{}{}", req.output_uri, name));
    }
    let result = StageResult::succeeded(
        req,
        outcome.summary,
        artifacts_map,
        started.elapsed().as_secs_f64(),
    );
    let result = StageResult {
        compute: req
            .params
            .kind()
            .computes_with_model()
            .then(|| compute.report(peak_device)),
        ..result
    };
    // Sharded stages commit their shard directory as a sub-artifact.
    let (local, sub) = match req.shard {
        Some(s) if outcome.sharded => {
            let sub = format!("shards/{:05}", s.index);
            (out.join(&sub), sub)
        }
        _ => (out.clone(), String::new()),
    };
    crate::util::fs::write_atomic(&local.join("result.json"), result.to_json().as_bytes())
        .map_err(io(&local))?;
    claim.check_held()?;
    artifacts::commit(&local, &req.output_uri, &sub)?;
    claim.release();
    if let Some(resume) = &resume {
        resume.clear();
    }
    let _ = std::fs::remove_dir_all(&work);
    tracing::info!(stage = %req.stage_id, seconds = result.duration_seconds, "stage committed");
    Ok(Executed {
        result,
        reused: false,
    })
}
