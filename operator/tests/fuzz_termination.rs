//! Time-boxed fuzzing of what the operator reads from stage pods (issue 15): the container's
//! termination message (a compact `StageResult`, or the log tail with
//! `FallbackToLogsOnError`), through `observe` into the decision and the status it records.
//! Crashes found are kept under `tests/fuzz_corpus/termination_message/` and replayed.
//! `PRUNEFORGE_FUZZ_SECONDS=120 cargo test --release -p pruneforge-operator --test
//! fuzz_termination` runs longer.

use std::path::PathBuf;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pruneforge_api::contract::JobRef;
use pruneforge_api::fuzz::{self, GuardedAlloc, Target, Verdict};
use pruneforge_api::status::PruneDistillJobStatus;
use pruneforge_api::{plan, Plan, PruneDistillJobSpec, StageRequest};
use pruneforge_operator::decide::{decide, Inputs};
use pruneforge_operator::fake::results;
use pruneforge_operator::labels;
use pruneforge_operator::naming;
use pruneforge_operator::observe::observe;
use serde_json::json;

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

const STAGE: &str = "distill-gsm8k";

fn test_plan() -> &'static Plan {
    static PLAN: std::sync::OnceLock<Plan> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| {
        let spec: PruneDistillJobSpec = serde_yaml::from_str(
            "distillation:\n  shards: 2\n  datasets:\n    - {name: gsm8k, uri: 'builtin:gsm8k-train', format: gsm8k, kind: math}\nrecovery:\n  methods: [sft, self-distill]\nmerge:\n  enabled: true\nspeculative:\n  enabled: true\nstorage:\n  uri: s3://b/x\n",
        )
        .expect("spec");
        plan(&spec).expect("plan")
    })
}

fn request(stage: &str, shard: u32) -> StageRequest {
    let job = JobRef {
        name: "j".into(),
        namespace: None,
    };
    let r = StageRequest::from_plan(test_plan(), stage, job).expect("request");
    r.for_shard(shard.min(r.shard.map_or(1, |s| s.count) - 1))
        .expect("shard")
}

/// Input: a selector byte (bits 0-1: the Job's condition; bit 2: the second pod failed), then
/// the termination message of both pods.
fn seeds() -> Vec<Vec<u8>> {
    let mut messages: Vec<String> = (0..2)
        .map(|i| results::succeeded(&request(STAGE, i)).to_termination_message())
        .collect();
    messages
        .push(results::failed(&request(STAGE, 1), "CUDA out of memory").to_termination_message());
    messages.push("loading model\nKilled".into());
    // Results of other kinds under this stage's Job: the operator must cope.
    for stage in ["import", "score", "eval-base", "merge-n6"] {
        if test_plan().get(stage).is_some() {
            messages.push(results::succeeded(&request(stage, 0)).to_termination_message());
        }
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut input = vec![(i % 8) as u8];
            input.extend(m.into_bytes());
            input
        })
        .collect()
}

fn job(conditions: serde_json::Value) -> Job {
    let s = test_plan().get(STAGE).expect("stage");
    let name = naming::stage_job_name("j", STAGE, &s.key, 1);
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "ns",
            "labels": {labels::STAGE: STAGE, labels::KEY: labels::key_label(&s.key),
                       labels::ATTEMPT: "1"},
            "annotations": {labels::KEY_ANNOTATION: s.key}},
        "spec": {"template": {"spec": {"containers": []}}},
        "status": {"conditions": conditions, "startTime": "2025-01-01T00:00:00Z"},
    }))
    .expect("job")
}

fn pod(job: &str, index: u32, phase: &str, exit: i32, message: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p{index}"), "namespace": "ns",
            "labels": {labels::POD_JOB_NAME: job},
            "annotations": {labels::POD_COMPLETION_INDEX: index.to_string()}},
        "status": {"phase": phase, "containerStatuses": [{"name": "runner", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit, "reason": "Completed", "message": message}}}]},
    }))
    .expect("pod")
}

/// Observes the Job and its pods, decides twice (the second time from the first status).
fn check(input: &[u8]) -> Verdict {
    let Some((&selector, body)) = input.split_first() else {
        return Verdict::Rejected("empty".into());
    };
    // The kubelet hands the message over as a string.
    let message = String::from_utf8_lossy(body);
    let conditions = match selector & 3 {
        0 => json!([{"type": "Complete", "status": "True"}]),
        1 => json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
        2 => json!([{"type": "FailureTarget", "status": "True"}]),
        _ => json!([]),
    };
    let job = job(conditions);
    let name = job.metadata.name.clone().unwrap_or_default();
    let second = if selector & 4 == 0 {
        ("Succeeded", 0)
    } else {
        ("Failed", 1)
    };
    let pods = [
        pod(&name, 0, "Succeeded", 0, &message),
        pod(&name, 1, second.0, second.1, &message),
    ];
    let observed = observe(&[job], &pods);
    let results = observed.first().map_or(0, |o| o.results.len());
    let mut previous = PruneDistillJobStatus::default();
    for _ in 0..2 {
        let d = decide(&Inputs {
            name: "j",
            plan: test_plan(),
            previous: &previous,
            generation: Some(1),
            jobs: &observed,
            max_attempts: 3,
            now: Time(Timestamp::UNIX_EPOCH),
            runner_hash: None,
            startup_deadline: None,
        });
        previous = d.status;
    }
    let Ok(json) = serde_json::to_string(&previous) else {
        return Verdict::Violation("the status does not serialize".into());
    };
    // Non-finite result numbers ("NaN", "inf") must not reach the status as `null`.
    if let Err(e) = serde_json::from_str::<PruneDistillJobStatus>(&json) {
        return Verdict::Violation(format!("the status does not read back: {e}"));
    }
    if results > 0 {
        return Verdict::Accepted;
    }
    // Why nothing was read (for the fuzzer's feedback): the parser's error.
    match pruneforge_api::StageResult::from_json(&message) {
        Err(e) => Verdict::Rejected(e.to_string()),
        Ok(_) => Verdict::Rejected("a result for another shard or stage".into()),
    }
}

#[test]
fn fuzz_termination_message() {
    let target = Target {
        prefix: 1,
        json: true,
        seconds: 4.0,
        ..Target::new("operator_termination_message", seeds())
    };
    fuzz::run(&target, check).assert_clean();
}

#[test]
fn termination_message_corpus() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus/termination_message");
    fuzz::replay(&dir, 64 << 20, check);
}

#[test]
fn result_seeds_are_accepted() {
    for (i, seed) in seeds().iter().enumerate() {
        let log_tail = seed.get(1..) == Some(b"loading model\nKilled".as_slice());
        let verdict = check(seed);
        assert_eq!(
            verdict == Verdict::Accepted,
            !log_tail,
            "seed {i}: {verdict:?}"
        );
    }
}
