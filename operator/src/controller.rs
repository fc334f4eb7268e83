//! The kube-runtime Controller: watches PruneDistillJobs, the Jobs they own and the Pods of
//! those Jobs, and runs [`crate::reconcile::reconcile`].

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use pruneforge_api::PruneDistillJob;
use tracing::{info, warn};

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
}

impl Scope {
    /// The scope for an optional `--namespace`.
    pub fn from_namespace(ns: Option<String>) -> Self {
        match ns {
            Some(ns) if !ns.is_empty() => Scope::Namespace(ns),
            _ => Scope::Cluster,
        }
    }

    fn api<K>(&self, client: Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Cluster => Api::all(client),
            Scope::Namespace(ns) => Api::namespaced(client, ns),
        }
    }
}

/// Maps a stage or clean-up Pod to its PruneDistillJob through the `pruneforge.dev/job` label.
fn pod_owner(pod: Pod) -> Option<ObjectRef<PruneDistillJob>> {
    let ns = pod.namespace()?;
    let job = pod.labels().get(labels::JOB)?;
    Some(ObjectRef::new(job).within(&ns))
}

/// Runs the controller until `shutdown` resolves; reconciles in flight then finish.
pub async fn run(
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
    info!(?scope, "starting PruneDistillJob controller");
    Controller::new(jobs, watcher::Config::default().any_semantic())
        .owns(owned, managed.clone())
        .watches(pods, managed, pod_owner)
        .with_config(controller::Config::default().concurrency(concurrency))
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
