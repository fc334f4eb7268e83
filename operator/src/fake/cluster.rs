//! Helpers that play the parts of a cluster the fake apiserver lacks: the Job controller
//! ([`sync_jobs`]: pods for Jobs, Job conditions from pod phases) and the kubelet
//! ([`terminate_pod`], [`set_pod_waiting`]), plus shortcuts that finish a stage Job in one step.

use serde_json::{json, Value};

use super::store::Store;
use super::FakeApiServer;
use crate::labels;
use crate::observe::RUNNER_CONTAINER;

/// `/apis/batch/v1`.
pub const BATCH: &str = "/apis/batch/v1";
/// `/api/v1`.
pub const CORE: &str = "/api/v1";

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// How a pod's runner container ended.
#[derive(Clone, Debug)]
pub struct PodOutcome {
    /// Exit code (0 = success).
    pub exit_code: i32,
    /// Terminated reason (`Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    /// Termination message.
    pub message: String,
}

impl PodOutcome {
    /// A successful container whose termination message is `message`.
    pub fn succeeded(message: impl Into<String>) -> Self {
        PodOutcome {
            exit_code: 0,
            reason: "Completed".into(),
            message: message.into(),
        }
    }

    /// A failed container.
    pub fn failed(exit_code: i32, reason: &str, message: impl Into<String>) -> Self {
        PodOutcome {
            exit_code,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Creates one pod of `job` the way the Job controller does (template labels, job-name
/// labels, completion index, owner reference); returns its name.
pub fn create_pod(store: &mut Store, job: &Value, index: Option<u32>, serial: usize) -> String {
    let name = meta_str(job, "name");
    let ns = meta_str(job, "namespace");
    let mut labels_map = job
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    labels_map[labels::POD_JOB_NAME] = json!(name);
    labels_map[labels::POD_JOB_NAME_LEGACY] = json!(name);
    labels_map["batch.kubernetes.io/controller-uid"] = job["metadata"]["uid"].clone();
    let mut annotations = job
        .pointer("/spec/template/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(i) = index {
        annotations[labels::POD_COMPLETION_INDEX] = json!(i.to_string());
        labels_map[labels::POD_COMPLETION_INDEX] = json!(i.to_string());
    }
    let pod_name = match index {
        Some(i) => format!("{name}-{i}-p{serial}"),
        None => format!("{name}-p{serial}"),
    };
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": ns,
            "labels": labels_map,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": job.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({})),
        "status": {"phase": "Pending"},
    });
    store.put(CORE, "pods", pod);
    pod_name
}

/// Plays the kubelet: the pod's runner container terminated.
pub fn terminate_pod(store: &mut Store, ns: &str, pod: &str, outcome: &PodOutcome) {
    let Some(mut obj) = store.get(CORE, "pods", Some(ns), pod).cloned() else {
        return;
    };
    let t = now();
    obj["status"] = json!({
        "phase": if outcome.exit_code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": [{
            "name": RUNNER_CONTAINER, "image": "runner", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": outcome.exit_code, "reason": outcome.reason,
                "message": outcome.message, "startedAt": t, "finishedAt": t}},
        }],
    });
    store.put(CORE, "pods", obj);
}

/// Plays the kubelet: the runner container waits (e.g. `ImagePullBackOff`).
pub fn set_pod_waiting(store: &mut Store, ns: &str, pod: &str, reason: &str, message: &str) {
    let Some(mut obj) = store.get(CORE, "pods", Some(ns), pod).cloned() else {
        return;
    };
    obj["status"] = json!({
        "phase": "Pending",
        "containerStatuses": [{
            "name": RUNNER_CONTAINER, "image": "runner", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}},
        }],
    });
    store.put(CORE, "pods", obj);
}

fn meta_str(obj: &Value, f: &str) -> String {
    obj["metadata"][f].as_str().unwrap_or_default().to_string()
}

fn has_condition(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|c| {
            c.iter().any(|c| {
                (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
            })
        })
}

fn set_condition(
    store: &mut Store,
    mut job: Value,
    type_: &str,
    reason: &str,
    message: &str,
    counts: (usize, usize),
) {
    let t = now();
    job["status"]["conditions"] = json!([{"type": type_, "status": "True", "reason": reason,
        "message": message, "lastTransitionTime": t, "lastProbeTime": t}]);
    job["status"]["succeeded"] = json!(counts.0);
    job["status"]["failed"] = json!(counts.1);
    job["status"]["active"] = json!(0);
    if type_ == "Complete" {
        job["status"]["completionTime"] = json!(t);
    }
    store.put(BATCH, "jobs", job);
}

/// One round of a minimal Job controller over every Job: see [`sync_job`]. Returns the names
/// of pods it created.
pub fn sync_jobs(store: &mut Store) -> Vec<String> {
    let jobs = store.list(BATCH, "jobs", None, &super::Selector::default());
    let mut created = Vec::new();
    for job in jobs {
        created.extend(sync_job(store, &job));
    }
    created
}

/// One round of a minimal Job controller for one Job: creates the missing pods of a running (not
/// suspended, not finished) Job, replaces failed pods within `backoffLimit` (per index for
/// Indexed Jobs), and marks the Job Complete (every index succeeded) or Failed
/// (`BackoffLimitExceeded`). Returns the names of pods it created.
pub fn sync_job(store: &mut Store, job: &Value) -> Vec<String> {
    let mut created = Vec::new();
    if has_condition(job) || job.pointer("/spec/suspend") == Some(&json!(true)) {
        return created;
    }
    let name = meta_str(job, "name");
    let ns = meta_str(job, "namespace");
    let indexed = job.pointer("/spec/completionMode") == Some(&json!("Indexed"));
    let completions = job
        .pointer("/spec/completions")
        .and_then(|c| c.as_u64())
        .unwrap_or(1) as u32;
    let backoff = job
        .pointer("/spec/backoffLimitPerIndex")
        .or_else(|| job.pointer("/spec/backoffLimit"))
        .and_then(|b| b.as_u64())
        .unwrap_or(6) as usize;
    let selector = super::Selector::parse(&format!("{}={name}", labels::POD_JOB_NAME));
    let pods = store.list(CORE, "pods", Some(&ns), &selector);
    let phase = |p: &Value| {
        p.pointer("/status/phase")
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    let mut succeeded = 0usize;
    let mut failed_total = 0usize;
    let mut job_failed = false;
    for i in 0..completions {
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| pod_index(p).unwrap_or(0) == i)
            .collect();
        let ok = mine.iter().any(|p| phase(p) == "Succeeded");
        let failed = mine.iter().filter(|p| phase(p) == "Failed").count();
        let live = mine
            .iter()
            .any(|p| phase(p) != "Succeeded" && phase(p) != "Failed");
        failed_total += failed;
        if ok {
            succeeded += 1;
        } else if failed > backoff {
            job_failed = true;
        } else if !live {
            let serial = pods.len() + created.len();
            created.push(create_pod(store, job, indexed.then_some(i), serial));
        }
    }
    if job_failed {
        set_condition(
            store,
            job.clone(),
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            (succeeded, failed_total),
        );
    } else if succeeded == completions as usize {
        set_condition(
            store,
            job.clone(),
            "Complete",
            "",
            "",
            (succeeded, failed_total),
        );
    }
    created
}

fn pod_index(pod: &Value) -> Option<u32> {
    pod.pointer(&format!(
        "/metadata/annotations/{}",
        labels::POD_COMPLETION_INDEX.replace('/', "~1")
    ))
    .and_then(|i| i.as_str())
    .and_then(|i| i.parse().ok())
}

/// The stage request a stage Job's pods would read (from its request ConfigMap).
pub fn job_request(store: &Store, job: &Value) -> Option<pruneforge_api::StageRequest> {
    let ns = meta_str(job, "namespace");
    let volumes = job.pointer("/spec/template/spec/volumes")?.as_array()?;
    let cm = volumes
        .iter()
        .find(|v| v["name"] == "request")?
        .pointer("/configMap/name")?
        .as_str()?;
    let data = store
        .get(CORE, "configmaps", Some(&ns), cm)?
        .pointer("/data/request.json")?
        .as_str()?
        .to_string();
    pruneforge_api::StageRequest::from_json(&data).ok()
}

impl FakeApiServer {
    /// Runs [`sync_jobs`].
    pub fn sync_jobs(&self) -> Vec<String> {
        self.with(sync_jobs)
    }

    /// Creates the pods of Job `job` if needed, terminates every pending one with
    /// `outcome(completion index)`, then lets the Job controller update the Job.
    pub fn finish_job_with(
        &self,
        ns: &str,
        job: &str,
        outcome: impl Fn(Option<u32>) -> PodOutcome,
    ) {
        self.with(|s| {
            let Some(j) = s.get(BATCH, "jobs", Some(ns), job).cloned() else {
                return;
            };
            sync_job(s, &j);
            let selector = super::Selector::parse(&format!("{}={job}", labels::POD_JOB_NAME));
            for pod in s.list(CORE, "pods", Some(ns), &selector) {
                if pod.pointer("/status/phase") == Some(&json!("Pending")) {
                    let name = meta_str(&pod, "name");
                    terminate_pod(s, ns, &name, &outcome(pod_index(&pod)));
                }
            }
            if let Some(j) = s.get(BATCH, "jobs", Some(ns), job).cloned() {
                sync_job(s, &j);
            }
        })
    }

    /// [`FakeApiServer::finish_job_with`] with the same outcome for every pod.
    pub fn finish_job(&self, ns: &str, job: &str, outcome: &PodOutcome) {
        self.finish_job_with(ns, job, |_| outcome.clone())
    }

    /// Plays the kubelet for `job` until the Job finishes (its backoffLimit may make the Job
    /// controller create several pods), every pod ending with `outcome`.
    pub fn run_job_to_end(&self, ns: &str, job: &str, outcome: &PodOutcome) {
        for _ in 0..32 {
            self.finish_job(ns, job, outcome);
            let done = self
                .get(BATCH, "jobs", ns, job)
                .is_none_or(|j| has_condition(&j));
            if done {
                return;
            }
        }
    }

    /// Names of the stage Jobs in `ns` that have not finished and are not suspended.
    pub fn running_jobs(&self, ns: &str) -> Vec<String> {
        self.list(BATCH, "jobs", Some(ns))
            .into_iter()
            .filter(|j| !has_condition(j) && j.pointer("/spec/suspend") != Some(&json!(true)))
            .filter(|j| j.pointer("/metadata/labels/pruneforge.dev~1role") == Some(&json!("stage")))
            .map(|j| meta_str(&j, "name"))
            .collect()
    }

    /// Finishes every running stage Job in `ns` successfully with the synthetic result of its
    /// request (per shard for Indexed Jobs); returns how many Jobs it finished.
    pub fn succeed_running_jobs(&self, ns: &str) -> usize {
        let names = self.running_jobs(ns);
        for name in &names {
            let request = self.with(|s| {
                s.get(BATCH, "jobs", Some(ns), name)
                    .cloned()
                    .and_then(|j| job_request(s, &j))
            });
            self.finish_job_with(ns, name, |index| match &request {
                Some(r) => {
                    let r = r
                        .for_shard(index.unwrap_or(0))
                        .unwrap_or_else(|_| r.clone());
                    PodOutcome::succeeded(super::results::succeeded(&r).to_termination_message())
                }
                None => PodOutcome::succeeded(""),
            });
        }
        names.len()
    }
}
