//! The runner pod every stage Job (and the clean-up Job) runs: image, security context,
//! scheduling, storage credentials and volumes. See the crate docs for the runner contract.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pruneforge_api::spec::{PullPolicy, RunnerSpec, StorageSpec};
use serde_json::{json, Value};

use crate::observe::RUNNER_CONTAINER;

/// Where the request ConfigMap is mounted.
pub const REQUEST_DIR: &str = "/etc/pruneforge/request";
/// Key of the request in the ConfigMap (and file name under [`REQUEST_DIR`]).
pub const REQUEST_KEY: &str = "request.json";
/// Data baked into the runner image.
pub const DATA_DIR: &str = "/usr/share/pruneforge/data";
/// Writable scratch directory (emptyDir); also the container's working directory, so relative
/// `file://` storage paths resolve under it.
pub const WORK_DIR: &str = "/work";
/// Writable temp directory (emptyDir), also `HOME`.
pub const TMP_DIR: &str = "/tmp";
/// UID and GID of the runner.
pub const RUNNER_UID: i64 = 65532;

/// What the pod runs.
pub struct PodParams<'a> {
    /// Resolved image.
    pub image: &'a str,
    /// Container command.
    pub command: Vec<String>,
    /// Runner settings of the spec.
    pub runner: &'a RunnerSpec,
    /// Storage settings of the spec.
    pub storage: &'a StorageSpec,
    /// Request ConfigMap to mount (stage Jobs).
    pub request_config_map: Option<&'a str>,
    /// Labels of the pod.
    pub labels: BTreeMap<String, String>,
    /// Extra env (before `spec.runner.env`, which wins).
    pub env: Vec<serde_json::Value>,
    /// Whether to request the GPUs of `spec.runner.gpu` (stage Jobs; the clean-up Job runs on
    /// CPU).
    pub gpus: bool,
}

/// Mount path of the storage root for a `file://` URI: absolute paths as they are, relative
/// ones under [`WORK_DIR`].
pub fn file_mount_path(uri: &str) -> Option<String> {
    let path = uri.strip_prefix("file://")?;
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return None;
    }
    Some(if path.starts_with('/') {
        path.to_string()
    } else {
        let rel = path.trim_start_matches("./");
        format!("{WORK_DIR}/{rel}")
    })
}

/// The pod template (`spec.template` of a Job) as JSON.
pub fn pod_template(p: &PodParams<'_>) -> Value {
    let runner = p.runner;
    let mut env: Vec<EnvVar> = vec![
        env_var("PRUNEFORGE_DATA_DIR", DATA_DIR),
        env_var("HOME", TMP_DIR),
        env_var("TMPDIR", TMP_DIR),
    ];
    env.extend(
        p.env
            .iter()
            .filter_map(|v| serde_json::from_value::<EnvVar>(v.clone()).ok()),
    );
    for e in &runner.env {
        env.retain(|x| x.name != e.name);
        env.push(e.clone());
    }

    let mut mounts = vec![
        json!({"name": "tmp", "mountPath": TMP_DIR}),
        json!({"name": "work", "mountPath": WORK_DIR}),
    ];
    let scratch = scratch_volume(runner);
    let mut volumes = vec![
        json!({"name": "tmp", "emptyDir": scratch}),
        json!({"name": "work", "emptyDir": scratch}),
    ];
    if let Some(cm) = p.request_config_map {
        mounts.push(json!({"name": "request", "mountPath": REQUEST_DIR, "readOnly": true}));
        volumes.push(json!({"name": "request", "configMap": {"name": cm, "defaultMode": 0o444}}));
    }
    if let (Some(pvc), Some(path)) = (&p.storage.pvc_name, file_mount_path(&p.storage.uri)) {
        mounts.push(json!({"name": "storage", "mountPath": path}));
        volumes.push(json!({"name": "storage", "persistentVolumeClaim": {"claimName": pvc}}));
    }

    let mut container = json!({
        "name": RUNNER_CONTAINER,
        "image": p.image,
        "command": p.command,
        "workingDir": WORK_DIR,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    });
    if let Some(policy) = runner.image_pull_policy {
        container["imagePullPolicy"] = json!(pull_policy(policy));
    }
    if let Some(secret) = &p.storage.secret_ref {
        container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
    }
    let resources = resources(runner, p.gpus);
    if let Ok(r) = serde_json::to_value(&resources) {
        if r.as_object().is_some_and(|o| !o.is_empty()) {
            container["resources"] = r;
        }
    }

    let mut labels = p.labels.clone();
    for (k, v) in &runner.pod_labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "enableServiceLinks": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    });
    // Runner pods never talk to the apiserver: no API token, with or without a service account
    // (workload identity for object storage uses its own projected token).
    if let Some(sa) = &runner.service_account_name {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    pod_spec["automountServiceAccountToken"] = json!(false);
    if !runner.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(runner.node_selector);
    }
    if !runner.tolerations.is_empty() {
        pod_spec["tolerations"] = json!(runner.tolerations);
    }
    if let Some(a) = &runner.affinity {
        pod_spec["affinity"] = json!(a);
    }
    if let Some(pc) = &runner.priority_class_name {
        pod_spec["priorityClassName"] = json!(pc);
    }
    let mut metadata = json!({"labels": labels});
    if !runner.pod_annotations.is_empty() {
        metadata["annotations"] = json!(runner.pod_annotations);
    }
    json!({"metadata": metadata, "spec": pod_spec})
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn pull_policy(p: PullPolicy) -> &'static str {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

/// The emptyDir of the scratch volumes (`/tmp`, `/work`): limited to the container's
/// `ephemeral-storage` limit when `spec.runner.resources` sets one, so a stage that fills its
/// scratch space is evicted instead of filling the node's disk. Without that limit the
/// volumes are unlimited (the node's own eviction thresholds apply).
pub fn scratch_volume(runner: &RunnerSpec) -> Value {
    let limit = runner
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("ephemeral-storage"));
    match limit {
        Some(q) => json!({"sizeLimit": q.0}),
        None => json!({}),
    }
}

/// `spec.runner.resources` with the GPU request added to the limits (extended resources are
/// requested through limits; requests default to them).
pub fn resources(runner: &RunnerSpec, gpus: bool) -> ResourceRequirements {
    let mut r = runner.resources.clone().unwrap_or_default();
    if gpus && runner.gpu.count > 0 {
        r.limits.get_or_insert_with(BTreeMap::new).insert(
            runner.gpu.resource_name.clone(),
            Quantity(runner.gpu.count.to_string()),
        );
        if let Some(req) = r.requests.as_mut() {
            req.insert(
                runner.gpu.resource_name.clone(),
                Quantity(runner.gpu.count.to_string()),
            );
        }
    }
    r
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    #[test]
    fn scratch_volumes_take_the_ephemeral_storage_limit() {
        let mut runner = RunnerSpec::default();
        assert_eq!(scratch_volume(&runner), json!({}));
        runner.resources = Some(
            serde_json::from_value(json!({"limits": {"ephemeral-storage": "200Gi", "cpu": "8"}}))
                .expect("resources"),
        );
        assert_eq!(scratch_volume(&runner), json!({"sizeLimit": "200Gi"}));
    }
}
