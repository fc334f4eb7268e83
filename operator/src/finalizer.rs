//! The `pruneforge.dev/artifacts` finalizer: applies `spec.storage.retention` when a job is
//! deleted.
//!
//! * Retain (default): no finalizer is added (one found is removed, also at deletion); owner
//!   references let the garbage collector remove the stage Jobs, their Pods and the request
//!   ConfigMaps.
//! * Delete: running stage Jobs are deleted first (foreground, so their pods are gone before
//!   anything else happens), then a clean-up Job runs `pruneforge gc --prefix <artifact uri>`
//!   for every stage artifact this job wrote (the operator itself stays free of object-storage
//!   clients and credentials). When it finished the finalizer is removed; a failed clean-up is
//!   reported as a Warning event and does not block the deletion. The clean-up Job is a CPU pod
//!   (none of the runner's GPU node selector, tolerations or priority class) with a deadline
//!   (`gcDeadlineSeconds`), so it can neither wait for a GPU node nor run forever.
//! * In a namespace being deleted the apiserver refuses new objects (403 "being terminated"):
//!   the clean-up Job cannot run there, so the finalizer is removed at once with an error log
//!   naming the artifact prefixes left behind, instead of blocking the namespace forever.

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use pruneforge_api::plan::key::artifact_uri;
use pruneforge_api::spec::Retention;
use pruneforge_api::PruneDistillJob;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use tracing::{error, info};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::events;
use crate::labels;
use crate::naming;
use crate::observe;
use crate::stage_job;

/// The finalizer name.
pub const FINALIZER: &str = "pruneforge.dev/artifacts";

/// Poll interval while waiting for Jobs during clean-up.
const CLEANUP_POLL: Duration = Duration::from_secs(5);

/// Whether the object carries the finalizer.
pub fn has(obj: &PruneDistillJob) -> bool {
    obj.finalizers().iter().any(|f| f == FINALIZER)
}

/// Whether the job needs the finalizer: only `retention: Delete` has clean-up to do.
pub fn wanted(obj: &PruneDistillJob) -> bool {
    obj.spec.storage.retention == Retention::Delete
}

/// Whether an API error is the apiserver's refusal to create objects in a namespace that is
/// being deleted (NamespaceLifecycle admission: 403 "... because it is being terminated").
pub fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}

/// Adds the finalizer with a JSON patch guarded by the object's resourceVersion.
pub async fn add(api: &Api<PruneDistillJob>, obj: &PruneDistillJob) -> Result<()> {
    let mut ops = Vec::new();
    if let Some(rv) = &obj.meta().resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    if obj.finalizers().is_empty() {
        ops.push(json!({"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}));
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}));
    }
    json_patch(api, obj, ops).await
}

/// Removes the finalizer (test-and-remove at its index).
pub async fn remove(api: &Api<PruneDistillJob>, obj: &PruneDistillJob) -> Result<()> {
    let Some(index) = obj.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let ops = vec![
        json!({"op": "test", "path": path, "value": FINALIZER}),
        json!({"op": "remove", "path": path}),
    ];
    match json_patch(api, obj, ops).await {
        // Already gone.
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        other => other,
    }
}

async fn json_patch(
    api: &Api<PruneDistillJob>,
    obj: &PruneDistillJob,
    ops: Vec<serde_json::Value>,
) -> Result<()> {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).map_err(|source| {
            Error::Serialize {
                what: "finalizer patch",
                source,
            }
        })?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}

/// Artifact prefixes of every stage this job started (from the status, so edits that changed
/// keys before are not covered: those artifacts may be shared with other jobs).
pub fn artifact_prefixes(obj: &PruneDistillJob) -> Vec<String> {
    let root = obj.spec.storage.root();
    let mut out: Vec<String> = obj
        .status
        .iter()
        .flat_map(|s| s.stages.iter())
        .filter(|s| s.attempts > 0)
        .map(|s| artifact_uri(root, s.kind, &s.key))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Artifact uris that other jobs still reference: every stage in their status (run, cached or
/// still to run) under their storage root. Jobs being deleted with `retention: Delete` do not
/// count (they want their artifacts gone too), nor does `obj` itself.
pub fn referenced_elsewhere(obj: &PruneDistillJob, others: &[PruneDistillJob]) -> BTreeSet<String> {
    let me = (obj.namespace(), obj.name_any(), obj.meta().uid.clone());
    others
        .iter()
        .filter(|o| (o.namespace(), o.name_any(), o.meta().uid.clone()) != me)
        .filter(|o| !(o.meta().deletion_timestamp.is_some() && wanted(o)))
        .flat_map(|o| {
            let root = o.spec.storage.root();
            o.status
                .iter()
                .flat_map(|s| s.stages.iter())
                .map(move |s| artifact_uri(root, s.kind, &s.key))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every job in the namespaces the operator watches.
async fn watched_jobs(ctx: &Context) -> Result<Vec<PruneDistillJob>> {
    let mut all = Vec::new();
    for part in ctx.settings.watched.parts() {
        let api: Api<PruneDistillJob> = part.api(ctx.client.clone());
        all.extend(api.list(&ListParams::default()).await?.items);
    }
    Ok(all)
}

/// Runs the deletion policy; removes the finalizer when done.
pub async fn cleanup(
    obj: &PruneDistillJob,
    ctx: &Context,
    api: &Api<PruneDistillJob>,
) -> Result<Action> {
    if !has(obj) {
        return Ok(Action::await_change());
    }
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    ctx.metrics.set_active_jobs(&format!("{ns}/{name}"), 0);
    if obj.spec.storage.retention == Retention::Retain {
        info!("job deleted; artifacts retained");
        remove(api, obj).await?;
        return Ok(Action::await_change());
    }

    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let stage_jobs = jobs_api
        .list(&ListParams::default().labels(&labels::stage_selector(&name)))
        .await?
        .items;
    let mut waiting = false;
    for job in &stage_jobs {
        if observe::job_outcome(job).is_some() {
            continue;
        }
        waiting = true;
        if job.metadata.deletion_timestamp.is_none() {
            let job_name = job.name_any();
            info!(job = %job_name, "deleting running stage Job before artifact clean-up");
            match jobs_api
                .delete(&job_name, &DeleteParams::foreground())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if waiting {
        return Ok(Action::requeue(CLEANUP_POLL));
    }

    let prefixes = artifact_prefixes(obj);
    if prefixes.is_empty() {
        remove(api, obj).await?;
        return Ok(Action::await_change());
    }
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let gc_name = naming::gc_job_name(&name, &uid);
    let existing = jobs_api.get_opt(&gc_name).await?;
    match existing.as_ref().and_then(observe::job_outcome) {
        None => {
            if existing.is_none() {
                // Content-addressed artifacts can serve several jobs: keep what another still uses.
                let shared = referenced_elsewhere(obj, &watched_jobs(ctx).await?);
                let (kept, prefixes): (Vec<String>, Vec<String>) =
                    prefixes.into_iter().partition(|p| shared.contains(p));
                if !kept.is_empty() {
                    events::publish(
                        ctx,
                        obj,
                        events::job_event(
                            EventType::Normal,
                            "ArtifactsShared",
                            "DeleteArtifacts",
                            format!(
                                "keeping {} artifact prefix(es) that other jobs still use",
                                kept.len()
                            ),
                        ),
                    )
                    .await;
                }
                if prefixes.is_empty() {
                    remove(api, obj).await?;
                    return Ok(Action::await_change());
                }
                let job = stage_job::gc_job(obj, &prefixes, &ctx.settings)?;
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(_) => {
                        events::publish(
                            ctx,
                            obj,
                            events::job_event(
                                EventType::Normal,
                                "ArtifactCleanupStarted",
                                "DeleteArtifacts",
                                format!(
                                    "deleting {} artifact prefix(es) with Job {gc_name}",
                                    prefixes.len()
                                ),
                            ),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) if namespace_terminating(&e) => {
                        error!(namespace = %ns, job = %name, prefixes = ?prefixes,
                            "namespace is being deleted, so the artifact clean-up Job cannot run; \
                             removing the finalizer and leaving these artifact prefixes in storage \
                             (delete them with `pruneforge gc --prefix <uri>`)");
                        remove(api, obj).await?;
                        return Ok(Action::await_change());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(Action::requeue(CLEANUP_POLL))
        }
        Some(Ok(())) => {
            events::publish(
                ctx,
                obj,
                events::job_event(
                    EventType::Normal,
                    "ArtifactsDeleted",
                    "DeleteArtifacts",
                    format!("clean-up Job {gc_name} deleted the job's artifacts"),
                ),
            )
            .await;
            remove(api, obj).await?;
            Ok(Action::await_change())
        }
        Some(Err(reason)) => {
            events::publish(
                ctx,
                obj,
                events::job_event(
                    EventType::Warning,
                    "ArtifactCleanupFailed",
                    "DeleteArtifacts",
                    format!(
                        "clean-up Job {gc_name} failed ({reason}); artifacts may remain under {}",
                        obj.spec.storage.root()
                    ),
                ),
            )
            .await;
            remove(api, obj).await?;
            Ok(Action::await_change())
        }
    }
}
