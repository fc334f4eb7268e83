//! Labels and annotations that tie Jobs, Pods and ConfigMaps to their `PruneDistillJob` and
//! stage, and the label selectors built from them.

/// `app.kubernetes.io/managed-by` on every object the operator creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "pruneforge-operator";
/// Name of the owning `PruneDistillJob`.
pub const JOB: &str = "pruneforge.dev/job";
/// Stage id, e.g. `prune-n6`.
pub const STAGE: &str = "pruneforge.dev/stage";
/// First 16 hex digits of the stage's cache key (label values are at most 63 characters).
pub const KEY: &str = "pruneforge.dev/key";
/// Attempt number of the stage Job (1-based).
pub const ATTEMPT: &str = "pruneforge.dev/attempt";
/// Role of an object: `stage` (a stage Job, its pods and request ConfigMap) or `gc`
/// (the artifact clean-up Job).
pub const ROLE: &str = "pruneforge.dev/role";
/// Value of [`ROLE`] for stage objects.
pub const ROLE_STAGE: &str = "stage";
/// Value of [`ROLE`] for the artifact clean-up Job.
pub const ROLE_GC: &str = "gc";
/// Annotation with the full 64-hex cache key of a stage Job / ConfigMap.
pub const KEY_ANNOTATION: &str = "pruneforge.dev/cache-key";
/// Annotation of a stage Job: the hash of the runner settings its pod template was built from
/// ([`crate::stage_job::runner_hash`]); a Job that has not started is replaced when it changes.
pub const RUNNER_HASH_ANNOTATION: &str = "pruneforge.dev/runner-hash";
/// Kueue's queue label.
pub const KUEUE_QUEUE: &str = "kueue.x-k8s.io/queue-name";
/// Label the Job controller puts on its pods (Kubernetes ≥ 1.27).
pub const POD_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Legacy form of [`POD_JOB_NAME`].
pub const POD_JOB_NAME_LEGACY: &str = "job-name";
/// Annotation (and label) with an Indexed Job pod's completion index.
pub const POD_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Hex digits of the cache key kept in the [`KEY`] label.
pub const KEY_LABEL_HEX: usize = 16;

/// The [`KEY`] label value of a cache key.
pub fn key_label(key: &str) -> &str {
    key.get(..KEY_LABEL_HEX).unwrap_or(key)
}

/// Selector of every object managed by the operator.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

/// Selector of the stage objects (Jobs, Pods, ConfigMaps) of one `PruneDistillJob`.
pub fn stage_selector(job_name: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{JOB}={job_name},{ROLE}={ROLE_STAGE}")
}

/// Selector of the clean-up Job of one `PruneDistillJob`.
pub fn gc_selector(job_name: &str) -> String {
    format!("{MANAGED_BY}={MANAGER},{JOB}={job_name},{ROLE}={ROLE_GC}")
}
