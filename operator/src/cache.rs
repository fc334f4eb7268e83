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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use crate::controller::Scope;
use crate::labels;

/// How long a reconcile waits for its stores' first LIST before it fails (and is retried).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an expectation holds reconciles back before it is given up.
pub const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// `(namespace, PruneDistillJob name)`: the stage objects of one resource.
type Group = (String, String);
type Groups<K> = HashMap<Group, BTreeMap<String, Arc<K>>>;

/// A reflector store of stage objects indexed by the resource they belong to (label
/// `pruneforge.dev/job`), so a reconcile finds its own Jobs or Pods without scanning those of
/// every other resource (kube-rs's `Store` has no index: a scan per reconcile is quadratic in
/// the number of resources). Fed by the watch events of one watcher; objects without the stage
/// labels are not kept.
pub struct GroupedStore<K> {
    groups: RwLock<Groups<K>>,
    /// Objects of a relist (`Init` … `InitDone`), swapped in whole at `InitDone`.
    relist: Mutex<Option<Groups<K>>>,
    ready_tx: watch::Sender<bool>,
}

fn group_of<K: Resource>(obj: &K) -> Option<Group> {
    let meta = obj.meta();
    let labels = meta.labels.as_ref()?;
    if labels.get(labels::ROLE).map(String::as_str) != Some(labels::ROLE_STAGE) {
        return None;
    }
    Some((meta.namespace.clone()?, labels.get(labels::JOB)?.clone()))
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    match lock.write() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn insert<K: Resource + Clone>(groups: &mut Groups<K>, obj: &K) {
    if let (Some(group), Some(name)) = (group_of(obj), obj.meta().name.clone()) {
        groups
            .entry(group)
            .or_default()
            .insert(name, Arc::new(obj.clone()));
    }
}

impl<K: Resource + Clone> GroupedStore<K> {
    /// An empty store, not ready until its first complete list.
    pub fn new() -> Arc<Self> {
        Arc::new(GroupedStore {
            groups: RwLock::new(HashMap::new()),
            relist: Mutex::new(None),
            ready_tx: watch::channel(false).0,
        })
    }

    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<K>) {
        match event {
            watcher::Event::Apply(obj) => insert(&mut write(&self.groups), obj),
            watcher::Event::Delete(obj) => {
                if let (Some(group), Some(name)) = (group_of(obj), obj.meta().name.as_ref()) {
                    let mut groups = write(&self.groups);
                    if let Some(members) = groups.get_mut(&group) {
                        members.remove(name);
                        if members.is_empty() {
                            groups.remove(&group);
                        }
                    }
                }
            }
            watcher::Event::Init => {
                *self.relist.lock().unwrap_or_else(|p| p.into_inner()) = Some(HashMap::new());
            }
            watcher::Event::InitApply(obj) => {
                let mut relist = self.relist.lock().unwrap_or_else(|p| p.into_inner());
                insert(relist.get_or_insert_with(HashMap::new), obj);
            }
            watcher::Event::InitDone => {
                let fresh = self
                    .relist
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_default();
                *write(&self.groups) = fresh;
                self.ready_tx.send_replace(true);
            }
        }
    }

    /// The objects of resource `name` in `ns`.
    pub fn group(&self, ns: &str, name: &str) -> Vec<K> {
        let groups = match self.groups.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        groups
            .get(&(ns.to_string(), name.to_string()))
            .map(|members| members.values().map(|o| o.as_ref().clone()).collect())
            .unwrap_or_default()
    }

    /// Whether the first complete list has been applied.
    pub fn is_ready(&self) -> bool {
        *self.ready_tx.borrow()
    }

    async fn wait_ready(&self) {
        let mut rx = self.ready_tx.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

/// The stores of one scope (a namespace, or the whole cluster).
#[derive(Clone)]
pub struct ChildStores {
    /// Stage Jobs.
    pub jobs: Arc<GroupedStore<Job>>,
    /// Their Pods.
    pub pods: Arc<GroupedStore<Pod>>,
}

impl ChildStores {
    /// Waits until both stores hold their first complete list.
    pub async fn ready(&self) -> Result<(), crate::Error> {
        let both = async {
            self.jobs.wait_ready().await;
            self.pods.wait_ready().await;
        };
        tokio::time::timeout(READY_TIMEOUT, both)
            .await
            .map_err(|_| {
                crate::Error::CacheNotReady(format!(
                    "no complete list of Jobs and Pods within {} s",
                    READY_TIMEOUT.as_secs()
                ))
            })
    }

    /// The stage Jobs of job `name` in `ns`.
    pub fn stage_jobs(&self, ns: &str, name: &str) -> Vec<Job> {
        self.jobs.group(ns, name)
    }

    /// The Pods of the stage Jobs of job `name` in `ns`.
    pub fn stage_pods(&self, ns: &str, name: &str) -> Vec<Pod> {
        self.pods.group(ns, name)
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

    fn stage_pod(ns: &str, job: &str, name: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some(ns.into());
        p.metadata.labels = Some(
            [
                (labels::JOB.to_string(), job.to_string()),
                (labels::ROLE.to_string(), labels::ROLE_STAGE.to_string()),
            ]
            .into(),
        );
        p
    }

    fn names(pods: Vec<Pod>) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn the_grouped_store_finds_a_resources_objects_and_follows_relists() {
        use watcher::Event;
        let store = GroupedStore::<Pod>::new();
        assert!(!store.is_ready());
        store.apply(&Event::Init);
        store.apply(&Event::InitApply(stage_pod("a", "x", "x-1")));
        store.apply(&Event::InitApply(stage_pod("b", "x", "x-9")));
        assert!(
            names(store.group("a", "x")).is_empty(),
            "a relist shows only when done"
        );
        store.apply(&Event::InitDone);
        assert!(store.is_ready());
        store.apply(&Event::Apply(stage_pod("a", "x", "x-2")));
        store.apply(&Event::Apply(stage_pod("a", "y", "y-1")));
        let mut gc = stage_pod("a", "x", "x-gc");
        gc.metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert(labels::ROLE.into(), labels::ROLE_GC.into());
        store.apply(&Event::Apply(gc));
        assert_eq!(names(store.group("a", "x")), ["x-1", "x-2"]);
        assert_eq!(names(store.group("b", "x")), ["x-9"], "per namespace");
        store.apply(&Event::Delete(stage_pod("a", "x", "x-1")));
        assert_eq!(names(store.group("a", "x")), ["x-2"]);
        // A relist replaces everything: objects deleted while the watch was down are gone.
        store.apply(&Event::Init);
        store.apply(&Event::InitApply(stage_pod("a", "y", "y-1")));
        store.apply(&Event::InitDone);
        assert!(store.group("a", "x").is_empty());
        assert_eq!(names(store.group("a", "y")), ["y-1"]);
    }

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
