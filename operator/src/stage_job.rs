//! The Kubernetes objects of one stage attempt: the request ConfigMap and the batch/v1 Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Resource, ResourceExt};
use pruneforge_api::contract::{JobRef, StageRequest};
use pruneforge_api::spec::{RunnerSpec, StorageSpec};
use pruneforge_api::{Plan, PruneDistillJob, StageInstance};
use serde_json::json;

use crate::error::{Error, Result};
use crate::labels;
use crate::naming;
use crate::pod_template::{self, PodParams, REQUEST_DIR, REQUEST_KEY};
use crate::settings::Settings;

/// Runner command of a stage pod.
pub fn stage_command() -> Vec<String> {
    vec![
        "pruneforge".into(),
        "stage".into(),
        "--request".into(),
        format!("{REQUEST_DIR}/{REQUEST_KEY}"),
    ]
}

/// Labels shared by a stage's ConfigMap, Job and pods.
pub fn stage_labels(job: &PruneDistillJob, stage: &StageInstance) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::JOB.to_string(), job.name_any()),
        (labels::STAGE.to_string(), stage.id.to_string()),
        (
            labels::KEY.to_string(),
            labels::key_label(&stage.key).to_string(),
        ),
        (labels::ROLE.to_string(), labels::ROLE_STAGE.to_string()),
    ])
}

/// The request ConfigMap of `stage` (one per cache key, shared by its attempts).
pub fn request_config_map(
    job: &PruneDistillJob,
    plan: &Plan,
    stage: &StageInstance,
) -> Result<ConfigMap> {
    let request = StageRequest::from_plan(
        plan,
        stage.id.as_str(),
        JobRef {
            name: job.name_any(),
            namespace: job.namespace(),
        },
    )
    .map_err(|source| Error::Contract {
        stage: stage.id.to_string(),
        source,
    })?;
    let name = naming::request_config_map_name(&job.name_any(), stage.id.as_str(), &stage.key);
    let value = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": job.namespace(),
            "labels": stage_labels(job, stage),
            "annotations": {labels::KEY_ANNOTATION: stage.key},
            "ownerReferences": [owner_reference(job)],
        },
        "data": {REQUEST_KEY: request.to_json()},
    });
    serde_json::from_value(value).map_err(|source| Error::Serialize {
        what: "request ConfigMap",
        source,
    })
}

/// The controller owner reference of a stage Job or request ConfigMap, with
/// `blockOwnerDeletion`: a foreground deletion (`kubectl delete --cascade=foreground`) of the
/// PruneDistillJob then waits until the garbage collector has deleted them.
pub fn owner_reference(
    job: &PruneDistillJob,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    job.controller_owner_ref(&()).map(|mut owner| {
        owner.block_owner_deletion = Some(true);
        owner
    })
}

/// Hash of what a stage pod's template is built from besides the stage itself: the runner and
/// storage settings with the operator's defaults filled in (image, resources, placement,
/// service account, secrets). 16 hex digits.
pub fn runner_hash(job: &PruneDistillJob, settings: &Settings) -> String {
    let namespace = job.namespace();
    hash_of(
        &settings.effective_runner(&job.spec.runner, namespace.as_deref()),
        &settings.effective_storage(&job.spec.storage),
    )
}

/// [`runner_hash`] of effective runner and storage settings.
fn hash_of(runner: &RunnerSpec, storage: &StorageSpec) -> String {
    use sha2::{Digest, Sha256};
    let text = json!({"runner": runner, "storage": storage}).to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// The Job of `attempt` of `stage`.
pub fn stage_job(
    job: &PruneDistillJob,
    stage: &StageInstance,
    attempt: u32,
    job_name: &str,
    settings: &Settings,
) -> Result<Job> {
    let spec = &job.spec;
    let namespace = job.namespace();
    let runner = &settings.effective_runner(&spec.runner, namespace.as_deref());
    let storage = &settings.effective_storage(&spec.storage);
    let mut labels = stage_labels(job, stage);
    labels.insert(labels::ATTEMPT.into(), attempt.to_string());
    let mut job_labels = labels.clone();
    if let Some(q) = &runner.queue_name {
        job_labels.insert(labels::KUEUE_QUEUE.into(), q.clone());
    }
    let cm = naming::request_config_map_name(&job.name_any(), stage.id.as_str(), &stage.key);
    let image = runner.image.as_deref().unwrap_or(&settings.runner_image);
    let env = vec![
        env("PRUNEFORGE_STAGE", stage.id.as_str()),
        env("PRUNEFORGE_JOB", &job.name_any()),
    ];
    let template = pod_template::pod_template(&PodParams {
        image,
        command: stage_command(),
        runner,
        storage,
        request_config_map: Some(&cm),
        labels,
        env,
        gpus: true,
    });
    let backoff = runner.backoff_limit.unwrap_or(0);
    let mut job_spec = json!({
        "template": template,
        // Evictions, preemptions and node drains do not count as failures.
        "podFailurePolicy": {"rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
        ]},
    });
    if stage.shards > 1 {
        job_spec["completionMode"] = json!("Indexed");
        job_spec["completions"] = json!(stage.shards);
        job_spec["parallelism"] = json!(stage.shards);
        job_spec["backoffLimitPerIndex"] = json!(backoff);
    } else {
        job_spec["completions"] = json!(1);
        job_spec["parallelism"] = json!(1);
        job_spec["backoffLimit"] = json!(backoff);
    }
    if let Some(d) = runner.active_deadline_seconds {
        job_spec["activeDeadlineSeconds"] = json!(d);
    }
    // Finished stage Jobs (and their pods) go away after a day unless the spec says otherwise:
    // their results are in the status by then, and a Job deleted before the operator saw it
    // finish is created again and finds its committed artifact.
    job_spec["ttlSecondsAfterFinished"] = json!(runner
        .ttl_seconds_after_finished
        .unwrap_or(settings.stage_job_ttl_seconds));
    if runner.queue_name.is_some() {
        job_spec["suspend"] = json!(true);
    }
    let value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": job.namespace(),
            "labels": job_labels,
            "annotations": {
                labels::KEY_ANNOTATION: stage.key,
                labels::RUNNER_HASH_ANNOTATION: hash_of(runner, storage),
            },
            "ownerReferences": [owner_reference(job)],
        },
        "spec": job_spec,
    });
    serde_json::from_value(value).map_err(|source| Error::Serialize {
        what: "stage Job",
        source,
    })
}

/// The artifact clean-up Job run by the `pruneforge.dev/artifacts` finalizer when
/// `spec.storage.retention` is Delete: `pruneforge gc --prefix <uri> ...`, one prefix per stage
/// artifact the job wrote. It has no owner reference (its owner is being deleted) and removes
/// itself `gcTtlSeconds` after finishing.
pub fn gc_job(job: &PruneDistillJob, prefixes: &[String], settings: &Settings) -> Result<Job> {
    let spec = &job.spec;
    let uid = job.meta().uid.clone().unwrap_or_default();
    let name = naming::gc_job_name(&job.name_any(), &uid);
    let labels = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::JOB.to_string(), job.name_any()),
        (labels::ROLE.to_string(), labels::ROLE_GC.to_string()),
    ]);
    let mut command = vec!["pruneforge".to_string(), "gc".to_string()];
    for p in prefixes {
        command.push("--prefix".into());
        command.push(p.clone());
    }
    // The clean-up Job runs on CPU, so it gets the CPU runner image unless the spec names one,
    // and none of the placement meant for GPU stages: it must not wait for a GPU node.
    let mut cpu_runner = spec.runner.clone();
    cpu_runner.gpu.count = 0;
    cpu_runner.node_selector.clear();
    cpu_runner.tolerations.clear();
    cpu_runner.priority_class_name = None;
    let namespace = job.namespace();
    let runner = settings.effective_runner(&cpu_runner, namespace.as_deref());
    let storage = settings.effective_storage(&spec.storage);
    let image = runner.image.as_deref().unwrap_or(&settings.runner_image);
    let template = pod_template::pod_template(&PodParams {
        image,
        command,
        runner: &runner,
        storage: &storage,
        request_config_map: None,
        labels: labels.clone(),
        env: vec![env("PRUNEFORGE_JOB", &job.name_any())],
        gpus: false,
    });
    let value = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": job.namespace(), "labels": labels},
        "spec": {
            "template": template,
            "backoffLimit": 2,
            "activeDeadlineSeconds": settings.gc_deadline_seconds,
            "ttlSecondsAfterFinished": settings.gc_ttl_seconds,
        },
    });
    serde_json::from_value(value).map_err(|source| Error::Serialize {
        what: "clean-up Job",
        source,
    })
}

fn env(name: &str, value: &str) -> serde_json::Value {
    json!({"name": name, "value": value})
}
