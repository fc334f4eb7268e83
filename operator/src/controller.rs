//! The kube-runtime Controller: watches PruneDistillJobs, the Jobs they own and the Pods of
//! those Jobs, and runs [`crate::reconcile::reconcile`]. The Job and Pod watches also fill the
//! reflector stores ([`crate::cache`]) that reconciles read instead of listing.

use std::future::Future;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use pruneforge_api::PruneDistillJob;
use tracing::{info, warn};

use crate::cache::{ChildStores, GroupedStore};
use crate::context::Context;
use crate::labels;
use crate::reconcile::{error_policy, reconcile};

/// Which namespaces the operator serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (needs a ClusterRole).
    #[default]
    Cluster,
    /// One namespace (a Role suffices).
    Namespace(String),
    /// Several namespaces (a Role in each); one watch per namespace.
    Namespaces(Vec<String>),
}

impl Scope {
    /// The scope for an optional `--namespace`: empty means every namespace; a
    /// comma-separated list (`team-a,team-b`) scopes to those namespaces.
    pub fn from_namespace(ns: Option<String>) -> Self {
        let mut list: Vec<String> = ns
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        list.sort();
        list.dedup();
        match list.len() {
            0 => Scope::Cluster,
            1 => Scope::Namespace(list.remove(0)),
            _ => Scope::Namespaces(list),
        }
    }

    /// The single-namespace (or cluster-wide) scopes this scope is made of.
    pub fn parts(&self) -> Vec<Scope> {
        match self {
            Scope::Namespaces(list) => list.iter().cloned().map(Scope::Namespace).collect(),
            other => vec![other.clone()],
        }
    }

    /// The API for `K` in a single-namespace or cluster scope (the first namespace of a list).
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Cluster => Api::all(client),
            Scope::Namespace(ns) => Api::namespaced(client, ns),
            Scope::Namespaces(list) => match list.first() {
                Some(ns) => Api::namespaced(client, ns),
                None => Api::all(client),
            },
        }
    }
}

/// Maps a stage or clean-up Pod to its PruneDistillJob through the `pruneforge.dev/job` label.
fn pod_owner(pod: Pod) -> Option<ObjectRef<PruneDistillJob>> {
    let ns = pod.namespace()?;
    let job = pod.labels().get(labels::JOB)?;
    Some(ObjectRef::new(job).within(&ns))
}

/// What the store keeps of a Job: no managed fields and no pod template (reconciles read the
/// metadata, `spec.suspend` and the status; the template is most of a Job's size).
fn slim_job(job: &mut Job) {
    job.managed_fields_mut().clear();
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

/// What the store keeps of a Pod: metadata (without managed fields) and status.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.spec = None;
}

/// Runs the controller until `shutdown` resolves; reconciles in flight then finish. A scope of
/// several namespaces runs one controller per namespace, side by side.
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.boxed().shared();
    let runs = scope.parts().into_iter().map(|part| {
        let stop = shutdown.clone();
        run_one(ctx.clone(), part, concurrency, stop)
    });
    futures_util::future::join_all(runs).await;
}

async fn run_one(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let jobs: Api<PruneDistillJob> = scope.api(client.clone());
    let owned: Api<Job> = scope.api(client.clone());
    let pods: Api<Pod> = scope.api(client);
    let managed = watcher::Config::default().labels(&labels::managed_selector());
    let job_store = GroupedStore::<Job>::new();
    let job_events = {
        let store = job_store.clone();
        watcher(owned, managed.clone())
            .modify(slim_job)
            .inspect_ok(move |event| store.apply(event))
            .touched_objects()
    };
    let pod_store = GroupedStore::<Pod>::new();
    let pod_events = {
        let store = pod_store.clone();
        watcher(pods, managed)
            .modify(slim_pod)
            .inspect_ok(move |event| store.apply(event))
            .touched_objects()
    };
    ctx.caches.register(
        &scope,
        ChildStores {
            jobs: job_store,
            pods: pod_store,
        },
    );
    info!(?scope, "starting PruneDistillJob controller");
    let config = controller::Config::default()
        .concurrency(concurrency)
        .debounce(ctx.settings.debounce);
    Controller::new(jobs, watcher::Config::default().any_semantic())
        .owns_stream(job_events)
        .watches_stream(pod_events, pod_owner)
        .with_config(config)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::trace!(%obj, "reconciled"),
                Err(controller::Error::ReconcilerFailed(..)) => {
                    // Logged and counted by the error policy.
                }
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;
    info!("controller stopped");
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn namespace_flag_takes_a_comma_separated_list() {
        assert_eq!(Scope::from_namespace(None), Scope::Cluster);
        assert_eq!(Scope::from_namespace(Some(String::new())), Scope::Cluster);
        assert_eq!(
            Scope::from_namespace(Some("team-a".into())),
            Scope::Namespace("team-a".into())
        );
        let s = Scope::from_namespace(Some("team-b, team-a,,team-b".into()));
        assert_eq!(s, Scope::Namespaces(vec!["team-a".into(), "team-b".into()]));
        assert_eq!(
            s.parts(),
            vec![
                Scope::Namespace("team-a".into()),
                Scope::Namespace("team-b".into())
            ]
        );
    }
}
