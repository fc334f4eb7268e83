//! The reconcile function: observe owned Jobs and Pods, decide, act, write the status.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use pruneforge_api::status::{PruneDistillJobStatus, StagePhase};
use pruneforge_api::{plan, PruneDistillJob};
use serde_json::json;
use tracing::{debug, info, instrument, warn};

use crate::context::{Context, FIELD_MANAGER};
use crate::decide::{self, Decision, Inputs};
use crate::error::{Error, Result};
use crate::events;
use crate::finalizer;
use crate::labels;
use crate::metrics::{KindLabels, StageLabels};
use crate::naming;
use crate::observe::{self, ObservedJob};
use crate::stage_job;

/// Reconciles one `PruneDistillJob`. A permanent error (see [`Error::is_permanent`]) is also
/// recorded in the status (`Stalled=True`, reason `ApiError`) and as a Warning Event before it
/// is returned; every error is retried with per-object exponential backoff ([`error_policy`]).
#[instrument(skip_all, fields(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default()))]
pub async fn reconcile(obj: Arc<PruneDistillJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_timer();
    let key = backoff_key(&obj);
    match reconcile_inner(&obj, &ctx).await {
        Ok(action) => {
            ctx.backoff.succeeded(&key);
            Ok(action)
        }
        Err(error) => {
            if error.is_permanent() && obj.meta().deletion_timestamp.is_none() {
                report_permanent(&obj, &ctx, &error).await;
            }
            Err(error)
        }
    }
}

fn backoff_key(obj: &PruneDistillJob) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Makes a permanent error visible: the `ApiError` status (only when it changes) and a Warning
/// Event. Failures here are logged; the original error is what the caller returns.
async fn report_permanent(obj: &PruneDistillJob, ctx: &Context, error: &Error) {
    let message = error.describe();
    if let Some(ns) = obj.namespace() {
        let api: Api<PruneDistillJob> = Api::namespaced(ctx.client.clone(), &ns);
        let previous = obj.status.clone().unwrap_or_default();
        let now = Time(Timestamp::now());
        let status = decide::api_error(&previous, &message, obj.meta().generation, &now);
        if !same_conditions(&status, &previous) {
            if let Err(e) = write_status(&api, &obj.name_any(), &status).await {
                warn!(error = %e, "recording the API error in the status failed");
            }
        }
    }
    events::publish(
        ctx,
        obj,
        events::job_event(EventType::Warning, "ApiError", "Reconcile", message),
    )
    .await;
}

/// Whether two statuses have the same conditions apart from `lastTransitionTime`.
fn same_conditions(a: &PruneDistillJobStatus, b: &PruneDistillJobStatus) -> bool {
    let key = |s: &PruneDistillJobStatus| {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    key(a) == key(b) && a.observed_generation == b.observed_generation
}

async fn reconcile_inner(obj: &Arc<PruneDistillJob>, ctx: &Arc<Context>) -> Result<Action> {
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace(obj.name_any()))?;
    let api: Api<PruneDistillJob> = Api::namespaced(ctx.client.clone(), &ns);
    if obj.meta().deletion_timestamp.is_some() {
        ctx.expectations.forget(&backoff_key(obj));
        return finalizer::cleanup(obj, ctx, &api).await;
    }
    // Only `retention: Delete` has work to do at deletion; a Retain job carries no finalizer,
    // so nothing can hold its deletion (one added by an earlier version or while the job was
    // Delete is taken off).
    match (finalizer::wanted(obj), finalizer::has(obj)) {
        (true, false) => finalizer::add(&api, obj).await?,
        (false, true) => finalizer::remove(&api, obj).await?,
        _ => {}
    }
    apply(obj, ctx, &api, &ns).await
}

/// Logs the error, counts it and retries after the object's next backoff delay
/// (`requeue_error`, doubling per consecutive failure up to `requeue_error_max`).
pub fn error_policy(obj: Arc<PruneDistillJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let retry_in = ctx.backoff.failed(&backoff_key(&obj));
    warn!(name = %obj.name_any(), namespace = obj.namespace().unwrap_or_default(), %error,
        permanent = error.is_permanent(), retry_in_s = retry_in.as_secs_f64(), "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            error: error.metric_label().into(),
        })
        .inc();
    Action::requeue(retry_in)
}

/// Whether the Job is controlled by the object with this uid (a resource deleted and created
/// again under the same name must not adopt the old one's Jobs).
fn controlled_by(job_meta: &kube::api::ObjectMeta, uid: Option<&str>) -> bool {
    match uid {
        None => true,
        Some(uid) => job_meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.controller == Some(true)),
    }
}

async fn apply(
    obj: &PruneDistillJob,
    ctx: &Context,
    api: &Api<PruneDistillJob>,
    ns: &str,
) -> Result<Action> {
    let name = obj.name_any();
    let resource_key = format!("{ns}/{name}");
    let now = Time(Timestamp::now());
    let previous = obj.status.clone().unwrap_or_default();
    let generation = obj.meta().generation;

    let plan = match plan(&obj.spec) {
        Ok(plan) => plan,
        Err(error) => {
            let status = decide::invalid_spec(&previous, &error, generation, &now);
            if status != previous {
                write_status(api, &name, &status).await?;
                events::publish(
                    ctx,
                    obj,
                    events::job_event(
                        EventType::Warning,
                        "InvalidSpec",
                        "Plan",
                        format!("invalid spec: {error}"),
                    ),
                )
                .await;
            }
            ctx.metrics.set_active_jobs(&resource_key, 0);
            return Ok(Action::requeue(ctx.settings.requeue_idle));
        }
    };

    let (jobs, pods) = match ctx.caches.for_namespace(ns) {
        Some(stores) => {
            stores.ready().await?;
            let mut jobs = stores.stage_jobs(ns, &name);
            jobs.retain(|j| controlled_by(&j.metadata, uid_of(obj)));
            let unmet = ctx
                .expectations
                .unmet(&resource_key, &jobs, std::time::Instant::now());
            if !unmet.is_empty() {
                // The store has not caught up with this operator's own creates or deletes:
                // deciding now would act on an older view. Their watch events trigger the
                // next reconcile; the requeue is a safety net.
                debug!(?unmet, "waiting for the Job store to show the last changes");
                return Ok(Action::requeue(std::time::Duration::from_secs(1)));
            }
            // A stage's result is read from its pods' termination messages once, when its Job
            // has finished, and then kept in the status: that read must not miss a pod the
            // store has not caught up with yet, so it lists. Every other reconcile reads the
            // store (pod problems of running Jobs; a lag there only delays a message).
            let pods = if needs_pods(&jobs, &previous, JobsNeedingPods::Finished) {
                list_stage_pods(ctx, ns, &name).await?
            } else {
                stores.stage_pods(ns, &name)
            };
            (jobs, pods)
        }
        None => list_stage_objects(ctx, ns, &name, uid_of(obj), &previous).await?,
    };
    let observed = observe::observe(&jobs, &pods);

    let decision = decide::decide(&Inputs {
        name: &name,
        plan: &plan,
        previous: &previous,
        generation,
        jobs: &observed,
        max_attempts: ctx.settings.max_attempts.max(1),
        now,
        runner_hash: Some(&stage_job::runner_hash(obj, &ctx.settings)),
        startup_deadline: Some(ctx.settings.startup_deadline),
    });
    act(obj, ctx, &plan, &decision, &observed, ns).await?;
    remove_finished_requests(ctx, ns, &name, &previous, &decision.status).await?;
    if decision.status != previous {
        write_status(api, &name, &decision.status).await?;
    }
    for ev in &decision.events {
        events::publish(ctx, obj, events::stage_event(obj, ev)).await;
    }
    for f in &decision.finished {
        if let Some(s) = f.seconds {
            ctx.metrics
                .stage_duration
                .get_or_create(&StageLabels {
                    kind: f.kind.to_string(),
                    outcome: if f.succeeded { "succeeded" } else { "failed" }.into(),
                })
                .observe(s);
        }
    }
    let active = decision
        .status
        .stages
        .iter()
        .filter(|s| s.phase == StagePhase::Running)
        .count() as i64;
    ctx.metrics.set_active_jobs(&resource_key, active);
    debug!(
        started = decision.start.len(),
        deleted = decision.delete.len(),
        active,
        "reconciled"
    );
    Ok(Action::requeue(if decision.in_progress() {
        ctx.settings.requeue_running
    } else {
        ctx.settings.requeue_idle
    }))
}

fn uid_of(obj: &PruneDistillJob) -> Option<&str> {
    obj.meta().uid.as_deref()
}

/// The stage Jobs and (while needed) Pods of job `name`, listed from the apiserver: the path of
/// reconciles run outside the controller, which has no stores.
async fn list_stage_objects(
    ctx: &Context,
    ns: &str,
    name: &str,
    uid: Option<&str>,
    previous: &PruneDistillJobStatus,
) -> Result<(Vec<Job>, Vec<Pod>)> {
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let mut jobs = jobs_api
        .list(&ListParams::default().labels(&labels::stage_selector(name)))
        .await?
        .items;
    jobs.retain(|j| controlled_by(&j.metadata, uid));
    let pods = if needs_pods(&jobs, previous, JobsNeedingPods::Unrecorded) {
        list_stage_pods(ctx, ns, name).await?
    } else {
        Vec::new()
    };
    Ok((jobs, pods))
}

async fn list_stage_pods(ctx: &Context, ns: &str, name: &str) -> Result<Vec<Pod>> {
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    Ok(pods_api
        .list(&ListParams::default().labels(&labels::stage_selector(name)))
        .await?
        .items)
}

/// Which Jobs make [`needs_pods`] true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobsNeedingPods {
    /// Any live Job whose stage the status does not record as finished.
    Unrecorded,
    /// Only those of them that have finished (their result is about to be recorded).
    Finished,
}

/// Whether some live Job's stage is not recorded as finished in `previous` (and, for
/// [`JobsNeedingPods::Finished`], the Job itself has finished).
fn needs_pods(jobs: &[Job], previous: &PruneDistillJobStatus, which: JobsNeedingPods) -> bool {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| which == JobsNeedingPods::Unrecorded || observe::job_outcome(j).is_some())
        .any(|j| {
            let l = j.labels();
            let (Some(stage), Some(key)) = (l.get(labels::STAGE), l.get(labels::KEY)) else {
                return false;
            };
            !previous.stages.iter().any(|s| {
                &s.id == stage
                    && labels::key_label(&s.key) == key
                    && matches!(
                        s.phase,
                        StagePhase::Succeeded | StagePhase::Failed | StagePhase::Skipped
                    )
            })
        })
}

async fn act(
    obj: &PruneDistillJob,
    ctx: &Context,
    plan: &pruneforge_api::Plan,
    decision: &Decision,
    observed: &[ObservedJob],
    ns: &str,
) -> Result<()> {
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let cms_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let key = format!("{ns}/{}", obj.name_any());
    for start in &decision.start {
        let Some(stage) = plan.get(start.stage.as_str()) else {
            continue;
        };
        let cm = stage_job::request_config_map(obj, plan, stage)?;
        let cm_name = cm.name_any();
        cms_api.patch(&cm_name, &apply, &Patch::Apply(&cm)).await?;
        let job = stage_job::stage_job(obj, stage, start.attempt, &start.job_name, &ctx.settings)?;
        match jobs_api.create(&PostParams::default(), &job).await {
            Ok(_) => {
                ctx.expectations
                    .created(&key, &start.job_name, std::time::Instant::now());
                info!(stage = %stage.id, attempt = start.attempt, job = %start.job_name, "stage started");
                ctx.metrics
                    .stages_started
                    .get_or_create(&KindLabels {
                        kind: stage.kind().to_string(),
                    })
                    .inc();
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                ctx.expectations
                    .created(&key, &start.job_name, std::time::Instant::now());
                debug!(job = %start.job_name, "stage Job exists already");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let name = obj.name_any();
    for job_name in &decision.delete {
        info!(job = %job_name, "deleting stale stage Job");
        ignore_not_found(jobs_api.delete(job_name, &DeleteParams::background()).await)?;
        ctx.expectations
            .deleted(&key, job_name, std::time::Instant::now());
        // Its request ConfigMap, unless the current plan still uses the same key.
        if let Some(job) = observed.iter().find(|j| &j.name == job_name) {
            let current = plan
                .get(&job.stage)
                .is_some_and(|s| job.matches_key(&s.key));
            if !current && job.key.len() == 64 {
                let cm = naming::request_config_map_name(&name, &job.stage, &job.key);
                ignore_not_found(cms_api.delete(&cm, &DeleteParams::background()).await)?;
            }
        }
    }
    Ok(())
}

/// Deletes the request ConfigMaps of stages that succeeded in this reconcile: a succeeded
/// stage never runs again under the same key, so its request is dead weight (thousands of
/// ConfigMaps at scale). A stage that starts again gets its ConfigMap applied anew.
async fn remove_finished_requests(
    ctx: &Context,
    ns: &str,
    name: &str,
    previous: &PruneDistillJobStatus,
    status: &PruneDistillJobStatus,
) -> Result<()> {
    let cms_api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    for stage in newly_succeeded(previous, status) {
        let cm = naming::request_config_map_name(name, &stage.id, &stage.key);
        debug!(configmap = %cm, "removing the request of a succeeded stage");
        ignore_not_found(cms_api.delete(&cm, &DeleteParams::background()).await)?;
    }
    Ok(())
}

/// Stages Succeeded in `status` that were not Succeeded (under the same key) in `previous`.
pub fn newly_succeeded<'a>(
    previous: &PruneDistillJobStatus,
    status: &'a PruneDistillJobStatus,
) -> impl Iterator<Item = &'a pruneforge_api::status::StageStatus> {
    let before: Vec<(String, String)> = previous
        .stages
        .iter()
        .filter(|s| s.phase == StagePhase::Succeeded)
        .map(|s| (s.id.clone(), s.key.clone()))
        .collect();
    status.stages.iter().filter(move |s| {
        s.phase == StagePhase::Succeeded
            && !before.iter().any(|(id, key)| *id == s.id && *key == s.key)
    })
}

fn ignore_not_found<T>(r: std::result::Result<T, kube::Error>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the whole status with server-side apply (field manager `pruneforge-operator`).
pub async fn write_status(
    api: &Api<PruneDistillJob>,
    name: &str,
    status: &PruneDistillJobStatus,
) -> Result<()> {
    let patch = json!({
        "apiVersion": format!("{}/{}", pruneforge_api::GROUP, pruneforge_api::VERSION),
        "kind": pruneforge_api::KIND,
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
