//! pruneforge-operator: reconciles `PruneDistillJob` resources into runner Jobs.
//!
//! # Architecture
//!
//! * [`controller`] — the kube-runtime `Controller` (watches PruneDistillJobs, owned Jobs and
//!   the Pods of stage Jobs) and [`run`]/[`Operator`], the library entry point.
//! * [`reconcile`] — one reconcile: plan → observe → decide → act → status.
//! * [`observe`] — owned Jobs and Pods reduced to [`observe::ObservedJob`] (state, attempt,
//!   parsed termination messages, pod problems).
//! * [`decide`] — the pure decision: new status, Jobs to create and delete, events.
//! * [`results`] — stage results into the status summaries (recovery, best recovery, ...).
//! * [`cache`] — reflector stores of stage Jobs and Pods fed by the controller's watches, and
//!   the expectations that keep a reconcile from deciding on a view older than its own writes.
//! * [`backoff`] — exponential backoff of failed reconciles, per object.
//! * [`conditions`] — kstatus conditions Ready / Reconciling / Stalled.
//! * [`stage_job`], [`pod_template`], [`naming`], [`labels`] — the Kubernetes objects of a
//!   stage: request ConfigMap, Job, pod template, names and labels.
//! * [`finalizer`] — the `pruneforge.dev/artifacts` finalizer and the retention policy.
//! * [`leader`] — Lease-based leader election; [`server`] — `/metrics`, `/healthz`,
//!   `/readyz`; [`metrics`]; [`telemetry`] — JSON logs; [`rbac`] — the rules it needs.
//! * `fake` (feature `testing`) — an in-memory apiserver on tower-test for tests and benches.
//!
//! # Runner contract
//!
//! Every stage runs as a batch/v1 Job (an Indexed Job with `completions = parallelism =
//! shards` for sharded stages) whose single container `runner`:
//! * runs `spec.runner.image` (or the operator's `--runner-image`) with command
//!   `pruneforge stage --request /etc/pruneforge/request/request.json`; the request is the
//!   `request.json` key of a ConfigMap `<job>-<stage>-<key8>-req` owned by the resource and
//!   mounted read-only at `/etc/pruneforge/request`; Indexed pods read `JOB_COMPLETION_INDEX`
//!   and run `request.for_shard(index)`;
//! * exits 0 on success, non-zero on failure, and writes `StageResult::to_termination_message()`
//!   to `/dev/termination-log` (`terminationMessagePolicy: FallbackToLogsOnError`);
//! * gets env `PRUNEFORGE_DATA_DIR=/usr/share/pruneforge/data`, `HOME=/tmp`, `TMPDIR=/tmp`,
//!   `PRUNEFORGE_STAGE`, `PRUNEFORGE_JOB`, then `spec.runner.env`; the keys of the Secret
//!   `spec.storage.secretRef` through `envFrom`;
//! * runs as uid/gid 65532, non-root, read-only root filesystem, no privilege escalation,
//!   all capabilities dropped, seccomp RuntimeDefault, `restartPolicy: Never`, working
//!   directory `/work`; writable emptyDirs at `/tmp` and `/work`;
//! * with `file://` storage and `spec.storage.pvcName`, the claim is mounted at the URI's path
//!   (relative paths under `/work`).
//!
//! The clean-up Job of `retention: Delete` runs `pruneforge gc --prefix <uri> [--prefix <uri>
//! ...]` in the same pod template (no request ConfigMap, no GPUs).

pub mod backoff;
pub mod cache;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod decide;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod observe;
pub mod pod_template;
pub mod rbac;
pub mod reconcile;
pub mod results;
pub mod server;
pub mod settings;
pub mod stage_job;
pub mod telemetry;

#[cfg(feature = "testing")]
pub mod fake;

use std::sync::Arc;

pub use context::{Context, FIELD_MANAGER};
pub use controller::Scope;
pub use error::Error;
pub use settings::Settings;

/// A ready-to-run operator (for the binary and for tests that run it in-process).
pub struct Operator {
    /// Reconcile context.
    pub context: Arc<Context>,
    /// Namespace scope.
    pub scope: Scope,
    /// Reconciles running at once.
    pub concurrency: u16,
}

impl Operator {
    /// An operator with fresh (unregistered) metrics.
    pub fn new(client: kube::Client, mut settings: Settings, scope: Scope) -> Self {
        settings.watched = scope.clone();
        Operator {
            context: Arc::new(Context::new(
                client,
                settings,
                Arc::new(metrics::Metrics::default()),
                None,
            )),
            scope,
            concurrency: 16,
        }
    }

    /// Runs the controller until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    ) {
        controller::run(self.context, self.scope, self.concurrency, shutdown).await
    }
}
