//! Unit tests of the pure reconcile decision: plan + observed Jobs + previous status → status
//! and actions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use pruneforge_api::contract::JobRef;
use pruneforge_api::status::{JobPhase, PruneDistillJobStatus, StagePhase};
use pruneforge_api::{plan, Plan, PruneDistillJobSpec, StageRequest};
use pruneforge_operator::decide::{decide, Decision, Inputs, StageEvent};
use pruneforge_operator::fake::results;
use pruneforge_operator::naming;
use pruneforge_operator::observe::{JobState, ObservedJob};

const SPEC: &str = r#"
pruning:
  blockSizes: [2, 4]
recovery:
  methods: [none]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: s3://bucket/x
maxParallelStages: 2
"#;

fn test_plan(yaml: &str) -> Plan {
    let spec: PruneDistillJobSpec = serde_yaml::from_str(yaml).expect("spec");
    plan(&spec).expect("plan")
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn job(plan: &Plan, stage: &str, attempt: u32, state: JobState) -> ObservedJob {
    let s = plan.get(stage).expect("stage");
    let results = match state {
        JobState::Succeeded => {
            let r = StageRequest::from_plan(
                plan,
                stage,
                JobRef {
                    name: "j".into(),
                    namespace: None,
                },
            )
            .expect("request");
            vec![results::succeeded(&r)]
        }
        _ => Vec::new(),
    };
    ObservedJob {
        name: naming::stage_job_name("j", stage, &s.key, attempt),
        stage: stage.into(),
        key: s.key.clone(),
        attempt,
        state,
        start_time: Some(now()),
        completion_time: None,
        results,
        problem: None,
        deleting: false,
        started: true,
        pods: 1,
        runner_hash: None,
    }
}

fn run(
    plan: &Plan,
    previous: &PruneDistillJobStatus,
    jobs: &[ObservedJob],
    generation: i64,
) -> Decision {
    decide(&Inputs {
        name: "j",
        plan,
        previous,
        generation: Some(generation),
        jobs,
        max_attempts: 3,
        now: now(),
        runner_hash: None,
        startup_deadline: None,
    })
}

fn started(d: &Decision) -> Vec<String> {
    d.start.iter().map(|s| s.stage.to_string()).collect()
}

/// Feeds decisions back until nothing changes, finishing every started Job successfully.
fn run_all(plan: &Plan) -> (PruneDistillJobStatus, Vec<ObservedJob>) {
    let mut status = PruneDistillJobStatus::default();
    let mut jobs: Vec<ObservedJob> = Vec::new();
    for _ in 0..20 {
        let d = run(plan, &status, &jobs, 1);
        for s in &d.start {
            jobs.push(job(plan, s.stage.as_str(), s.attempt, JobState::Succeeded));
        }
        status = d.status;
        if status.phase == Some(JobPhase::Succeeded) {
            break;
        }
    }
    (status, jobs)
}

#[test]
fn first_decision_starts_only_stages_without_inputs() {
    let plan = test_plan(SPEC);
    let d = run(&plan, &PruneDistillJobStatus::default(), &[], 1);
    assert_eq!(started(&d), ["import"]);
    assert_eq!(d.start[0].attempt, 1);
    assert!(d.delete.is_empty());
    assert_eq!(d.status.stages.len(), plan.len());
    assert_eq!(d.status.phase, Some(JobPhase::Running));
    assert!(
        matches!(&d.events[0], StageEvent::Started { stage, attempt: 1, .. } if stage.as_str() == "import")
    );
    assert!(d.in_progress());
}

#[test]
fn parallelism_is_bounded_by_max_parallel_stages() {
    let plan = test_plan(SPEC);
    let first = run(&plan, &PruneDistillJobStatus::default(), &[], 1);
    let jobs = vec![job(&plan, "import", 1, JobState::Succeeded)];
    let d = run(&plan, &first.status, &jobs, 1);
    // Ready after import: score and eval-base; max 2.
    assert_eq!(started(&d), ["score", "eval-base"]);
    // After score, both prunes are ready but eval-base still holds a slot.
    let mut jobs = jobs;
    jobs.push(job(&plan, "score", 1, JobState::Succeeded));
    jobs.push(job(&plan, "eval-base", 1, JobState::Running));
    let d2 = run(&plan, &d.status, &jobs, 1);
    assert_eq!(started(&d2), ["prune-n2"]);
    assert_eq!(
        d2.status.current_stage.as_deref(),
        Some("prune-n2,eval-base")
    );
}

#[test]
fn running_jobs_are_not_started_twice() {
    let plan = test_plan(SPEC);
    let first = run(&plan, &PruneDistillJobStatus::default(), &[], 1);
    let jobs = vec![job(&plan, "import", 1, JobState::Running)];
    let d = run(&plan, &first.status, &jobs, 1);
    assert!(d.start.is_empty());
    assert!(d.events.is_empty());
    assert_eq!(
        d.status, first.status,
        "a stable state gives an identical status"
    );
}

#[test]
fn failure_retries_then_fails_for_good() {
    let plan = test_plan(SPEC);
    let mut status = run(&plan, &PruneDistillJobStatus::default(), &[], 1).status;
    let mut jobs = Vec::new();
    for attempt in 1..=3 {
        jobs.push(job(
            &plan,
            "import",
            attempt,
            JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
            },
        ));
        let d = run(&plan, &status, &jobs, 1);
        if attempt < 3 {
            assert_eq!(d.start.len(), 1);
            assert_eq!(d.start[0].attempt, attempt + 1);
            assert!(matches!(d.events[0], StageEvent::Retrying { .. }));
        } else {
            assert!(d.start.is_empty());
            assert!(matches!(d.events[0], StageEvent::Failed { .. }));
            let s = &d.status.stages[0];
            assert_eq!((s.phase, s.attempts), (StagePhase::Failed, 3));
            assert_eq!(d.status.phase, Some(JobPhase::Failed));
            assert!(!d.in_progress());
        }
        status = d.status;
    }
}

#[test]
fn changed_keys_delete_stale_jobs_and_rerun_dependants_only() {
    let plan = test_plan(SPEC);
    let (status, jobs) = run_all(&plan);
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    assert!(status
        .stages
        .iter()
        .all(|s| s.phase == StagePhase::Succeeded && s.attempts == 1));

    // A different block size for prune only affects score (block sizes are score params) —
    // use a pruning.start change instead: prune keys change, score's does not.
    let edited = test_plan(&SPEC.replace("blockSizes: [2, 4]", "blockSizes: [2, 4]\n  start: 10"));
    let d = run(&edited, &status, &jobs, 2);
    let mut rerun: Vec<String> = d
        .status
        .stages
        .iter()
        .filter(|s| s.phase != StagePhase::Succeeded)
        .map(|s| s.id.clone())
        .collect();
    rerun.sort();
    assert_eq!(rerun, ["eval-n2", "eval-n4", "prune-n2", "prune-n4"]);
    assert_eq!(started(&d), ["prune-n2", "prune-n4"]);
    let mut deleted = d.delete.clone();
    deleted.sort();
    let mut expected: Vec<String> = jobs
        .iter()
        .filter(|j| j.stage.starts_with("prune-") || j.stage.starts_with("eval-n"))
        .map(|j| j.name.clone())
        .collect();
    expected.sort();
    assert_eq!(deleted, expected);
    // Results of rerun stages are dropped, the rest kept.
    assert!(d.status.pruned_models.is_empty());
    assert_eq!(d.status.evaluations.len(), 1);
    assert_eq!(d.status.evaluations[0].variant, "base");
    assert_eq!(d.status.layer_scores.len(), 2);
}

#[test]
fn stages_leaving_the_plan_lose_their_jobs() {
    let plan = test_plan(SPEC);
    let (status, jobs) = run_all(&plan);
    let smaller = test_plan(&SPEC.replace("blockSizes: [2, 4]", "blockSizes: [2]"));
    let d = run(&smaller, &status, &jobs, 2);
    assert_eq!(d.status.stages.len(), smaller.len());
    assert!(d.delete.iter().any(|n| n.contains("prune-n4")));
    assert!(d.delete.iter().any(|n| n.contains("eval-n4")));
}

#[test]
fn deleting_jobs_block_a_restart_of_their_stage() {
    let plan = test_plan(SPEC);
    let mut j = job(&plan, "import", 1, JobState::Failed { reason: "x".into() });
    j.deleting = true;
    let d = run(&plan, &PruneDistillJobStatus::default(), &[j], 1);
    assert!(d.start.is_empty());
    assert!(d.delete.is_empty());
}

#[test]
fn stalled_and_reconciling_are_never_both_true() {
    use pruneforge_api::status::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED};
    use pruneforge_operator::conditions;
    let plan = test_plan(SPEC);
    let cond = |d: &Decision, t: &str| {
        let c = d
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition");
        (c.status.clone(), c.reason.clone())
    };
    let decide_once = |previous: &PruneDistillJobStatus, jobs: &[ObservedJob]| {
        decide(&Inputs {
            name: "j",
            plan: &plan,
            previous,
            generation: Some(1),
            jobs,
            max_attempts: 1,
            now: now(),
            runner_hash: None,
            startup_deadline: None,
        })
    };
    let first = decide_once(&PruneDistillJobStatus::default(), &[]);
    let mut jobs = vec![job(&plan, "import", 1, JobState::Succeeded)];
    let d = decide_once(&first.status, &jobs);
    assert_eq!(started(&d), ["score", "eval-base"]);
    // score fails for good while eval-base still runs: still reconciling, not yet stalled.
    jobs.push(job(
        &plan,
        "score",
        1,
        JobState::Failed {
            reason: "BackoffLimitExceeded".into(),
        },
    ));
    jobs.push(job(&plan, "eval-base", 1, JobState::Running));
    let d2 = decide_once(&d.status, &jobs);
    assert!(conditions::exclusive(&d2.status.conditions));
    assert_eq!(
        cond(&d2, CONDITION_RECONCILING),
        ("True".into(), "FinishingRunningStages".into())
    );
    assert_eq!(cond(&d2, CONDITION_STALLED).0, "False");
    assert_eq!(
        cond(&d2, CONDITION_READY),
        ("False".into(), "StageFailed".into())
    );
    // eval-base finishes: now Stalled, no longer Reconciling.
    jobs.pop();
    jobs.push(job(&plan, "eval-base", 1, JobState::Succeeded));
    let d3 = decide_once(&d2.status, &jobs);
    assert!(conditions::exclusive(&d3.status.conditions));
    assert_eq!(
        cond(&d3, CONDITION_STALLED),
        ("True".into(), "StageFailed".into())
    );
    assert_eq!(cond(&d3, CONDITION_RECONCILING).0, "False");
}

/// One decision with a runner hash and a startup deadline, at `now`.
fn decide_at(
    plan: &Plan,
    previous: &PruneDistillJobStatus,
    jobs: &[ObservedJob],
    runner_hash: &str,
    now: Time,
) -> Decision {
    decide(&Inputs {
        name: "j",
        plan,
        previous,
        generation: Some(1),
        jobs,
        max_attempts: 3,
        now,
        runner_hash: Some(runner_hash),
        startup_deadline: Some(std::time::Duration::from_secs(900)),
    })
}

fn later(seconds: i64) -> Time {
    Time(Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(seconds))
}

/// The `import` Job, its pods stuck (or absent), built from runner settings `hash`.
fn stuck_import(plan: &Plan, problem: Option<&str>, hash: &str) -> ObservedJob {
    let mut j = job(plan, "import", 1, JobState::Running);
    j.started = false;
    j.pods = usize::from(problem.is_some());
    j.problem = problem.map(str::to_string);
    j.runner_hash = Some(hash.into());
    j
}

#[test]
fn stuck_pods_fail_the_stage_at_the_startup_deadline_and_stall_the_job() {
    use pruneforge_api::status::CONDITION_STALLED;
    use pruneforge_operator::conditions;
    let plan = test_plan(SPEC);
    let first = decide_at(&plan, &PruneDistillJobStatus::default(), &[], "h1", now());
    let pull = "pod j-import-0: ImagePullBackOff: Back-off pulling image \"runner:typo\"";
    let jobs = [stuck_import(&plan, Some(pull), "h1")];

    // Before the deadline: running, with the pod's reason as the stage message.
    let d = decide_at(&plan, &first.status, &jobs, "h1", later(60));
    let import = d
        .status
        .stages
        .iter()
        .find(|s| s.id == "import")
        .expect("import");
    assert_eq!(import.phase, StagePhase::Running);
    assert_eq!(import.message.as_deref(), Some(pull));
    assert!(d.delete.is_empty());
    assert!(!conditions::is_true(
        &d.status.conditions,
        CONDITION_STALLED
    ));

    // Past it: failed for good (no retry of the same template), the Job deleted, Stalled with
    // the reason.
    let d = decide_at(&plan, &first.status, &jobs, "h1", later(901));
    let import = d
        .status
        .stages
        .iter()
        .find(|s| s.id == "import")
        .expect("import");
    assert_eq!(import.phase, StagePhase::Failed);
    assert_eq!(
        import.message.as_deref(),
        Some(format!("did not start within 900 s: {pull}").as_str())
    );
    assert_eq!(d.delete, [jobs[0].name.clone()]);
    assert!(d.start.is_empty());
    assert!(conditions::is_true(&d.status.conditions, CONDITION_STALLED));
    let stalled = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_STALLED)
        .expect("Stalled");
    assert!(
        stalled.message.contains("ImagePullBackOff"),
        "{}",
        stalled.message
    );
    assert_eq!(d.status.phase, Some(JobPhase::Failed));
}

#[test]
fn a_job_that_cannot_create_pods_fails_at_the_deadline_and_says_where_to_look() {
    let plan = test_plan(SPEC);
    let first = decide_at(&plan, &PruneDistillJobStatus::default(), &[], "h1", now());
    let jobs = [stuck_import(&plan, None, "h1")];
    let d = decide_at(&plan, &first.status, &jobs, "h1", later(60));
    assert_eq!(d.status.stages[0].phase, StagePhase::Running);
    let d = decide_at(&plan, &first.status, &jobs, "h1", later(1000));
    let m = d.status.stages[0].message.clone().unwrap_or_default();
    assert_eq!(d.status.stages[0].phase, StagePhase::Failed);
    assert!(
        m.contains("no pod could be created") && m.contains("kubectl describe job"),
        "{m}"
    );
    // Pods that exist and are only slow (ContainerCreating: a large image) are not stuck.
    let mut slow = stuck_import(&plan, None, "h1");
    slow.pods = 1;
    let d = decide_at(&plan, &first.status, &[slow], "h1", later(1000));
    assert_eq!(d.status.stages[0].phase, StagePhase::Running);
}

#[test]
fn a_changed_runner_spec_replaces_a_job_whose_pods_never_ran() {
    let plan = test_plan(SPEC);
    let first = decide_at(&plan, &PruneDistillJobStatus::default(), &[], "h1", now());
    let pull = "pod j-import-0: ErrImagePull: not found";
    // The user fixed spec.runner.image: the runner hash is now h2.
    let jobs = [stuck_import(&plan, Some(pull), "h1")];
    let d = decide_at(&plan, &first.status, &jobs, "h2", later(30));
    assert_eq!(d.delete, [jobs[0].name.clone()]);
    assert!(d.start.is_empty(), "not before the old Job is gone");
    assert_eq!(d.status.stages[0].phase, StagePhase::Running);
    // Once it is gone, the same attempt starts again (with the new template).
    let d2 = decide_at(&plan, &d.status, &[], "h2", later(40));
    assert_eq!(started(&d2), ["import"]);
    assert_eq!(d2.start[0].attempt, 1);
    // A Job whose pods run keeps running: it is not killed for a settings change.
    let mut running = stuck_import(&plan, None, "h1");
    running.started = true;
    running.pods = 1;
    let d = decide_at(&plan, &first.status, &[running], "h2", later(30));
    assert!(d.delete.is_empty());
}

/// A diverged fine-tune (NaN loss), an infinite perplexity and an infinite speed-up reach the
/// operator through the pods' termination messages: they parse, the stage messages say NaN
/// and inf, and the status keeps finite numbers only (JSON round trip, no change on the next
/// reconcile).
#[test]
fn non_finite_results_are_reported_and_keep_the_status_valid() {
    use pruneforge_api::contract::StageSummary;
    use pruneforge_api::StageResult;

    let plan = test_plan(
        r#"
pruning:
  blockSizes: [2]
distillation:
  datasets:
    - {name: gsm8k, uri: 'builtin:gsm8k-train', format: gsm8k, kind: math}
recovery:
  methods: [sft]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
    - name: perplexity
speculative:
  enabled: true
storage:
  uri: s3://bucket/x
maxParallelStages: 8
"#,
    );
    // What the runner reports, as the operator reads it: the termination message, parsed.
    let diverged = |mut job: ObservedJob| {
        for r in &mut job.results {
            match r.summary.as_mut() {
                Some(StageSummary::Finetune(f)) => f.final_loss = f64::NAN,
                Some(StageSummary::Eval(e)) if r.stage_id.as_str() != "eval-base" => {
                    for t in e.tasks.iter_mut().filter(|t| t.task == "perplexity") {
                        t.value = f64::INFINITY;
                        t.stderr = Some(f64::NAN);
                    }
                    e.average = Some(f64::NAN);
                }
                Some(StageSummary::Speculate(s)) => s.speedup = f64::INFINITY,
                _ => {}
            }
            *r = StageResult::from_json(&r.to_termination_message())
                .expect("the termination message parses");
        }
        job
    };
    let mut status = PruneDistillJobStatus::default();
    let mut jobs: Vec<ObservedJob> = Vec::new();
    for _ in 0..20 {
        let d = run(&plan, &status, &jobs, 1);
        for s in &d.start {
            jobs.push(diverged(job(
                &plan,
                s.stage.as_str(),
                s.attempt,
                JobState::Succeeded,
            )));
        }
        status = d.status;
        if status.phase == Some(JobPhase::Succeeded) {
            break;
        }
    }
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    let message = |id: &str| {
        status
            .stages
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.message.clone())
            .unwrap_or_else(|| panic!("no message for {id}"))
    };
    assert!(
        message("finetune-n2-sft").starts_with("final loss NaN after"),
        "{}",
        message("finetune-n2-sft")
    );
    let eval = message("eval-n2-sft");
    assert!(eval.ends_with("not finite: perplexity inf"), "{eval}");
    assert!(
        status.adapters[0]
            .summary
            .as_deref()
            .is_some_and(|s| s.contains("NaN")),
        "{:?}",
        status.adapters
    );
    let e = status
        .evaluations
        .iter()
        .find(|e| e.variant == "n2-sft")
        .expect("evaluation of n2-sft");
    assert_eq!(e.tasks.keys().collect::<Vec<_>>(), ["arc_easy"]);
    assert_eq!((e.average, e.recovery_percent), (None, None));
    assert!(status.speculative.is_empty(), "{:?}", status.speculative);
    // The status survives JSON (what the API server stores; times keep whole seconds there)
    // and the next reconcile, from the stored status, sees nothing to write.
    let json = serde_json::to_value(&status).expect("serializes");
    let back: PruneDistillJobStatus = serde_json::from_value(json.clone()).expect("reads back");
    assert_eq!(serde_json::to_value(&back).expect("serializes"), json);
    assert_eq!(run(&plan, &back, &jobs, 1).status, back);
}

#[test]
fn a_result_lost_with_its_pods_is_read_by_one_more_attempt() {
    let plan = test_plan(SPEC);
    let mut lost = job(&plan, "import", 1, JobState::Succeeded);
    lost.results.clear();
    lost.pods = 0;
    let d = run(&plan, &PruneDistillJobStatus::default(), &[lost.clone()], 1);
    assert_eq!(started(&d), ["import"]);
    assert_eq!(d.start[0].attempt, 2);
    let import = d
        .status
        .stages
        .iter()
        .find(|s| s.id == "import")
        .expect("import");
    assert_eq!(import.phase, StagePhase::Running);
    assert!(import
        .message
        .as_deref()
        .is_some_and(|m| m.contains("pods are gone")));
    // With its pod still there (no termination message written), it is recorded as before.
    let mut silent = lost;
    silent.pods = 1;
    let d = run(&plan, &PruneDistillJobStatus::default(), &[silent], 1);
    let import = d
        .status
        .stages
        .iter()
        .find(|s| s.id == "import")
        .expect("import");
    assert_eq!(import.phase, StagePhase::Succeeded);
}
