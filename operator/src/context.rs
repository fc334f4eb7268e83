//! State shared by every reconcile.

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::backoff::ErrorBackoff;
use crate::cache::{Caches, Expectations};
use crate::metrics::Metrics;
use crate::settings::Settings;

/// Field manager of every write (server-side apply of statuses and ConfigMaps, creates, patches).
pub const FIELD_MANAGER: &str = "pruneforge-operator";

/// What a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder (deduplicates repeated events into series).
    pub recorder: Recorder,
    /// Per-object exponential backoff of failed reconciles.
    pub backoff: ErrorBackoff,
    /// Job and Pod stores of the running controller (empty outside it: reconciles then list).
    pub caches: Caches,
    /// Creates and deletes of stage Jobs the stores do not show yet.
    pub expectations: Expectations,
}

impl Context {
    /// A context; `instance` names this operator replica in Events (e.g. the pod name).
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            backoff: ErrorBackoff::new(settings.requeue_error, settings.requeue_error_max),
            client,
            settings,
            metrics,
            caches: Caches::default(),
            expectations: Expectations::default(),
        }
    }
}
