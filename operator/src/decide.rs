//! The reconcile decision as a pure function: given the plan, the previous status and the
//! observed stage Jobs, what the new status is and which Jobs to create or delete.
//!
//! Rules:
//! * A stage whose status entry is Succeeded with its current cache key is never rerun.
//! * A stage's Jobs are matched by stage id and cache key; Jobs of stages that left the plan or
//!   whose key changed are deleted, and the stage (and, through the changed input keys, its
//!   dependants) starts over.
//! * A Job that failed (its backoffLimit exhausted or its deadline exceeded) is one attempt;
//!   the stage is retried with a new Job until `max_attempts`, then it is Failed and the job
//!   Stalled. No new stage starts after a permanent failure; running ones finish.
//! * A Failed stage is retried (attempts reset) when the spec changes (`metadata.generation`),
//!   e.g. after fixing the runner image.
//! * At most `maxParallelStages` stages run (or wait in a Kueue queue) at once.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use pruneforge_api::plan::StageKind;
use pruneforge_api::status::stage::STAGE_MESSAGE_MAX;
use pruneforge_api::status::{
    JobPhase, PruneDistillJobStatus, StagePhase, StageStatus, CONDITION_READY,
    CONDITION_RECONCILING, CONDITION_STALLED,
};
use pruneforge_api::{Plan, PlanError, StageId};

use crate::conditions::{self, Desired};
use crate::naming;
use crate::observe::{JobState, ObservedJob};
use crate::results;

/// Everything the decision depends on.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// `metadata.name` of the PruneDistillJob.
    pub name: &'a str,
    /// The plan of the current spec.
    pub plan: &'a Plan,
    /// The status as last written.
    pub previous: &'a PruneDistillJobStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Stage Jobs owned by the resource.
    pub jobs: &'a [ObservedJob],
    /// Attempts per stage.
    pub max_attempts: u32,
    /// The time to stamp on transitions.
    pub now: Time,
    /// Hash of the current runner settings ([`crate::stage_job::runner_hash`]): a stage Job
    /// built from other settings whose pods never started is replaced. `None`: no check.
    pub runner_hash: Option<&'a str>,
    /// How long a stage Job may go without a pod that runs, while its pods are stuck (image
    /// pull error, unschedulable, ...) or none could be created, before the stage fails with
    /// the reason. `None`: no deadline.
    pub startup_deadline: Option<std::time::Duration>,
}

/// Create the Job of one stage attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Stage id.
    pub stage: StageId,
    /// Attempt number (1-based).
    pub attempt: u32,
    /// Job name.
    pub job_name: String,
}

/// Something worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq)]
pub enum StageEvent {
    /// A stage Job is created.
    Started {
        /// Stage id.
        stage: StageId,
        /// Attempt.
        attempt: u32,
        /// Job name.
        job: String,
    },
    /// A stage succeeded.
    Succeeded {
        /// Stage id.
        stage: StageId,
        /// Job name.
        job: String,
        /// Summary line.
        message: String,
    },
    /// An attempt failed and the stage is retried.
    Retrying {
        /// Stage id.
        stage: StageId,
        /// Job name of the failed attempt.
        job: String,
        /// Why it failed.
        message: String,
    },
    /// The stage failed for good.
    Failed {
        /// Stage id.
        stage: StageId,
        /// Job name of the last attempt.
        job: String,
        /// Why.
        message: String,
    },
    /// A stage's pods do not progress (image pull error, unschedulable, ...).
    Problem {
        /// Stage id.
        stage: StageId,
        /// Job name.
        job: String,
        /// What is wrong.
        message: String,
    },
}

/// A finished stage, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// Stage kind.
    pub kind: StageKind,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// Seconds from Job start to completion, when both are known.
    pub seconds: Option<f64>,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The new status.
    pub status: PruneDistillJobStatus,
    /// Jobs to create (with their request ConfigMaps).
    pub start: Vec<Start>,
    /// Jobs to delete (stale cache keys, stages left the plan, resets).
    pub delete: Vec<String>,
    /// Events to publish.
    pub events: Vec<StageEvent>,
    /// Stages that finished in this decision.
    pub finished: Vec<Finished>,
}

impl Decision {
    /// Whether any stage runs or waits to start (the job is not finished or stalled).
    pub fn in_progress(&self) -> bool {
        conditions::is_true(&self.status.conditions, CONDITION_RECONCILING)
    }
}

/// Marks `entry` Running again for the next attempt after `job`, with `message`; returns the
/// `Retrying` event. The caller counts the slot and queues the attempt.
fn retry(
    entry: &mut StageStatus,
    stage: &StageId,
    job: &ObservedJob,
    message: String,
) -> StageEvent {
    entry.phase = StagePhase::Running;
    entry.message = Some(message.clone());
    StageEvent::Retrying {
        stage: stage.clone(),
        job: job.name.clone(),
        message,
    }
}

/// Decides the next status and actions. Pure: equal inputs give equal outputs.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let plan = inputs.plan;
    let previous = inputs.previous;
    let generation_changed = previous.observed_generation != inputs.generation;
    let mut decision = Decision {
        status: previous.clone(),
        ..Decision::default()
    };

    // Jobs of stages that left the plan or whose key changed.
    for job in inputs.jobs.iter().filter(|j| !j.deleting) {
        let current = plan
            .get(&job.stage)
            .is_some_and(|s| job.matches_key(&s.key));
        if !current {
            decision.delete.push(job.name.clone());
        }
    }

    let mut done: BTreeSet<StageId> = BTreeSet::new();
    let mut entries: Vec<StageStatus> = Vec::with_capacity(plan.len());
    let mut running = 0usize;
    let mut failed: Vec<(StageId, String)> = Vec::new();
    // Stages ready to start: (index in entries, attempt).
    let mut candidates: Vec<(usize, u32)> = Vec::new();

    for stage in plan.stages() {
        let prev = previous
            .stages
            .iter()
            .find(|s| s.id == stage.id.as_str() && s.key == stage.key);
        let mut entry = prev
            .cloned()
            .unwrap_or_else(|| pruneforge_api::status::StageStatus::pending(stage));
        entry.kind = stage.kind();

        let stage_jobs: Vec<&ObservedJob> = inputs
            .jobs
            .iter()
            .filter(|j| j.stage == stage.id.as_str() && j.matches_key(&stage.key))
            .collect();
        let blocked_by_deleting = stage_jobs.iter().any(|j| j.deleting);
        let live: Vec<&ObservedJob> = stage_jobs.iter().copied().filter(|j| !j.deleting).collect();
        let latest = live.iter().copied().max_by_key(|j| j.attempt);

        match entry.phase {
            StagePhase::Succeeded | StagePhase::Skipped => {
                done.insert(stage.id.clone());
                entries.push(entry);
                continue;
            }
            StagePhase::Failed if !generation_changed => {
                failed.push((stage.id.clone(), entry.message.clone().unwrap_or_default()));
                entries.push(entry);
                continue;
            }
            StagePhase::Failed => {
                // The spec changed: start the stage over with fresh attempts, once its old
                // Jobs are gone.
                decision.delete.extend(live.iter().map(|j| j.name.clone()));
                entry = pruneforge_api::status::StageStatus::pending(stage);
                entry.message = Some("retrying after a spec change".into());
                entries.push(entry);
                continue;
            }
            StagePhase::Pending | StagePhase::Running => {}
        }

        let Some(job) = latest else {
            let deps_done = stage.inputs.values().all(|d| done.contains(d));
            if entry.phase == StagePhase::Running && entry.attempts > 0 {
                // Its Job vanished (deleted by hand or by its TTL before we saw it finish):
                // run the same attempt again. The runner finds committed artifacts itself.
                entry.message = Some("stage Job disappeared; recreating it".into());
                running += 1;
                if !blocked_by_deleting {
                    candidates.push((entries.len(), entry.attempts.max(1)));
                }
            } else if deps_done && !blocked_by_deleting {
                candidates.push((entries.len(), 1));
            } else if let Some(dep) = stage
                .inputs
                .values()
                .find(|d| failed.iter().any(|(f, _)| f == *d))
            {
                entry.message = Some(format!("blocked: {dep} failed"));
            }
            entries.push(entry);
            continue;
        };

        entry.attempts = entry.attempts.max(job.attempt);
        entry.job_name = Some(job.name.clone());
        if entry.start_time.is_none() {
            entry.start_time = job.start_time.clone();
        }
        match &job.state {
            JobState::Succeeded
                if job.results.is_empty() && job.pods == 0 && job.attempt < inputs.max_attempts =>
            {
                // Its pods, and with them the result in their termination messages, are gone
                // before the result was read (a pod deleted while it finished). The artifact is
                // committed: one more attempt reads its result from storage at once.
                let message = format!(
                    "attempt {} succeeded but its pods are gone with their result; attempt {} \
                     reads the committed result from storage",
                    job.attempt,
                    job.attempt + 1
                );
                running += 1;
                candidates.push((entries.len(), job.attempt + 1));
                decision
                    .events
                    .push(retry(&mut entry, &stage.id, job, message));
            }
            JobState::Succeeded => {
                let summary = results::combined_summary(&job.results);
                entry.phase = StagePhase::Succeeded;
                entry.completion_time = Some(
                    job.completion_time
                        .clone()
                        .unwrap_or_else(|| inputs.now.clone()),
                );
                entry.result_uri = Some(results::result_uri(stage));
                entry.message = Some(match &summary {
                    Some(s) => s.one_line(),
                    None => "succeeded; its pod left no stage result in the termination message (see resultUri)".into(),
                });
                results::record(&mut decision.status, stage, &job.results);
                done.insert(stage.id.clone());
                decision.finished.push(Finished {
                    kind: stage.kind(),
                    succeeded: true,
                    seconds: seconds_between(
                        entry.start_time.as_ref(),
                        entry.completion_time.as_ref(),
                    ),
                });
                decision.events.push(StageEvent::Succeeded {
                    stage: stage.id.clone(),
                    job: job.name.clone(),
                    message: entry.message.clone().unwrap_or_default(),
                });
            }
            JobState::Failed { reason } => {
                let why = failure_message(reason, &job.results);
                if job.attempt < inputs.max_attempts {
                    let message = format!(
                        "attempt {} of {} failed: {why}; retrying",
                        job.attempt, inputs.max_attempts
                    );
                    running += 1;
                    candidates.push((entries.len(), job.attempt + 1));
                    decision
                        .events
                        .push(retry(&mut entry, &stage.id, job, message));
                } else {
                    let at = job
                        .completion_time
                        .clone()
                        .unwrap_or_else(|| inputs.now.clone());
                    let message = format!("failed after {} attempt(s): {why}", job.attempt);
                    fail_for_good(
                        &mut entry,
                        stage,
                        job,
                        at,
                        message,
                        &mut failed,
                        &mut decision,
                    );
                }
            }
            JobState::Running
                if !job.started
                    && inputs
                        .runner_hash
                        .zip(job.runner_hash.as_deref())
                        .is_some_and(|(now, then)| now != then) =>
            {
                // A corrected image (or secret, resources, placement) reaches a Job that is
                // stuck: it is deleted and the same attempt is created again once it is gone.
                decision.delete.push(job.name.clone());
                entry.phase = StagePhase::Running;
                entry.message =
                    Some("runner settings changed: replacing the Job, whose pods never ran".into());
                running += 1;
            }
            JobState::Running
                if !job.started
                    && (job.problem.is_some() || job.pods == 0)
                    && inputs.startup_deadline.is_some_and(|limit| {
                        seconds_between(
                            job.start_time.as_ref().or(entry.start_time.as_ref()),
                            Some(&inputs.now),
                        )
                        .is_some_and(|waited| waited > limit.as_secs_f64())
                    }) =>
            {
                // Stuck since it was created: retrying the same pod template would not help.
                // The stage fails now and the job stalls with the reason; a spec edit retries.
                let limit = inputs.startup_deadline.unwrap_or_default().as_secs();
                let why = job.problem.clone().unwrap_or_else(|| {
                    format!(
                        "no pod could be created (a ResourceQuota, LimitRange or admission \
                         webhook may refuse it: kubectl describe job {})",
                        job.name
                    )
                });
                decision.delete.push(job.name.clone());
                let message = format!("did not start within {limit} s: {why}");
                let at = inputs.now.clone();
                fail_for_good(
                    &mut entry,
                    stage,
                    job,
                    at,
                    message,
                    &mut failed,
                    &mut decision,
                );
            }
            JobState::Running | JobState::Suspended => {
                entry.phase = StagePhase::Running;
                running += 1;
                let message = match (&job.problem, &job.state) {
                    (Some(p), _) => Some(p.clone()),
                    (None, JobState::Suspended) => {
                        Some("suspended: waiting for admission by Kueue".into())
                    }
                    (None, _) => None,
                };
                if let Some(p) = &job.problem {
                    if prev.and_then(|e| e.message.as_deref()) != Some(p.as_str()) {
                        decision.events.push(StageEvent::Problem {
                            stage: stage.id.clone(),
                            job: job.name.clone(),
                            message: p.clone(),
                        });
                    }
                }
                entry.message = message;
            }
        }
        entries.push(entry);
    }

    // Start what is ready, in plan order, within maxParallelStages. Retries and recreated
    // Jobs already hold a slot; nothing new starts after a permanent failure.
    let halted = !failed.is_empty();
    let mut slots = (plan.max_parallel_stages as usize).saturating_sub(running);
    for (index, attempt) in candidates {
        let entry = &mut entries[index];
        let holds_slot = entry.phase == StagePhase::Running;
        if !holds_slot {
            if halted || slots == 0 {
                continue;
            }
            slots -= 1;
        }
        let job_name = naming::stage_job_name(inputs.name, &entry.id, &entry.key, attempt);
        entry.phase = StagePhase::Running;
        entry.attempts = entry.attempts.max(attempt);
        entry.job_name = Some(job_name.clone());
        if !holds_slot || entry.start_time.is_none() {
            entry.start_time = Some(inputs.now.clone());
        }
        entry.completion_time = None;
        if !holds_slot {
            entry.message = None;
        }
        decision.events.push(StageEvent::Started {
            stage: StageId::from(entry.id.as_str()),
            attempt,
            job: job_name.clone(),
        });
        decision.start.push(Start {
            stage: StageId::from(entry.id.as_str()),
            attempt,
            job_name,
        });
    }

    for e in &mut entries {
        if let Some(m) = e.message.take() {
            e.message = Some(trim_message(&m));
        }
    }
    decision.delete.sort();
    decision.delete.dedup();

    // Summaries, conditions, phase.
    let status = &mut decision.status;
    status.stages = entries;
    results::finalize(status, plan, &done);
    let running_ids: Vec<&str> = status
        .stages
        .iter()
        .filter(|s| s.phase == StagePhase::Running)
        .map(|s| s.id.as_str())
        .collect();
    status.current_stage = (!running_ids.is_empty()).then(|| running_ids.join(","));
    let total = plan.len();
    let n_done = done.len();
    let all_done = n_done == total;
    let started_any = status.stages.iter().any(|s| s.attempts > 0);
    status.phase = Some(if all_done {
        JobPhase::Succeeded
    } else if halted {
        JobPhase::Failed
    } else if started_any {
        JobPhase::Running
    } else {
        JobPhase::Pending
    });
    let progress = if running_ids.is_empty() {
        format!("{n_done}/{total} stages done")
    } else {
        format!(
            "{n_done}/{total} stages done; running: {}",
            running_ids.join(", ")
        )
    };
    let failure = failed
        .first()
        .map(|(id, m)| trim_message(&format!("stage {id} {m}")));
    let idle_after_failure = halted && running_ids.is_empty();
    let reconciling = !(all_done || idle_after_failure);
    let desired = [
        if all_done {
            Desired::new(
                CONDITION_READY,
                true,
                "Succeeded",
                format!("all {total} stages succeeded"),
            )
        } else if let Some(f) = &failure {
            Desired::new(CONDITION_READY, false, "StageFailed", f.clone())
        } else {
            Desired::new(CONDITION_READY, false, "Progressing", progress.clone())
        },
        if reconciling && halted {
            // A stage failed for good; the stages still running finish first. Not Stalled yet:
            // Reconciling and Stalled are never True together.
            Desired::new(
                CONDITION_RECONCILING,
                true,
                "FinishingRunningStages",
                format!(
                    "{}; waiting for the running stages to finish: {}",
                    failure.clone().unwrap_or_default(),
                    running_ids.join(", ")
                ),
            )
        } else if reconciling {
            Desired::new(
                CONDITION_RECONCILING,
                true,
                "StagesRunning",
                progress.clone(),
            )
        } else if all_done {
            Desired::new(
                CONDITION_RECONCILING,
                false,
                "Succeeded",
                format!("all {total} stages succeeded"),
            )
        } else {
            Desired::new(
                CONDITION_RECONCILING,
                false,
                "StageFailed",
                progress.clone(),
            )
        },
        match &failure {
            Some(f) if idle_after_failure => {
                Desired::new(CONDITION_STALLED, true, "StageFailed", f.clone())
            }
            Some(f) => Desired::new(
                CONDITION_STALLED,
                false,
                "FinishingRunningStages",
                f.clone(),
            ),
            None if all_done => Desired::new(
                CONDITION_STALLED,
                false,
                "Succeeded",
                format!("all {total} stages succeeded"),
            ),
            None => Desired::new(CONDITION_STALLED, false, "Progressing", progress),
        },
    ];
    status.conditions = conditions::build(
        &previous.conditions,
        desired,
        inputs.generation,
        &inputs.now,
    );
    status.observed_generation = inputs.generation;
    decision
}

/// The status of a spec the planner rejects: Stalled with the planner's message; stages and
/// results are kept as they were, no Job is touched.
pub fn invalid_spec(
    previous: &PruneDistillJobStatus,
    error: &PlanError,
    generation: Option<i64>,
    now: &Time,
) -> PruneDistillJobStatus {
    let mut status = previous.clone();
    let message = trim_message(&format!("invalid spec: {error}"));
    let desired = [
        Desired::new(CONDITION_READY, false, "InvalidSpec", message.clone()),
        Desired::new(CONDITION_RECONCILING, false, "InvalidSpec", message.clone()),
        Desired::new(CONDITION_STALLED, true, "InvalidSpec", message),
    ];
    status.conditions = conditions::build(&previous.conditions, desired, generation, now);
    status.observed_generation = generation;
    status.phase = Some(JobPhase::Failed);
    status.current_stage = None;
    status
}

/// The status after a permanent API error (a create the apiserver rejects with 422, a
/// forbidden request, ...): `Stalled=True` (reason `ApiError`) with the apiserver's message, so
/// the job does not claim to be Pending or progressing; stages and results are kept as they
/// were. The next successful reconcile recomputes every condition.
pub fn api_error(
    previous: &PruneDistillJobStatus,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> PruneDistillJobStatus {
    let mut status = previous.clone();
    let message = trim_message(message);
    let desired = [
        Desired::new(CONDITION_READY, false, "ApiError", message.clone()),
        Desired::new(CONDITION_RECONCILING, false, "ApiError", message.clone()),
        Desired::new(CONDITION_STALLED, true, "ApiError", message),
    ];
    status.conditions = conditions::build(&previous.conditions, desired, generation, now);
    status.observed_generation = generation;
    status
}

/// Marks the stage Failed for good at `at` with `message`: no further attempt until the spec
/// changes; recorded for the conditions, the metrics and an Event.
fn fail_for_good(
    entry: &mut StageStatus,
    stage: &pruneforge_api::StageInstance,
    job: &ObservedJob,
    at: Time,
    message: String,
    failed: &mut Vec<(StageId, String)>,
    decision: &mut Decision,
) {
    entry.phase = StagePhase::Failed;
    entry.completion_time = Some(at);
    entry.message = Some(message.clone());
    failed.push((stage.id.clone(), message.clone()));
    decision.finished.push(Finished {
        kind: stage.kind(),
        succeeded: false,
        seconds: seconds_between(entry.start_time.as_ref(), entry.completion_time.as_ref()),
    });
    decision.events.push(StageEvent::Failed {
        stage: stage.id.clone(),
        job: job.name.clone(),
        message,
    });
}

fn failure_message(reason: &str, results: &[pruneforge_api::StageResult]) -> String {
    let stage_message = results
        .iter()
        .filter(|r| !r.is_ok())
        .find_map(|r| r.message.clone());
    match stage_message {
        Some(m) if !reason.contains(&m) => format!("{reason}; {m}"),
        _ => reason.to_string(),
    }
}

fn seconds_between(start: Option<&Time>, end: Option<&Time>) -> Option<f64> {
    let (s, e) = (start?, end?);
    let d = e.0.duration_since(s.0);
    Some(d.as_secs_f64().max(0.0))
}

/// At most [`STAGE_MESSAGE_MAX`] bytes, cut at a character boundary.
pub fn trim_message(m: &str) -> String {
    if m.len() <= STAGE_MESSAGE_MAX {
        return m.to_string();
    }
    let mut end = STAGE_MESSAGE_MAX - '…'.len_utf8();
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &m[..end])
}
