//! Reading Jobs and Pods: states, termination messages, failure reasons.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use pruneforge_api::contract::{JobRef, ShardRef};
use pruneforge_api::{plan, PruneDistillJobSpec, StageRequest};
use pruneforge_operator::fake::results;
use pruneforge_operator::observe::{observe, JobState};
use serde_json::json;

fn job(conditions: serde_json::Value, suspend: bool) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "j-distill", "namespace": "ns",
            "labels": {"pruneforge.dev/stage": "distill-gsm8k", "pruneforge.dev/key": "0123456789abcdef",
                       "pruneforge.dev/attempt": "2"},
            "annotations": {"pruneforge.dev/cache-key": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}},
        "spec": {"suspend": suspend, "template": {"spec": {"containers": []}}},
        "status": {"conditions": conditions},
    }))
    .expect("job")
}

fn pod(name: &str, index: Option<u32>, status: serde_json::Value) -> Pod {
    let mut annotations = json!({});
    if let Some(i) = index {
        annotations["batch.kubernetes.io/job-completion-index"] = json!(i.to_string());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "labels": {"batch.kubernetes.io/job-name": "j-distill"},
            "annotations": annotations},
        "status": status,
    }))
    .expect("pod")
}

fn terminated(phase: &str, exit: i32, reason: &str, message: &str) -> serde_json::Value {
    json!({"phase": phase, "containerStatuses": [{"name": "runner", "image": "i", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": exit, "reason": reason, "message": message}}}]})
}

fn distill_request(index: u32) -> StageRequest {
    let spec: PruneDistillJobSpec = serde_yaml::from_str(
        "distillation:\n  shards: 2\n  datasets:\n    - {name: gsm8k, uri: 'builtin:gsm8k-train', format: gsm8k, kind: math}\nrecovery:\n  methods: [self-distill]\nstorage:\n  uri: s3://b/x\n",
    )
    .expect("spec");
    let p = plan(&spec).expect("plan");
    StageRequest::from_plan(
        &p,
        "distill-gsm8k",
        JobRef {
            name: "j".into(),
            namespace: None,
        },
    )
    .and_then(|r| r.for_shard(index))
    .expect("request")
}

#[test]
fn complete_indexed_job_yields_one_result_per_shard() {
    let done = json!([{"type": "Complete", "status": "True"}]);
    let r0 = results::succeeded(&distill_request(0)).to_termination_message();
    let r1 = results::succeeded(&distill_request(1)).to_termination_message();
    let pods = vec![
        pod("p1", Some(1), terminated("Succeeded", 0, "Completed", &r1)),
        pod(
            "p0-failed",
            Some(0),
            terminated("Failed", 1, "Error", "panic: boom"),
        ),
        pod("p0", Some(0), terminated("Succeeded", 0, "Completed", &r0)),
    ];
    let observed = observe(&[job(done, false)], &pods);
    assert_eq!(observed.len(), 1);
    let o = &observed[0];
    assert_eq!(o.state, JobState::Succeeded);
    assert_eq!(
        (o.attempt, o.stage.as_str(), o.key.len()),
        (2, "distill-gsm8k", 64)
    );
    let shards: Vec<Option<ShardRef>> = o.results.iter().map(|r| r.shard).collect();
    assert_eq!(
        shards,
        [
            Some(ShardRef { index: 0, count: 2 }),
            Some(ShardRef { index: 1, count: 2 })
        ]
    );
    assert!(o.results.iter().all(|r| r.is_ok()));
}

#[test]
fn failed_job_reason_includes_pod_termination_and_log_tail() {
    let failed = json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]);
    // FallbackToLogsOnError: the message is the log tail, not JSON.
    let pods = vec![pod(
        "p0",
        Some(0),
        terminated("Failed", 137, "OOMKilled", "loading model\nKilled"),
    )];
    let o = &observe(&[job(failed, false)], &pods)[0];
    match &o.state {
        JobState::Failed { reason } => {
            assert!(
                reason.starts_with(
                    "BackoffLimitExceeded: Job has reached the specified backoff limit"
                ),
                "{reason}"
            );
            assert!(
                reason.contains("pod p0: OOMKilled (exit 137): Killed"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(o.results.is_empty());
}

#[test]
fn failure_target_is_not_the_end_while_pods_still_run() {
    // Kubernetes 1.31+: FailureTarget first; Failed only once every pod has terminated. A pod
    // may still be uploading, so the next attempt must wait for Failed.
    let failing = json!([{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
        "message": "Job has reached the specified backoff limit"}]);
    let running = json!({"phase": "Running", "containerStatuses": [{"name": "runner", "image": "i",
        "imageID": "", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
    let job_failing = job(failing.clone(), false);
    let o = &observe(
        std::slice::from_ref(&job_failing),
        &[pod("p0", None, running)],
    )[0];
    assert_eq!(o.state, JobState::Running);
    assert!(!o.is_finished());
    assert_eq!(
        o.problem.as_deref(),
        Some("BackoffLimitExceeded: waiting for its pods to stop before the next attempt")
    );
    assert_eq!(
        pruneforge_operator::observe::job_outcome(&job_failing),
        None
    );

    let mut both = failing.as_array().cloned().unwrap_or_default();
    both.push(json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}));
    let job_failed = job(json!(both), false);
    let o = &observe(std::slice::from_ref(&job_failed), &[])[0];
    assert!(matches!(o.state, JobState::Failed { .. }), "{:?}", o.state);
    assert!(pruneforge_operator::observe::job_outcome(&job_failed).is_some_and(|r| r.is_err()));
}

#[test]
fn live_pods_report_pull_errors_and_suspended_jobs_are_recognised() {
    let waiting = json!({"phase": "Pending", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]});
    let o = &observe(&[job(json!([]), false)], &[pod("p0", None, waiting)])[0];
    assert_eq!(o.state, JobState::Running);
    assert_eq!(
        o.problem.as_deref(),
        Some("pod p0: ErrImagePull: not found")
    );

    let o = &observe(&[job(json!([]), true)], &[])[0];
    assert_eq!(o.state, JobState::Suspended);
    assert_eq!(o.problem, None);

    // ContainerCreating is normal, not a problem.
    let creating = json!({"phase": "Pending", "containerStatuses": [{"name": "runner", "image": "i", "imageID": "",
        "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]});
    let o = &observe(&[job(json!([]), false)], &[pod("p0", None, creating)])[0];
    assert_eq!(o.problem, None);
}

#[test]
fn jobs_without_stage_labels_are_ignored() {
    let mut j = job(json!([]), false);
    j.metadata.labels = None;
    assert!(observe(&[j], &[]).is_empty());
}
