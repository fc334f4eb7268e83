//! Prometheus metrics (served on `/metrics`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `error` label of reconcile errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Error class.
    pub error: String,
}

/// Labels of stage metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// Stage kind.
    pub kind: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
}

/// Labels of started stages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Stage kind.
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The operator's metrics.
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by error class.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Reconcile latency.
    pub reconcile_duration: Histogram,
    /// Stage Jobs created, by kind.
    pub stages_started: Family<KindLabels, Counter>,
    /// Stage run time from Job start to completion, by kind and outcome.
    pub stage_duration: HistogramFamily<StageLabels>,
    /// Stage Jobs running or queued, over all jobs.
    pub active_jobs: Gauge,
    /// PruneDistillJobs seen by the last reconciles (namespace/name → active stage Jobs).
    per_resource: Mutex<HashMap<String, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        fn stage_histogram() -> Histogram {
            // 1 s .. ~9 h
            Histogram::new(exponential_buckets(1.0, 2.0, 16))
        }
        Metrics {
            reconciles: Counter::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            stages_started: Family::default(),
            stage_duration: Family::new_with_constructor(stage_histogram),
            active_jobs: Gauge::default(),
            per_resource: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `pruneforge_operator` prefix.
    pub fn register(self, registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("pruneforge_operator");
        r.register("reconciles", "Reconciles run", self.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by error class",
            self.reconcile_errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Reconcile latency",
            self.reconcile_duration.clone(),
        );
        r.register(
            "stages_started",
            "Stage Jobs created, by stage kind",
            self.stages_started.clone(),
        );
        r.register(
            "stage_duration_seconds",
            "Stage run time from Job start to completion, by kind and outcome",
            self.stage_duration.clone(),
        );
        r.register(
            "active_jobs",
            "Stage Jobs running or queued",
            self.active_jobs.clone(),
        );
        self
    }

    /// Counts a reconcile and measures it until the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer {
            metrics: self,
            start: Instant::now(),
        }
    }

    /// Records the number of running stage Jobs of one resource (0 when it is gone).
    pub fn set_active_jobs(&self, resource: &str, active: i64) {
        let Ok(mut map) = self.per_resource.lock() else {
            return;
        };
        if active == 0 {
            map.remove(resource);
        } else {
            map.insert(resource.to_string(), active);
        }
        self.active_jobs.set(map.values().sum());
    }
}

/// Observes the reconcile duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}
