//! Kubernetes Events for stage transitions (published best-effort: a failed publish is logged,
//! never fails the reconcile).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use pruneforge_api::PruneDistillJob;

use crate::context::Context;
use crate::decide::StageEvent;

/// Reference to a Job in the job's namespace (the event's `related` object, which also keeps
/// events of different stages apart in the recorder's deduplication).
fn job_ref(obj: &PruneDistillJob, job: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job.into()),
        namespace: obj.namespace(),
        ..ObjectReference::default()
    }
}

/// The event for a stage transition.
pub fn stage_event(obj: &PruneDistillJob, ev: &StageEvent) -> Event {
    let (type_, reason, action, note, job) = match ev {
        StageEvent::Started {
            stage,
            attempt,
            job,
        } => (
            EventType::Normal,
            "StageStarted",
            "CreateJob",
            format!("stage {stage}: started attempt {attempt} as Job {job}"),
            job,
        ),
        StageEvent::Succeeded {
            stage,
            job,
            message,
        } => (
            EventType::Normal,
            "StageSucceeded",
            "ReadResult",
            format!("stage {stage} succeeded: {message}"),
            job,
        ),
        StageEvent::Retrying {
            stage,
            job,
            message,
        } => (
            EventType::Warning,
            "StageRetrying",
            "RetryStage",
            format!("stage {stage}: {message}"),
            job,
        ),
        StageEvent::Failed {
            stage,
            job,
            message,
        } => (
            EventType::Warning,
            "StageFailed",
            "ReadResult",
            format!("stage {stage} {message}"),
            job,
        ),
        StageEvent::Problem {
            stage,
            job,
            message,
        } => (
            EventType::Warning,
            "StagePodProblem",
            "WatchPods",
            format!("stage {stage}: {message}"),
            job,
        ),
    };
    Event {
        type_,
        reason: reason.into(),
        note: Some(truncate_note(note)),
        action: action.into(),
        secondary: Some(job_ref(obj, job)),
    }
}

fn truncate_note(mut note: String) -> String {
    const MAX: usize = 1000;
    if note.len() > MAX {
        let mut end = MAX;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

/// Publishes an event about `obj`, logging failures.
pub async fn publish(ctx: &Context, obj: &PruneDistillJob, event: Event) {
    let reference = obj.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(reason = %event.reason, error = %e, "publishing event failed");
    }
}

/// A plain event about `obj` (not tied to a stage).
pub fn job_event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        note: Some(truncate_note(note)),
        action: action.into(),
        secondary: None,
    }
}
