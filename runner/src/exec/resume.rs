//! Resume state in the job's storage, so that a stage pod that is preempted, evicted or deleted
//! resumes where it stopped instead of from zero: the fine-tune's checkpoints and the
//! distillation journal are saved under `_resume/<kind>-<key>[/shard-<index>]` beside the artifacts
//! (not inside the artifact prefix, which only ever holds a committed artifact). The next
//! attempt, in a fresh pod with an empty work directory, downloads them before it starts. The
//! prefix is deleted once the stage has committed its artifact, and by `pruneforge gc` with the
//! artifact.
//!
//! Saving is best effort: a failed save is logged and the stage goes on (it only risks redoing
//! work after a preemption). Each save is an upload of a directory with a `_SUCCESS` manifest,
//! so a pod killed mid-save leaves the previous complete state readable; unchanged files (the
//! checkpoints already stored) are not uploaded again.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pruneforge_api::contract::StageRequest;
use pruneforge_api::StageKind;

use super::artifacts::{self, ArtifactError};
use crate::storage::BlockingStorage;

/// Root of the resume prefixes in a job's storage.
pub const RESUME_ROOT: &str = "_resume";
/// Default least time between two throttled saves (`PRUNEFORGE_RESUME_SAVE_SECONDS`).
pub const DEFAULT_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// The resume prefix of the stage whose artifact prefix is `<kind>/<key>`:
/// `_resume/<kind>-<key>` (shards below it, `shard-<index>`).
pub fn stage_prefix(artifact_prefix: &str) -> String {
    format!("{RESUME_ROOT}/{}", artifact_prefix.replace('/', "-"))
}

/// Deletes the resume state of the artifact at `uri` (all its shards), e.g. when the
/// artifact itself is deleted. Returns the number of objects deleted.
pub fn delete_for_artifact(uri: &str) -> Result<usize, ArtifactError> {
    let artifact = artifacts::open(uri)?;
    artifact
        .store
        .delete_prefix(&stage_prefix(&artifact.prefix))
        .map_err(|source| ArtifactError::Storage {
            uri: uri.to_string(),
            source,
        })
}

/// Where one stage (shard) keeps its resume state.
pub struct ResumeStore {
    store: BlockingStorage,
    prefix: String,
    interval: Duration,
    last_save: Mutex<Option<Instant>>,
}

impl ResumeStore {
    /// The resume store of `req`, for the stages that have resume state (finetune, prefer,
    /// distill); `None` for the others.
    pub fn for_request(req: &StageRequest) -> Result<Option<ResumeStore>, ArtifactError> {
        let kind = req.params.kind();
        if !matches!(
            kind,
            StageKind::Finetune | StageKind::Prefer | StageKind::Distill
        ) {
            return Ok(None);
        }
        let artifact = artifacts::open(&req.output_uri)?;
        let root = stage_prefix(&artifact.prefix);
        let prefix = match req.shard {
            Some(s) if s.count > 1 => format!("{root}/shard-{:05}", s.index),
            _ => root,
        };
        let interval = std::env::var("PRUNEFORGE_RESUME_SAVE_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_SAVE_INTERVAL, Duration::from_secs);
        Ok(Some(ResumeStore::at(artifact.store, &prefix, interval)))
    }

    /// The storage key of `sub` under this stage's resume prefix.
    pub fn key(&self, sub: &str) -> String {
        format!("{}/{sub}", self.prefix)
    }

    /// Downloads the saved state `sub` into `local` when `local` holds none (an empty or
    /// missing directory) and a complete save exists. Returns whether it restored anything.
    pub fn restore(&self, local: &Path, sub: &str) -> bool {
        let has_local = std::fs::read_dir(local).is_ok_and(|mut d| d.next().is_some());
        if has_local {
            return false;
        }
        let key = self.key(sub);
        match self.store.is_committed(&key) {
            Ok(true) => match self.store.download_dir(&key, local) {
                Ok(report) => {
                    tracing::info!(prefix = %key, files = report.manifest.files.len(), "restored resume state from storage");
                    true
                }
                Err(e) => {
                    tracing::warn!(prefix = %key, error = %e, "cannot download the resume state; starting without it");
                    let _ = std::fs::remove_dir_all(local);
                    false
                }
            },
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(prefix = %key, error = %e, "cannot read the resume state; starting without it");
                false
            }
        }
    }

    /// A store at `prefix` of `store` (tests, and callers that choose their own prefix).
    pub fn at(store: BlockingStorage, prefix: &str, interval: Duration) -> ResumeStore {
        ResumeStore {
            store,
            prefix: prefix.to_string(),
            interval,
            last_save: Mutex::new(Some(Instant::now())),
        }
    }

    /// Saves `local` as state `sub` now. Failures are logged, never returned.
    pub fn save(&self, local: &Path, sub: &str) {
        let key = self.key(sub);
        match self.store.upload_dir(local, &key) {
            Ok(report) => {
                tracing::debug!(prefix = %key, uploaded = report.uploaded.len(), "resume state saved")
            }
            Err(e) => {
                tracing::warn!(prefix = %key, error = %e, "saving the resume state failed; going on")
            }
        }
        *self.last_save.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the save interval has passed since the last save (or since the store was
    /// opened): the caller then brings its files to a consistent state and calls
    /// [`ResumeStore::save`].
    pub fn save_due(&self) -> bool {
        self.last_save
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Deletes the saved state (the stage has committed its artifact).
    pub fn clear(&self) {
        if let Err(e) = self.store.delete_prefix(&self.prefix) {
            tracing::warn!(prefix = %self.prefix, error = %e, "removing the resume state failed");
        }
    }
}
