//! Cached Job and Pod stores. The controller's own watches of stage Jobs and Pods feed kube-rs
//! reflectors, and a reconcile reads a job's stage Jobs and Pods from them instead of listing
//! them from the apiserver (kube-rs's reflector pattern; controller-runtime's cached client).
//!
//! A store lags behind the operator's own writes: a Job created a moment ago may not be in it
//! yet, and one just deleted may still be. [`Expectations`] (controller-runtime's and the
//! kube-controller-manager's "controller expectations") hold a reconcile back until what it
//! created or deleted has reached the store, so no decision is taken on a view older than the
//! operator's own last action. An expectation expires after [`EXPECTATION_TIMEOUT`] (a watch
//! event lost for good must not stall a job); the reconcile then decides on what the store holds,
//! which is still safe: Job names are deterministic, so a Job created twice is refused with 409.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use crate::controller::Scope;
use crate::labels;

/// How long a reconcile waits for its stores' first LIST before it fails (and is retried).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an expectation holds reconciles back before it is given up.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The reflector stores of one scope (a namespace, or the whole cluster).
#[derive(Clone)]
pub struct ChildStores {
    /// Stage and clean-up Jobs (label `app.kubernetes.io/managed-by=pruneforge-operator`).
    pub jobs: Store<Job>,
    /// Their Pods (same label).
    pub pods: Store<Pod>,
}

/// Whether an object of `namespace` with these labels is a stage object of job `name`.
fn is_stage_object_of(
    object_ns: Option<&str>,
    object_labels: &std::collections::BTreeMap<String, String>,
    ns: &str,
    name: &str,
) -> bool {
    object_ns == Some(ns)
        && object_labels.get(labels::JOB).map(String::as_str) == Some(name)
        && object_labels.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_STAGE)
}

impl ChildStores {
    /// Waits until both stores hold their first complete LIST.
    pub async fn ready(&self) -> Result<(), crate::Error> {
        let both = async {
            self.jobs.wait_until_ready().await.is_ok() && self.pods.wait_until_ready().await.is_ok()
        };
        match tokio::time::timeout(READY_TIMEOUT, both).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(crate::Error::CacheNotReady(
                "its watch stopped before the first list completed".into(),
            )),
            Err(_) => Err(crate::Error::CacheNotReady(format!(
                "no complete list of Jobs and Pods within {} s",
                READY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The stage Jobs of job `name` in `ns`.
    pub fn stage_jobs(&self, ns: &str, name: &str) -> Vec<Job> {
        self.jobs
            .state_filter(|j| is_stage_object_of(j.namespace().as_deref(), j.labels(), ns, name))
            .iter()
            .map(|j| j.as_ref().clone())
            .collect()
    }

    /// The Pods of the stage Jobs of job `name` in `ns`.
    pub fn stage_pods(&self, ns: &str, name: &str) -> Vec<Pod> {
        self.pods
            .state_filter(|p| is_stage_object_of(p.namespace().as_deref(), p.labels(), ns, name))
            .iter()
            .map(|p| p.as_ref().clone())
            .collect()
    }
}

/// The stores of every scope the controller runs, found by namespace. Empty when the
/// reconcile runs outside the controller (tests call it directly): it then lists from the
/// apiserver.
#[derive(Default)]
pub struct Caches {
    scopes: RwLock<Vec<(Scope, ChildStores)>>,
}

impl Caches {
    /// Registers (or replaces) the stores of `scope`.
    pub fn register(&self, scope: &Scope, stores: ChildStores) {
        let mut scopes = match self.scopes.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        scopes.retain(|(s, _)| s != scope);
        scopes.push((scope.clone(), stores));
    }

    /// The stores that hold objects of namespace `ns`.
    pub fn for_namespace(&self, ns: &str) -> Option<ChildStores> {
        let scopes = match self.scopes.read() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        scopes
            .iter()
            .find(|(scope, _)| match scope {
                Scope::Cluster => true,
                Scope::Namespace(n) => n == ns,
                Scope::Namespaces(list) => list.iter().any(|n| n == ns),
            })
            .map(|(_, stores)| stores.clone())
    }
}

/// What the operator did to a Job and waits to see in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Created,
    Deleted,
}

#[derive(Clone, Debug)]
struct Expected {
    job: String,
    change: Change,
    since: Instant,
}

/// Creates and deletes of stage Jobs not yet seen in the store, per `PruneDistillJob`
/// (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Vec<Expected>>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Vec<Expected>>) -> R) -> R {
        let mut map = match self.pending.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut map)
    }

    fn expect(&self, key: &str, job: &str, change: Change, now: Instant) {
        self.with(|map| {
            let list = map.entry(key.to_string()).or_default();
            list.retain(|e| e.job != job);
            list.push(Expected {
                job: job.to_string(),
                change,
                since: now,
            });
        })
    }

    /// The operator created (or found already existing) Job `job` of `key`.
    pub fn created(&self, key: &str, job: &str, now: Instant) {
        self.expect(key, job, Change::Created, now)
    }

    /// The operator deleted Job `job` of `key`.
    pub fn deleted(&self, key: &str, job: &str, now: Instant) {
        self.expect(key, job, Change::Deleted, now)
    }

    /// Whether `jobs` (the store's view of `key`'s Jobs) shows every change the operator made
    /// to them. Met and expired expectations are dropped; the names of those still pending are
    /// returned (empty: the view is current enough to decide on).
    pub fn unmet(&self, key: &str, jobs: &[Job], now: Instant) -> Vec<String> {
        self.with(|map| {
            let Some(list) = map.get_mut(key) else {
                return Vec::new();
            };
            list.retain(|e| {
                if now.saturating_duration_since(e.since) >= EXPECTATION_TIMEOUT {
                    tracing::warn!(key, job = %e.job, change = ?e.change,
                        "the Job store never showed this change; deciding without it");
                    return false;
                }
                let seen = jobs.iter().find(|j| j.name_any() == e.job);
                match e.change {
                    Change::Created => seen.is_none(),
                    Change::Deleted => {
                        seen.is_some_and(|j| j.metadata.deletion_timestamp.is_none())
                    }
                }
            });
            let names = list.iter().map(|e| e.job.clone()).collect();
            if list.is_empty() {
                map.remove(key);
            }
            names
        })
    }

    /// Forgets `key` (the resource is gone).
    pub fn forget(&self, key: &str) {
        self.with(|map| {
            map.remove(key);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn job(name: &str, deleting: bool) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.into());
        if deleting {
            j.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        j
    }

    #[test]
    fn a_created_job_is_awaited_until_the_store_shows_it() {
        let e = Expectations::default();
        let t0 = Instant::now();
        assert!(e.unmet("ns/a", &[], t0).is_empty(), "nothing expected");
        e.created("ns/a", "a-score-1", t0);
        assert_eq!(e.unmet("ns/a", &[], t0), ["a-score-1"]);
        assert!(e.unmet("ns/b", &[], t0).is_empty(), "per resource");
        assert!(e.unmet("ns/a", &[job("a-score-1", false)], t0).is_empty());
        // Met expectations are dropped: the Job's later disappearance is a fact to decide on.
        assert!(e.unmet("ns/a", &[], t0).is_empty());
    }

    #[test]
    fn a_deleted_job_is_awaited_until_it_is_gone_or_terminating() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.deleted("ns/a", "a-eval-1", t0);
        assert_eq!(e.unmet("ns/a", &[job("a-eval-1", false)], t0), ["a-eval-1"]);
        assert!(e.unmet("ns/a", &[job("a-eval-1", true)], t0).is_empty());
        e.deleted("ns/a", "a-eval-1", t0);
        assert!(e.unmet("ns/a", &[], t0).is_empty());
    }

    #[test]
    fn expectations_expire_so_a_lost_event_cannot_stall_a_job() {
        let e = Expectations::default();
        let t0 = Instant::now();
        e.created("ns/a", "a-score-1", t0);
        let later = t0 + EXPECTATION_TIMEOUT;
        assert!(e.unmet("ns/a", &[], later).is_empty());
        e.created("ns/a", "a-score-1", t0);
        e.forget("ns/a");
        assert!(e.unmet("ns/a", &[], t0).is_empty());
    }
}
