//! The kube-runtime Controller: watches PruneDistillJobs, the Jobs they own and the Pods of
//! those Jobs, and runs [`crate::reconcile::reconcile`]. The Job and Pod watches also fill the
//! reflector stores ([`crate::cache`]) that reconciles read instead of listing.

use std::future::Future;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use pruneforge_api::PruneDistillJob;
use tracing::{info, warn};

use crate::cache::ChildStores;
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
    // Managed fields are dropped from cached objects: nothing reads them and they are often
    // the larger part of an object.
    let (job_store, job_writer) = reflector::store::<Job>();
    let job_events = watcher(owned, managed.clone())
        .default_backoff()
        .modify(|job: &mut Job| job.managed_fields_mut().clear())
        .reflect(job_writer)
        .touched_objects();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let pod_events = watcher(pods, managed)
        .default_backoff()
        .modify(|pod: &mut Pod| pod.managed_fields_mut().clear())
        .reflect(pod_writer)
        .touched_objects();
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
