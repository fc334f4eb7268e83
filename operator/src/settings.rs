//! Operator-wide settings (command-line flags of the binary, or set by the library user).

use std::time::Duration;

/// Default number of attempts of a stage (Jobs created for it) before the job is Stalled.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default runner image when `spec.runner.image` is unset.
pub const DEFAULT_RUNNER_IMAGE: &str = "ghcr.io/pruneforge/pruneforge:latest";

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
    /// Requeue interval after a reconcile error.
    pub requeue_error: Duration,
    /// `ttlSecondsAfterFinished` of the artifact clean-up Job.
    pub gc_ttl_seconds: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            runner_image: DEFAULT_RUNNER_IMAGE.into(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            requeue_running: Duration::from_secs(60),
            requeue_idle: Duration::from_secs(30 * 60),
            requeue_error: Duration::from_secs(15),
            gc_ttl_seconds: 3600,
        }
    }
}
