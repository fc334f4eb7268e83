//! Operator-wide settings (command-line flags of the binary, or set by the library user).

use std::time::Duration;

use pruneforge_api::spec::{RunnerSpec, StorageSpec, DEFAULT_GPU_RESOURCE};

/// Default number of attempts of a stage (Jobs created for it) before the job is Stalled.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default debounce of reconcile requests, milliseconds.
pub const DEFAULT_DEBOUNCE_MS: u64 = 500;
/// Default runner image when `spec.runner.image` is unset (the chart's `runner.image`).
pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/pruneforge/pruneforge-runner:latest";

/// Settings shared by every reconcile.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Runner image used when `spec.runner.image` is unset (also runs the clean-up Job).
    pub runner_image: String,
    /// Attempts per stage: a Job that fails (its backoffLimit exhausted) counts as one; after
    /// this many the stage is Failed and the job Stalled.
    pub max_attempts: u32,
    /// Requeue interval while stages run (a safety net; Job and Pod events trigger reconciles).
    pub requeue_running: Duration,
    /// Requeue interval of finished or stalled jobs.
    pub requeue_idle: Duration,
    /// Requeue interval after the first failed reconcile of an object; it doubles with every
    /// further failure up to [`Settings::requeue_error_max`] (see [`crate::backoff`]).
    pub requeue_error: Duration,
    /// Longest requeue interval after failed reconciles.
    pub requeue_error_max: Duration,
    /// Trailing-edge debounce of reconcile requests per object: a burst of Job and Pod events
    /// (a pod starting, a stage finishing) becomes one reconcile.
    pub debounce: Duration,
    /// `ttlSecondsAfterFinished` of stage Jobs whose spec sets none.
    pub stage_job_ttl_seconds: i32,
    /// `ttlSecondsAfterFinished` of the artifact clean-up Job.
    pub gc_ttl_seconds: i32,
    /// `activeDeadlineSeconds` of the artifact clean-up Job: past it the Job fails, the failure
    /// is reported as a Warning event and the deletion goes on.
    pub gc_deadline_seconds: i64,
    /// Runner image for jobs that request GPUs (`spec.runner.gpu.count > 0`) and do not set
    /// `spec.runner.image` (the candle `cuda` build); `None` uses `runner_image`.
    pub runner_cuda_image: Option<String>,
    /// Extended resource name for GPUs when a job keeps the default
    /// (`nvidia.com/gpu`), e.g. `amd.com/gpu` cluster-wide; `None` keeps the spec's.
    pub gpu_resource_name: Option<String>,
    /// Secret with storage credentials for jobs with object storage (not `file://`) that do not
    /// set `spec.storage.secretRef`.
    pub storage_secret: Option<String>,
    /// Service account of runner pods when `spec.runner.serviceAccountName` is unset (for
    /// workload identity to object storage).
    pub runner_service_account: Option<String>,
    /// Namespaces where `runner_service_account` exists (the chart creates it in every watched
    /// namespace, or only in its own when watching all); jobs elsewhere keep their namespace's
    /// default account. `None`: every namespace.
    pub runner_service_account_namespaces: Option<Vec<String>>,
    /// How long a stage Job may wait with stuck pods (image pull error, unschedulable, ...) or
    /// none at all before its stage fails with the pods' reason and the job stalls.
    pub startup_deadline: Duration,
    /// What this operator watches. Artifact clean-up looks there for other jobs that still use
    /// an artifact before it deletes it.
    pub watched: crate::controller::Scope,
}

impl Settings {
    /// The runner settings of a job in `namespace` with the operator-wide defaults filled in.
    pub fn effective_runner(&self, runner: &RunnerSpec, namespace: Option<&str>) -> RunnerSpec {
        let mut r = runner.clone();
        if r.image.is_none() {
            let cuda = self.runner_cuda_image.as_ref().filter(|_| r.gpu.count > 0);
            r.image = Some(cuda.unwrap_or(&self.runner_image).clone());
        }
        if let Some(name) = &self.gpu_resource_name {
            if r.gpu.resource_name == DEFAULT_GPU_RESOURCE {
                r.gpu.resource_name = name.clone();
            }
        }
        let account_exists_here = match (&self.runner_service_account_namespaces, namespace) {
            (None, _) => true,
            (Some(list), Some(ns)) => list.iter().any(|n| n == ns),
            (Some(_), None) => false,
        };
        if r.service_account_name.is_none() && account_exists_here {
            r.service_account_name = self.runner_service_account.clone();
        }
        r
    }

    /// The job's storage settings with the operator-wide default secret filled in.
    pub fn effective_storage(&self, storage: &StorageSpec) -> StorageSpec {
        let mut s = storage.clone();
        if s.secret_ref.is_none() && !s.uri.starts_with("file://") {
            s.secret_ref = self.storage_secret.clone();
        }
        s
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            runner_image: DEFAULT_RUNNER_IMAGE.into(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            requeue_running: Duration::from_secs(60),
            requeue_idle: Duration::from_secs(30 * 60),
            requeue_error: Duration::from_secs(5),
            requeue_error_max: Duration::from_secs(10 * 60),
            debounce: Duration::from_millis(DEFAULT_DEBOUNCE_MS),
            gc_ttl_seconds: 3600,
            stage_job_ttl_seconds: 24 * 3600,
            gc_deadline_seconds: 1800,
            runner_cuda_image: None,
            gpu_resource_name: None,
            storage_secret: None,
            runner_service_account: None,
            runner_service_account_namespaces: None,
            watched: crate::controller::Scope::Cluster,
            startup_deadline: Duration::from_secs(15 * 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart_like() -> Settings {
        Settings {
            runner_image: "registry/runner:1".into(),
            runner_cuda_image: Some("registry/runner-cuda:1".into()),
            gpu_resource_name: Some("amd.com/gpu".into()),
            storage_secret: Some("s3-credentials".into()),
            runner_service_account: Some("pruneforge-runner".into()),
            runner_service_account_namespaces: Some(vec!["team-a".into()]),
            ..Settings::default()
        }
    }

    #[test]
    fn gpu_jobs_get_the_cuda_image_and_cpu_jobs_the_cpu_image() {
        let s = chart_like();
        let mut runner = RunnerSpec::default();
        assert_eq!(
            s.effective_runner(&runner, Some("team-a")).image.as_deref(),
            Some("registry/runner:1")
        );
        runner.gpu.count = 1;
        let r = s.effective_runner(&runner, Some("team-a"));
        assert_eq!(r.image.as_deref(), Some("registry/runner-cuda:1"));
        assert_eq!(r.gpu.resource_name, "amd.com/gpu");
        assert_eq!(r.service_account_name.as_deref(), Some("pruneforge-runner"));
        // Where the chart did not create the account, the namespace's default one is used.
        let elsewhere = s.effective_runner(&runner, Some("team-b"));
        assert_eq!(elsewhere.service_account_name, None);
        // The spec wins where it says something.
        runner.image = Some("mine:2".into());
        runner.gpu.resource_name = "gpu.intel.com/i915".into();
        runner.service_account_name = Some("own".into());
        let r = s.effective_runner(&runner, Some("team-b"));
        assert_eq!(r.image.as_deref(), Some("mine:2"));
        assert_eq!(r.gpu.resource_name, "gpu.intel.com/i915");
        assert_eq!(r.service_account_name.as_deref(), Some("own"));
        // Without a CUDA image, GPU jobs use the runner image.
        let plain = Settings::default();
        let mut gpu = RunnerSpec::default();
        gpu.gpu.count = 2;
        assert_eq!(
            plain.effective_runner(&gpu, None).image.as_deref(),
            Some(DEFAULT_RUNNER_IMAGE)
        );
    }

    #[test]
    fn default_storage_secret_applies_to_object_storage_only() {
        let s = chart_like();
        let mut storage = StorageSpec::new("s3://bucket/prefix");
        assert_eq!(
            s.effective_storage(&storage).secret_ref.as_deref(),
            Some("s3-credentials")
        );
        storage.secret_ref = Some("own".into());
        assert_eq!(
            s.effective_storage(&storage).secret_ref.as_deref(),
            Some("own")
        );
        let file = StorageSpec::new("file:///data");
        assert_eq!(s.effective_storage(&file).secret_ref, None);
    }
}
