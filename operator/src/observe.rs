//! What the cluster says about a job's stages: its owned Jobs and their Pods, reduced to plain
//! values ([`ObservedJob`]) the decision logic works on.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use pruneforge_api::contract::StageResult;

use crate::labels;

/// Name of the runner container in stage pods.
pub const RUNNER_CONTAINER: &str = "runner";

/// Where a stage Job is.
#[derive(Clone, Debug, PartialEq)]
pub enum JobState {
    /// Created suspended (Kueue has not admitted it yet).
    Suspended,
    /// Pods pending or running.
    Running,
    /// Complete (or its success criteria are met).
    Succeeded,
    /// Failed: backoff limit exhausted, deadline exceeded or pod failure policy.
    Failed {
        /// Why, e.g. `BackoffLimitExceeded: Job has reached the specified backoff limit; pod
        /// x: OOMKilled (exit 137)`.
        reason: String,
    },
}

/// One stage Job, as far as the operator cares.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedJob {
    /// Job name.
    pub name: String,
    /// Stage id (label).
    pub stage: String,
    /// Full cache key (annotation), or the key prefix of the label when the annotation is gone.
    pub key: String,
    /// Attempt number (label), 1-based.
    pub attempt: u32,
    /// State.
    pub state: JobState,
    /// `status.startTime`.
    pub start_time: Option<Time>,
    /// `status.completionTime` (or the time of the terminal condition).
    pub completion_time: Option<Time>,
    /// Results read from the termination messages of its pods (one per shard for Indexed Jobs,
    /// ordered by shard index).
    pub results: Vec<StageResult>,
    /// Why its pods do not make progress (image pull errors, unschedulable), or why the last pod
    /// failed.
    pub problem: Option<String>,
    /// Being deleted.
    pub deleting: bool,
    /// Whether any of its pods ever ran (a container started, or a pod finished).
    pub started: bool,
    /// Its pods that exist now.
    pub pods: usize,
    /// The runner-settings hash its pod template was built from (annotation), when recorded.
    pub runner_hash: Option<String>,
}

impl ObservedJob {
    /// Whether the Job belongs to the stage with this cache key.
    pub fn matches_key(&self, key: &str) -> bool {
        if self.key.len() == key.len() {
            self.key == key
        } else {
            labels::key_label(key) == self.key
        }
    }

    /// Whether the Job finished.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, JobState::Succeeded | JobState::Failed { .. })
    }
}

/// How a Job ended: `Some(Ok(()))` complete, `Some(Err(reason))` failed, `None` not finished.
pub fn job_outcome(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let is = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if is("Complete")
        .or_else(|| is("SuccessCriteriaMet"))
        .is_some()
    {
        return Some(Ok(()));
    }
    // `FailureTarget` alone is not the end: the Job controller still waits for its pods to
    // terminate (one may still be uploading) before it sets `Failed`.
    is("Failed").map(|c| {
        let reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        Err(match c.message.as_deref().filter(|m| !m.is_empty()) {
            Some(m) => format!("{reason}: {m}"),
            None => reason,
        })
    })
}

/// Reduces stage Jobs and the Pods of those Jobs to [`ObservedJob`]s. Jobs without the stage
/// labels are ignored.
pub fn observe(jobs: &[Job], pods: &[Pod]) -> Vec<ObservedJob> {
    let mut pods_by_job: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        let l = pod.labels();
        if let Some(job) = l
            .get(labels::POD_JOB_NAME)
            .or_else(|| l.get(labels::POD_JOB_NAME_LEGACY))
        {
            pods_by_job.entry(job.as_str()).or_default().push(pod);
        }
    }
    jobs.iter()
        .filter_map(|job| {
            let name = job.metadata.name.clone()?;
            let pods = pods_by_job.get(name.as_str()).cloned().unwrap_or_default();
            observe_job(job, name, &pods)
        })
        .collect()
}

fn observe_job(job: &Job, name: String, pods: &[&Pod]) -> Option<ObservedJob> {
    let l = job.labels();
    let stage = l.get(labels::STAGE)?.clone();
    let key = job
        .annotations()
        .get(labels::KEY_ANNOTATION)
        .or_else(|| l.get(labels::KEY))?
        .clone();
    let attempt = l
        .get(labels::ATTEMPT)
        .and_then(|a| a.parse::<u32>().ok())
        .unwrap_or(1);
    let status = job.status.clone().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    let condition = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let suspended = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);

    let pod_facts: Vec<PodFacts> = pods.iter().map(|p| pod_facts(p)).collect();
    let last_failure = pod_facts
        .iter()
        .filter(|p| p.failed)
        .filter_map(|p| p.failure.clone())
        .next_back();

    let mut completion_time = status.completion_time.clone();
    let state = if let Some(c) = condition("Complete").or_else(|| condition("SuccessCriteriaMet")) {
        completion_time = completion_time.or_else(|| c.last_transition_time.clone());
        JobState::Succeeded
    } else if let Some(c) = condition("Failed") {
        completion_time = completion_time.or_else(|| c.last_transition_time.clone());
        let mut reason = c.reason.clone().unwrap_or_else(|| "Failed".into());
        if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
            reason = format!("{reason}: {m}");
        }
        if let Some(f) = &last_failure {
            reason = format!("{reason}; {f}");
        }
        JobState::Failed { reason }
    } else if suspended {
        JobState::Suspended
    } else {
        JobState::Running
    };

    let mut results: BTreeMap<u32, StageResult> = BTreeMap::new();
    for facts in &pod_facts {
        if let Some(result) = &facts.result {
            let index = result.shard.map_or(facts.index.unwrap_or(0), |s| s.index);
            // Succeeded pods win over failed attempts of the same index.
            let replace = match results.get(&index) {
                None => true,
                Some(old) => !old.is_ok() && result.is_ok(),
            };
            if replace {
                results.insert(index, result.clone());
            }
        }
    }
    // A Job that will fail but whose pods still run: no next attempt until they have stopped.
    let failing = condition("FailureTarget").map(|c| {
        format!(
            "{}: waiting for its pods to stop before the next attempt",
            c.reason.as_deref().unwrap_or("FailureTarget")
        )
    });
    let problem = match state {
        JobState::Running | JobState::Suspended => failing.or_else(|| {
            pod_facts
                .iter()
                .filter(|p| !p.failed && !p.succeeded)
                .find_map(|p| p.stuck.clone())
                .or(last_failure)
        }),
        JobState::Failed { .. } | JobState::Succeeded => None,
    };

    Some(ObservedJob {
        name,
        stage,
        key,
        attempt,
        state,
        start_time: status.start_time,
        completion_time,
        results: results.into_values().collect(),
        problem,
        deleting: job.metadata.deletion_timestamp.is_some(),
        pods: pod_facts.len(),
        started: pod_facts.iter().any(|p| p.started)
            || status.succeeded.unwrap_or(0) > 0
            || status.failed.unwrap_or(0) > 0,
        runner_hash: job
            .annotations()
            .get(labels::RUNNER_HASH_ANNOTATION)
            .cloned(),
    })
}

/// What one pod tells.
struct PodFacts {
    /// The pod got past startup: running or finished.
    started: bool,
    succeeded: bool,
    failed: bool,
    /// Completion index (Indexed Jobs).
    index: Option<u32>,
    /// Parsed termination message.
    result: Option<StageResult>,
    /// Why a terminated pod failed.
    failure: Option<String>,
    /// Why a live pod does not progress.
    stuck: Option<String>,
}

/// Waiting reasons that mean the pod will not start without a change.
const STUCK_WAITING: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

fn pod_facts(pod: &Pod) -> PodFacts {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    let index = pod
        .annotations()
        .get(labels::POD_COMPLETION_INDEX)
        .or_else(|| pod.labels().get(labels::POD_COMPLETION_INDEX))
        .and_then(|i| i.parse().ok());
    let container = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.name == RUNNER_CONTAINER);
    let state = container.as_ref().and_then(|c| c.state.clone());
    let last_state = container.as_ref().and_then(|c| c.last_state.clone());
    let terminated = state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .or_else(|| last_state.and_then(|s| s.terminated));
    let result = terminated
        .as_ref()
        .and_then(|t| t.message.as_deref())
        .and_then(|m| StageResult::from_json(m).ok());

    let failure = if phase == "Failed" {
        let mut parts = Vec::new();
        if let Some(t) = &terminated {
            parts.push(format!(
                "{} (exit {})",
                t.reason.clone().unwrap_or_else(|| "Error".into()),
                t.exit_code
            ));
        } else if let Some(r) = &status.reason {
            parts.push(r.clone());
        }
        match &result {
            Some(r) => parts.extend(r.message.clone()),
            None => {
                if let Some(m) = terminated.as_ref().and_then(|t| t.message.as_deref()) {
                    // FallbackToLogsOnError: the tail of the log.
                    parts.push(last_line(m).to_string());
                } else if let Some(m) = &status.message {
                    parts.push(m.clone());
                }
            }
        }
        parts.retain(|p| !p.is_empty());
        Some(format!("pod {name}: {}", parts.join(": ")))
    } else {
        None
    };

    let waiting = state.as_ref().and_then(|s| s.waiting.clone()).filter(|w| {
        w.reason
            .as_deref()
            .is_some_and(|r| STUCK_WAITING.contains(&r))
    });
    let unschedulable = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    let stuck = if let Some(w) = waiting {
        let reason = w.reason.unwrap_or_default();
        Some(match w.message.filter(|m| !m.is_empty()) {
            Some(m) => format!("pod {name}: {reason}: {m}"),
            None => format!("pod {name}: {reason}"),
        })
    } else {
        unschedulable.map(|c| {
            let reason = c.reason.unwrap_or_else(|| "Unschedulable".into());
            match c.message.filter(|m| !m.is_empty()) {
                Some(m) => format!("pod {name}: {reason}: {m}"),
                None => format!("pod {name}: {reason}"),
            }
        })
    };

    PodFacts {
        started: matches!(phase.as_str(), "Running" | "Succeeded" | "Failed"),
        succeeded: phase == "Succeeded",
        failed: phase == "Failed",
        index,
        result,
        failure,
        stuck,
    }
}

fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("").trim()
}
