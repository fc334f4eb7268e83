//! Reconcile tests against the in-memory apiserver (tower-test mock service): first start,
//! stage success, failure with retry, retries exhausted, spec edits, deletion, Kueue,
//! pod problems, operator restarts.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::Client;
use pruneforge_api::status::{
    JobPhase, StagePhase, CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED,
};
use pruneforge_api::{PruneDistillJob, PruneDistillJobSpec, StageRequest};
use pruneforge_operator::fake::cluster::{PodOutcome, BATCH, CORE};
use pruneforge_operator::fake::{results, FakeApiServer};
use pruneforge_operator::metrics::Metrics;
use pruneforge_operator::reconcile::reconcile;
use pruneforge_operator::{finalizer, labels, Context, Settings};
use serde_json::json;

const NS: &str = "team-a";
const NAME: &str = "tiny";
const PDJ: &str = "/apis/pruneforge.dev/v1alpha1";

const SPEC: &str = r#"
pruning:
  blockSizes: [2]
recovery:
  methods: [none]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: file:///data/out
maxParallelStages: 2
"#;

struct Harness {
    server: FakeApiServer,
    client: Client,
    ctx: Arc<Context>,
}

impl Harness {
    fn new(spec_yaml: &str) -> Harness {
        Self::with_settings(spec_yaml, Settings::default())
    }

    fn with_settings(spec_yaml: &str, settings: Settings) -> Harness {
        let (server, client, _task) = FakeApiServer::start();
        let spec: PruneDistillJobSpec = serde_yaml::from_str(spec_yaml).expect("test spec");
        let obj = PruneDistillJob::new(NAME, spec);
        let mut value = serde_json::to_value(&obj).expect("serialize");
        value["metadata"]["namespace"] = json!(NS);
        server.with(|s| s.put(PDJ, "prunedistilljobs", value));
        let ctx = Arc::new(Context::new(
            client.clone(),
            settings,
            Arc::new(Metrics::default()),
            None,
        ));
        Harness {
            server,
            client,
            ctx,
        }
    }

    fn api(&self) -> Api<PruneDistillJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn get(&self) -> PruneDistillJob {
        self.api().get(NAME).await.expect("job exists")
    }

    async fn reconcile(&self) -> Action {
        let obj = self.get().await;
        reconcile(Arc::new(obj), self.ctx.clone())
            .await
            .expect("reconcile")
    }

    fn jobs(&self) -> Vec<Job> {
        self.server
            .list(BATCH, "jobs", Some(NS))
            .into_iter()
            .map(|j| serde_json::from_value(j).expect("job"))
            .collect()
    }

    fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .jobs()
            .iter()
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        names.sort();
        names
    }

    fn stage_job(&self, stage: &str) -> Vec<Job> {
        self.jobs()
            .into_iter()
            .filter(|j| {
                j.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::STAGE))
                    .map(String::as_str)
                    == Some(stage)
            })
            .collect()
    }

    fn latest_job_name(&self, stage: &str) -> String {
        let mut jobs = self.stage_job(stage);
        jobs.sort_by_key(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ATTEMPT))
                .and_then(|a| a.parse::<u32>().ok())
        });
        jobs.last()
            .and_then(|j| j.metadata.name.clone())
            .expect("stage job")
    }

    /// Reconciles and finishes running Jobs successfully until the job is Ready.
    async fn run_to_ready(&self) -> usize {
        for round in 0..30 {
            self.reconcile().await;
            let obj = self.get().await;
            let status = obj.status.clone().unwrap_or_default();
            if status.phase == Some(JobPhase::Succeeded) {
                return round;
            }
            self.server.succeed_running_jobs(NS);
        }
        panic!("job did not become ready");
    }
}

fn condition(obj: &PruneDistillJob, type_: &str) -> (String, String, String) {
    let c = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("condition {type_} missing"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn stage<'a>(obj: &'a PruneDistillJob, id: &str) -> &'a pruneforge_api::status::StageStatus {
    obj.status
        .as_ref()
        .and_then(|s| s.stages.iter().find(|s| s.id == id))
        .unwrap_or_else(|| panic!("stage {id} missing"))
}

fn succeeded_message(h: &Harness, job: &str) -> String {
    let request = h.server.with(|s| {
        let j = s.get(BATCH, "jobs", Some(NS), job).cloned().expect("job");
        pruneforge_operator::fake::cluster::job_request(s, &j).expect("request")
    });
    results::succeeded(&request).to_termination_message()
}

fn has_finalizer(obj: &PruneDistillJob) -> bool {
    obj.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer::FINALIZER)
}

const DELETE_RETENTION: &str = "uri: s3://bucket/runs\n  secretRef: s3-creds\n  retention: Delete";

#[tokio::test]
async fn only_delete_retention_gets_the_finalizer() {
    // Retain (the default) has nothing to do at deletion: no finalizer that could hold it.
    let h = Harness::new(SPEC);
    h.reconcile().await;
    assert!(!has_finalizer(&h.get().await));
    // Switched to Delete, the job gets it; switched back, it loses it again.
    let delete = Harness::new(&SPEC.replace("uri: file:///data/out", DELETE_RETENTION));
    delete.reconcile().await;
    assert!(has_finalizer(&delete.get().await));
    delete
        .api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": {"retention": "Retain"}}})),
        )
        .await
        .expect("edit");
    delete.reconcile().await;
    assert!(!has_finalizer(&delete.get().await));
}

#[tokio::test]
async fn first_start_creates_first_stage_and_reports_reconciling() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let obj = h.get().await;

    // Only `import` has no inputs.
    let jobs = h.jobs();
    assert_eq!(jobs.len(), 1, "{:?}", h.job_names());
    let job = &jobs[0];
    let name = job.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with("tiny-import-"), "{name}");
    // Finished stage Jobs do not pile up: a day's TTL when the spec sets none.
    assert_eq!(
        job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished),
        Some(86_400)
    );
    assert!(name.len() <= 63);
    let l = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(l[labels::MANAGED_BY], "pruneforge-operator");
    assert_eq!(l[labels::JOB], NAME);
    assert_eq!(l[labels::STAGE], "import");
    assert_eq!(l[labels::KEY].len(), 16);
    let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("PruneDistillJob", Some(true))
    );

    // Pod template: the runner contract.
    let spec = job.spec.as_ref().expect("job spec");
    assert_eq!(spec.backoff_limit, Some(0));
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let psc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(
        (psc.run_as_non_root, psc.run_as_user),
        (Some(true), Some(65532))
    );
    let c = &pod.containers[0];
    assert_eq!(c.name, "runner");
    assert_eq!(
        c.command.clone().unwrap_or_default(),
        [
            "pruneforge",
            "stage",
            "--request",
            "/etc/pruneforge/request/request.json"
        ]
    );
    assert_eq!(
        c.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    let env = c.env.clone().unwrap_or_default();
    assert!(env.iter().any(|e| e.name == "PRUNEFORGE_DATA_DIR"
        && e.value.as_deref() == Some("/usr/share/pruneforge/data")));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(
        mounts.contains(&"/etc/pruneforge/request")
            && mounts.contains(&"/tmp")
            && mounts.contains(&"/work"),
        "{mounts:?}"
    );

    // The request ConfigMap holds a valid request for the stage.
    let cms: Api<ConfigMap> = Api::namespaced(h.client.clone(), NS);
    let cm_name = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "request")
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .expect("request volume");
    let cm = cms.get(&cm_name).await.expect("configmap");
    let request =
        StageRequest::from_json(&cm.data.expect("data")["request.json"]).expect("request");
    assert_eq!(request.stage_id.as_str(), "import");
    assert_eq!(request.job.namespace.as_deref(), Some(NS));

    // Status: written with server-side apply by our field manager.
    let (st, reason, _) = condition(&obj, CONDITION_RECONCILING);
    assert_eq!((st.as_str(), reason.as_str()), ("True", "StagesRunning"));
    assert_eq!(condition(&obj, CONDITION_READY).0, "False");
    assert_eq!(condition(&obj, CONDITION_STALLED).0, "False");
    let status = obj.status.clone().expect("status");
    assert_eq!(status.phase, Some(JobPhase::Running));
    assert_eq!(status.current_stage.as_deref(), Some("import"));
    assert_eq!(status.stages.len(), 5);
    assert_eq!(stage(&obj, "import").phase, StagePhase::Running);
    assert_eq!(stage(&obj, "import").attempts, 1);
    assert_eq!(stage(&obj, "score").phase, StagePhase::Pending);
    let status_patch = h
        .server
        .requests()
        .into_iter()
        .find(|r| r.is("PATCH", "/prunedistilljobs/tiny/status"))
        .expect("status patch");
    assert_eq!(
        status_patch.query.get("fieldManager").map(String::as_str),
        Some("pruneforge-operator")
    );
    assert_eq!(
        status_patch.query.get("force").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        status_patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    // A StageStarted event.
    assert!(h.server.requests().iter().any(|r| r.is("POST", "/events")
        && r.body
            .as_ref()
            .is_some_and(|b| b["reason"] == "StageStarted")));

    // Idempotent: a second reconcile changes nothing.
    h.server.clear_requests();
    h.reconcile().await;
    assert_eq!(h.jobs().len(), 1);
    let writes: Vec<_> = h
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
}

#[tokio::test]
async fn stage_success_records_result_and_starts_next_stages() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let import = h.latest_job_name("import");
    let message = succeeded_message(&h, &import);
    h.server
        .run_job_to_end(NS, &import, &PodOutcome::succeeded(message));
    h.reconcile().await;

    let obj = h.get().await;
    let s = stage(&obj, "import");
    assert_eq!(s.phase, StagePhase::Succeeded);
    assert_eq!(s.message.as_deref(), Some("30 layers, 134.5M parameters"));
    assert!(s
        .result_uri
        .as_deref()
        .is_some_and(|u| u.starts_with("file:///data/out/import/") && u.ends_with("/result.json")));
    assert!(s.completion_time.is_some());
    // score and eval-base depend only on import; maxParallelStages = 2.
    assert_eq!(stage(&obj, "score").phase, StagePhase::Running);
    assert_eq!(stage(&obj, "eval-base").phase, StagePhase::Running);
    assert_eq!(h.jobs().len(), 3);
    assert_eq!(
        obj.status
            .as_ref()
            .and_then(|s| s.current_stage.clone())
            .as_deref(),
        Some("score,eval-base")
    );
}

#[tokio::test]
async fn full_run_fills_results_and_becomes_ready() {
    let h = Harness::new(SPEC);
    h.run_to_ready().await;
    let obj = h.get().await;
    let status = obj.status.clone().expect("status");
    assert_eq!(condition(&obj, CONDITION_READY).0, "True");
    assert_eq!(condition(&obj, CONDITION_RECONCILING).0, "False");
    assert_eq!(condition(&obj, CONDITION_STALLED).0, "False");
    assert!(status
        .conditions
        .iter()
        .all(|c| c.observed_generation == Some(1)));
    assert_eq!(status.observed_generation, Some(1));
    assert!(status
        .stages
        .iter()
        .all(|s| s.phase == StagePhase::Succeeded));
    assert_eq!(status.layer_scores.len(), 1);
    assert_eq!(status.layer_scores[0].block_range(), "26-27");
    assert_eq!(status.pruned_blocks.as_deref(), Some("26-27"));
    assert_eq!(status.pruned_models.len(), 1);
    assert_eq!(status.pruned_models[0].variant, "n2");
    let variants: Vec<&str> = status
        .evaluations
        .iter()
        .map(|e| e.variant.as_str())
        .collect();
    assert_eq!(variants, ["base", "n2"]);
    let n2 = &status.evaluations[1];
    let base_avg = status.evaluations[0].average.expect("base average");
    let expected = (n2.average.expect("average") / base_avg * 100.0 * 100.0).round() / 100.0;
    assert_eq!(n2.recovery_percent, Some(expected));
    let best = status.best_recovery.clone().expect("best recovery");
    assert_eq!((best.variant.as_str(), best.percent), ("n2", expected));
    assert_eq!(status.current_stage, None);
}

/// Depth and width variants side by side: every variant gets its pruned model, evaluation
/// and recovery; the printed pruned blocks name only the depth ones.
#[tokio::test]
async fn width_variants_run_beside_depth_and_report_by_variant() {
    let h = Harness::new(
        r#"
pruning:
  blockSizes: [2]
  widths:
    - name: mlp75
      intermediateSize: "75%"
    - name: mix
      blockSize: 1
      intermediateSize: 1200
recovery:
  methods: [none]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: file:///data/out
maxParallelStages: 4
"#,
    );
    h.run_to_ready().await;
    let obj = h.get().await;
    let status = obj.status.clone().expect("status");
    let mut pruned: Vec<(&str, u32, Option<&str>)> = status
        .pruned_models
        .iter()
        .map(|m| (m.variant.as_str(), m.block_size, m.width.as_deref()))
        .collect();
    pruned.sort();
    assert_eq!(
        pruned,
        [
            ("n1-w-mix", 1, Some("mix")),
            ("n2", 2, None),
            ("w-mlp75", 0, Some("mlp75"))
        ]
    );
    let w = status
        .pruned_models
        .iter()
        .find(|m| m.variant == "w-mlp75")
        .and_then(|m| m.summary.as_deref())
        .expect("summary");
    assert!(w.starts_with("no layer dropped; width intermediate"), "{w}");
    let mut evals: Vec<&str> = status
        .evaluations
        .iter()
        .map(|e| e.variant.as_str())
        .collect();
    evals.sort();
    assert_eq!(evals, ["base", "n1-w-mix", "n2", "w-mlp75"]);
    assert!(status
        .evaluations
        .iter()
        .filter(|e| e.variant != "base")
        .all(|e| e.recovery_percent.is_some()));
    assert_eq!(
        status
            .pruned_blocks
            .as_deref()
            .map(|b| b.split(',').count()),
        Some(2)
    );
}

#[tokio::test]
async fn failed_attempt_is_retried_with_a_new_job_and_reason_in_status() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let first = h.latest_job_name("import");
    h.server
        .run_job_to_end(NS, &first, &PodOutcome::failed(137, "OOMKilled", ""));
    h.reconcile().await;

    let obj = h.get().await;
    let s = stage(&obj, "import");
    assert_eq!(s.phase, StagePhase::Running);
    assert_eq!(s.attempts, 2);
    let m = s.message.clone().unwrap_or_default();
    assert!(
        m.contains("attempt 1 of 3 failed")
            && m.contains("OOMKilled (exit 137)")
            && m.contains("BackoffLimitExceeded"),
        "{m}"
    );
    let second = h.latest_job_name("import");
    assert_ne!(first, second);
    assert!(second.ends_with("-a2"), "{second}");
    assert_eq!(s.job_name.as_deref(), Some(second.as_str()));
    assert!(h.server.requests().iter().any(|r| r.is("POST", "/events")
        && r.body
            .as_ref()
            .is_some_and(|b| b["reason"] == "StageRetrying" && b["type"] == "Warning")));

    // The retry succeeds: the stage is done and the old Job stays (history).
    let message = succeeded_message(&h, &second);
    h.server
        .run_job_to_end(NS, &second, &PodOutcome::succeeded(message));
    h.reconcile().await;
    let obj = h.get().await;
    assert_eq!(stage(&obj, "import").phase, StagePhase::Succeeded);
    assert_eq!(stage(&obj, "import").attempts, 2);
}

#[tokio::test]
async fn exhausted_retries_stall_the_job_with_the_runner_message() {
    let h = Harness::with_settings(
        SPEC,
        Settings {
            max_attempts: 2,
            ..Settings::default()
        },
    );
    h.reconcile().await;
    for _ in 0..2 {
        let job = h.latest_job_name("import");
        let request = h.server.with(|s| {
            let j = s.get(BATCH, "jobs", Some(NS), &job).cloned().expect("job");
            pruneforge_operator::fake::cluster::job_request(s, &j).expect("request")
        });
        let msg = results::failed(&request, "model source: embedded model missing from image")
            .to_termination_message();
        h.server
            .run_job_to_end(NS, &job, &PodOutcome::failed(1, "Error", msg));
        h.reconcile().await;
    }
    let obj = h.get().await;
    let s = stage(&obj, "import");
    assert_eq!(s.phase, StagePhase::Failed);
    assert_eq!(s.attempts, 2);
    let m = s.message.clone().unwrap_or_default();
    assert!(
        m.contains("failed after 2 attempt(s)") && m.contains("embedded model missing from image"),
        "{m}"
    );
    let (stalled, reason, msg) = condition(&obj, CONDITION_STALLED);
    assert_eq!((stalled.as_str(), reason.as_str()), ("True", "StageFailed"));
    assert!(msg.contains("stage import"), "{msg}");
    assert_eq!(condition(&obj, CONDITION_READY).0, "False");
    assert_eq!(condition(&obj, CONDITION_RECONCILING).0, "False");
    assert_eq!(
        obj.status.as_ref().and_then(|s| s.phase),
        Some(JobPhase::Failed)
    );
    assert_eq!(
        stage(&obj, "score").message.as_deref(),
        Some("blocked: import failed")
    );
    // No third Job, also on later reconciles.
    h.reconcile().await;
    assert_eq!(h.stage_job("import").len(), 2);

    // A spec change (e.g. a fixed runner image) retries the failed stage from attempt 1.
    h.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"runner": {"image": "example.com/runner:fixed"}}})),
        )
        .await
        .expect("edit");
    h.reconcile().await; // deletes the failed Jobs
    h.reconcile().await; // starts attempt 1 again
    let obj = h.get().await;
    assert_eq!(stage(&obj, "import").phase, StagePhase::Running);
    assert_eq!(stage(&obj, "import").attempts, 1);
    assert_eq!(condition(&obj, CONDITION_STALLED).0, "False");
    let jobs = h.stage_job("import");
    assert_eq!(jobs.len(), 1);
    let image = jobs[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("example.com/runner:fixed"));
}

#[tokio::test]
async fn changed_eval_key_reruns_only_evals() {
    let h = Harness::new(SPEC);
    h.run_to_ready().await;
    let before = h.get().await;
    let old_jobs = h.job_names();
    let keys = |o: &PruneDistillJob| -> Vec<(String, String)> {
        o.status
            .as_ref()
            .map(|s| {
                s.stages
                    .iter()
                    .map(|s| (s.id.clone(), s.key.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };

    h.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"evaluation": {"tasks": [{"name": "arc_easy", "limit": 20}]}}}),
            ),
        )
        .await
        .expect("edit");
    h.reconcile().await;
    let obj = h.get().await;
    for id in ["import", "score", "prune-n2"] {
        assert_eq!(stage(&obj, id).phase, StagePhase::Succeeded, "{id}");
        assert_eq!(stage(&obj, id).attempts, 1, "{id}");
    }
    let changed: Vec<String> = keys(&before)
        .into_iter()
        .zip(keys(&obj))
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.0)
        .collect();
    assert_eq!(changed, ["eval-base", "eval-n2"]);
    assert_eq!(stage(&obj, "eval-base").phase, StagePhase::Running);
    // Variant evals take the base eval as input (recovery %), so eval-n2 waits for it.
    assert_eq!(stage(&obj, "eval-n2").phase, StagePhase::Pending);
    // Stale eval results are gone until the reruns finish; the others stay.
    let status = obj.status.clone().expect("status");
    assert!(status.evaluations.is_empty());
    assert_eq!(status.best_recovery, None);
    assert_eq!(status.pruned_models.len(), 1);
    assert_eq!(condition(&obj, CONDITION_READY).0, "False");
    assert_eq!(status.observed_generation, Some(2));
    // Old eval Jobs deleted, no other Job recreated.
    let now = h.job_names();
    for old in &old_jobs {
        let is_eval = old.starts_with("tiny-eval-");
        assert_eq!(now.contains(old), !is_eval, "{old}");
    }
    // Two eval Jobs gone, one new (eval-base; eval-n2 waits for it).
    assert_eq!(now.len(), old_jobs.len() - 1);
    h.run_to_ready().await;
    let obj = h.get().await;
    assert_eq!(obj.status.as_ref().map(|s| s.evaluations.len()), Some(2));
    assert_eq!(stage(&obj, "import").attempts, 1);
}

#[tokio::test]
async fn restart_with_vanished_jobs_does_not_rerun_finished_stages() {
    let h = Harness::new(SPEC);
    h.run_to_ready().await;
    // TTL deleted every finished Job; a new operator process starts.
    for name in h.job_names() {
        h.server.with(|s| s.remove(BATCH, "jobs", NS, &name));
    }
    let fresh = Arc::new(Context::new(
        h.client.clone(),
        Settings::default(),
        Arc::new(Metrics::default()),
        None,
    ));
    h.server.clear_requests();
    let obj = h.get().await;
    reconcile(Arc::new(obj), fresh).await.expect("reconcile");
    assert!(h.jobs().is_empty());
    let writes: Vec<_> = h
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(condition(&h.get().await, CONDITION_READY).0, "True");
}

#[tokio::test]
async fn running_stage_whose_job_vanished_is_recreated() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let import = h.latest_job_name("import");
    h.server.with(|s| s.remove(BATCH, "jobs", NS, &import));
    h.reconcile().await;
    assert_eq!(h.job_names(), vec![import]);
    assert_eq!(stage(&h.get().await, "import").attempts, 1);
}

#[tokio::test]
async fn pod_problems_surface_in_the_stage_message() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let import = h.latest_job_name("import");
    let pods = h.server.sync_jobs();
    assert_eq!(pods.len(), 1);
    h.server.with(|s| {
        pruneforge_operator::fake::cluster::set_pod_waiting(
            s,
            NS,
            &pods[0],
            "ImagePullBackOff",
            "Back-off pulling image \"nope:1\"",
        )
    });
    h.reconcile().await;
    let obj = h.get().await;
    let m = stage(&obj, "import").message.clone().unwrap_or_default();
    assert!(
        m.contains("ImagePullBackOff") && m.contains("nope:1") && m.contains(&import),
        "{m}"
    );
    assert!(h.server.requests().iter().any(|r| r.is("POST", "/events")
        && r.body
            .as_ref()
            .is_some_and(|b| b["reason"] == "StagePodProblem")));

    // Unschedulable from the PodScheduled condition.
    h.server.with(|s| {
        let mut pod = s.get(CORE, "pods", Some(NS), &pods[0]).cloned().expect("pod");
        pod["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]});
        s.put(CORE, "pods", pod);
    });
    h.reconcile().await;
    let m = stage(&h.get().await, "import")
        .message
        .clone()
        .unwrap_or_default();
    assert!(m.contains("Unschedulable: 0/3 nodes are available"), "{m}");
}

#[tokio::test]
async fn deadline_exceeded_is_reported() {
    let h = Harness::with_settings(
        SPEC,
        Settings {
            max_attempts: 1,
            ..Settings::default()
        },
    );
    h.reconcile().await;
    let import = h.latest_job_name("import");
    h.server.with(|s| {
        let mut job = s.get(BATCH, "jobs", Some(NS), &import).cloned().expect("job");
        job["status"] = json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]});
        s.put(BATCH, "jobs", job);
    });
    h.reconcile().await;
    let obj = h.get().await;
    let m = stage(&obj, "import").message.clone().unwrap_or_default();
    assert!(
        m.contains("DeadlineExceeded: Job was active longer than specified deadline"),
        "{m}"
    );
    assert_eq!(condition(&obj, CONDITION_STALLED).0, "True");
}

#[tokio::test]
async fn kueue_queue_creates_suspended_jobs() {
    let spec = format!("{SPEC}runner:\n  queueName: gpu-queue\n  gpu:\n    count: 1\n  backoffLimit: 2\n  activeDeadlineSeconds: 3600\n  ttlSecondsAfterFinished: 600\n  priorityClassName: batch-high\n  nodeSelector:\n    accelerator: h100\n");
    let h = Harness::new(&spec);
    h.reconcile().await;
    let job = &h.jobs()[0];
    let l = job.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        l.get(labels::KUEUE_QUEUE).map(String::as_str),
        Some("gpu-queue")
    );
    let spec = job.spec.clone().expect("spec");
    assert_eq!(spec.suspend, Some(true));
    assert_eq!(
        (
            spec.backoff_limit,
            spec.active_deadline_seconds,
            spec.ttl_seconds_after_finished
        ),
        (Some(2), Some(3600), Some(600))
    );
    let pod = spec.template.spec.expect("pod");
    assert_eq!(pod.priority_class_name.as_deref(), Some("batch-high"));
    assert_eq!(
        pod.node_selector
            .unwrap_or_default()
            .get("accelerator")
            .map(String::as_str),
        Some("h100")
    );
    let limits = pod.containers[0]
        .resources
        .clone()
        .and_then(|r| r.limits)
        .unwrap_or_default();
    assert_eq!(
        limits.get("nvidia.com/gpu").map(|q| q.0.as_str()),
        Some("1")
    );
    // Suspended Jobs hold their slot and say why.
    h.reconcile().await;
    let m = stage(&h.get().await, "import")
        .message
        .clone()
        .unwrap_or_default();
    assert!(m.contains("Kueue"), "{m}");
}

#[tokio::test]
async fn invalid_spec_stalls_without_jobs() {
    let h = Harness::new(&SPEC.replace("blockSizes: [2]", "blockSizes: []"));
    h.reconcile().await;
    let obj = h.get().await;
    let (st, reason, msg) = condition(&obj, CONDITION_STALLED);
    assert_eq!((st.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(msg.contains("spec.pruning.blockSizes"), "{msg}");
    assert!(h.jobs().is_empty());
}

#[tokio::test]
async fn sharded_distill_runs_as_indexed_job() {
    let spec = r#"
pruning:
  blockSizes: [2]
distillation:
  shards: 3
  datasets:
    - name: gsm8k
      uri: builtin:gsm8k-train
      format: gsm8k
      kind: math
      limit: 32
recovery:
  methods: [self-distill]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: file:///data/out
maxParallelStages: 4
"#;
    let h = Harness::new(spec);
    for _ in 0..10 {
        h.reconcile().await;
        if !h.stage_job("distill-gsm8k").is_empty() {
            break;
        }
        h.server.succeed_running_jobs(NS);
    }
    let job = h.stage_job("distill-gsm8k").pop().expect("distill job");
    let spec = job.spec.clone().expect("spec");
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!(
        (
            spec.completions,
            spec.parallelism,
            spec.backoff_limit_per_index
        ),
        (Some(3), Some(3), Some(0))
    );
    h.run_to_ready().await;
    let obj = h.get().await;
    // Shard summaries are summed: 3 × 28/32.
    assert_eq!(
        stage(&obj, "distill-gsm8k").message.as_deref(),
        Some("kept 84/96 rewrites (87.5%)")
    );
    assert_eq!(obj.status.as_ref().map(|s| s.adapters.len()), Some(1));
}

#[tokio::test]
async fn deletion_with_retain_is_immediate_and_removes_owned_objects() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    assert_eq!(h.jobs().len(), 1);
    h.api()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");
    assert!(h.api().get_opt(NAME).await.expect("get").is_none());
    assert!(h.jobs().is_empty(), "owned Jobs are garbage collected");
    assert!(h.server.list(CORE, "configmaps", Some(NS)).is_empty());
}

#[tokio::test]
async fn deletion_with_retain_removes_a_finalizer_left_by_an_earlier_version() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    assert_eq!(h.jobs().len(), 1);
    h.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [finalizer::FINALIZER]}})),
        )
        .await
        .expect("add the finalizer as an earlier version did");
    h.api()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");
    let obj = h.get().await;
    assert!(obj.metadata.deletion_timestamp.is_some());
    reconcile(Arc::new(obj), h.ctx.clone())
        .await
        .expect("cleanup");
    assert!(h.api().get_opt(NAME).await.expect("get").is_none());
    assert!(h.jobs().is_empty(), "owned Jobs are garbage collected");
    assert!(h.server.list(CORE, "configmaps", Some(NS)).is_empty());
}

#[tokio::test]
async fn deletion_with_delete_retention_runs_a_cleanup_job() {
    let spec = SPEC.replace("uri: file:///data/out", DELETE_RETENTION)
        + "runner:\n  gpu:\n    count: 1\n  nodeSelector:\n    pool: h100\n  tolerations:\n    - key: nvidia.com/gpu\n      operator: Exists\n      effect: NoSchedule\n  priorityClassName: training\n";
    let h = Harness::new(&spec);
    h.run_to_ready().await;
    h.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"evaluation": {"tasks": [{"name": "arc_easy", "limit": 30}]}}}),
            ),
        )
        .await
        .expect("edit");
    h.reconcile().await; // eval-base running again (eval-n2 waits for it)
    assert_eq!(h.server.running_jobs(NS).len(), 1);
    h.api()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");

    // 1: running stage Jobs are deleted first.
    h.reconcile().await;
    assert!(h.server.running_jobs(NS).is_empty());
    assert!(h.api().get_opt(NAME).await.expect("get").is_some());
    // 2: the clean-up Job is created with one prefix per started stage.
    h.reconcile().await;
    let gc: Vec<Job> = h
        .jobs()
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ROLE))
                .map(String::as_str)
                == Some("gc")
        })
        .collect();
    assert_eq!(gc.len(), 1);
    let gc = &gc[0];
    assert!(gc.metadata.owner_references.is_none());
    let gc_spec = gc.spec.as_ref().expect("job spec");
    assert_eq!(gc_spec.active_deadline_seconds, Some(1800), "a deadline");
    let pod = gc_spec.template.spec.clone().expect("pod");
    // A CPU pod: none of the GPU stages' placement, so it never waits for a GPU node.
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
    assert!(pod.priority_class_name.is_none());
    let stage_pod = h
        .jobs()
        .into_iter()
        .find(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ROLE))
                .is_none_or(|r| r != "gc")
        })
        .and_then(|j| j.spec.and_then(|s| s.template.spec))
        .expect("a stage pod");
    assert!(stage_pod.node_selector.is_some() && stage_pod.tolerations.is_some());
    let c = &pod.containers[0];
    let cmd = c.command.clone().unwrap_or_default();
    assert_eq!(&cmd[..2], ["pruneforge", "gc"]);
    let prefixes: Vec<&String> = cmd.iter().skip(2).filter(|a| *a != "--prefix").collect();
    // import, score, prune and the rerun eval-base; eval-n2 never started with its new key.
    assert_eq!(prefixes.len(), 4, "{cmd:?}");
    assert!(prefixes
        .iter()
        .all(|p| p.starts_with("s3://bucket/runs/") && p.ends_with('/')));
    assert_eq!(
        c.env_from
            .as_ref()
            .and_then(|e| e[0].secret_ref.as_ref())
            .map(|s| s.name.as_str()),
        Some("s3-creds")
    );
    assert!(
        h.api().get_opt(NAME).await.expect("get").is_some(),
        "waits for the clean-up Job"
    );
    // 3: when it completes, the finalizer goes and so does the job.
    let gc_name = gc.metadata.name.clone().expect("name");
    h.server
        .run_job_to_end(NS, &gc_name, &PodOutcome::succeeded(""));
    h.reconcile().await;
    assert!(h.api().get_opt(NAME).await.expect("get").is_none());
    assert!(h.server.requests().iter().any(|r| r.is("POST", "/events")
        && r.body
            .as_ref()
            .is_some_and(|b| b["reason"] == "ArtifactsDeleted")));
}

#[tokio::test]
async fn deletion_keeps_artifacts_another_job_still_uses() {
    let h = Harness::new(&SPEC.replace("uri: file:///data/out", DELETE_RETENTION));
    h.run_to_ready().await;
    // A second job with the same spec and storage: every artifact is shared (its status lists
    // the same keys; it kept the default Retain).
    let mut twin = serde_json::to_value(h.get().await).expect("serialize");
    twin["metadata"] = json!({"name": "twin", "namespace": NS});
    twin["spec"]["storage"]["retention"] = json!("Retain");
    h.server.with(|s| s.put(PDJ, "prunedistilljobs", twin));
    h.api()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");
    h.reconcile().await;
    assert!(h.api().get_opt(NAME).await.expect("get").is_none());
    let requests = h.server.requests();
    assert!(
        !requests.iter().any(|r| r.is("POST", "/jobs")
            && r.body
                .as_ref()
                .is_some_and(|b| b["metadata"]["labels"][labels::ROLE] == "gc")),
        "no clean-up Job: everything is shared"
    );
    assert!(requests.iter().any(|r| r.is("POST", "/events")
        && r.body
            .as_ref()
            .is_some_and(|b| b["reason"] == "ArtifactsShared")));
}

#[tokio::test]
async fn shared_artifacts_are_those_of_other_live_jobs() {
    let spec: PruneDistillJobSpec =
        serde_yaml::from_str(&SPEC.replace("uri: file:///data/out", DELETE_RETENTION))
            .expect("spec");
    let h = Harness::new(&SPEC.replace("uri: file:///data/out", DELETE_RETENTION));
    h.run_to_ready().await;
    let me = h.get().await;
    let mine = finalizer::artifact_prefixes(&me);
    assert!(mine.len() > 3);
    let mut other = me.clone();
    other.metadata.name = Some("other".into());
    other.metadata.uid = Some("another-uid".into());
    assert_eq!(
        finalizer::referenced_elsewhere(&me, &[me.clone(), other.clone()])
            .intersection(&mine.iter().cloned().collect())
            .count(),
        mine.len(),
        "itself does not count; an identical job shares everything"
    );
    // Another job being deleted with Delete does not hold the artifacts back.
    other.metadata.deletion_timestamp = me.metadata.creation_timestamp.clone();
    assert!(finalizer::referenced_elsewhere(&me, &[other.clone()]).is_empty());
    // Different storage root: nothing shared.
    other.metadata.deletion_timestamp = None;
    other.spec = spec;
    other.spec.storage.uri = "s3://elsewhere/runs".into();
    assert!(finalizer::referenced_elsewhere(&me, &[other])
        .iter()
        .all(|u| u.starts_with("s3://elsewhere/")));
}

#[tokio::test]
async fn deletion_in_a_terminating_namespace_does_not_hang() {
    let h = Harness::new(&SPEC.replace("uri: file:///data/out", DELETE_RETENTION));
    h.run_to_ready().await;
    assert!(has_finalizer(&h.get().await));
    // `kubectl delete namespace`: the namespace controller deletes the job, and the apiserver
    // refuses new objects in the namespace, the clean-up Job among them.
    h.server
        .with(|s| s.terminating_namespaces.insert(NS.to_string()));
    h.api()
        .delete(NAME, &DeleteParams::default())
        .await
        .expect("delete");
    h.reconcile().await;
    assert!(
        h.api().get_opt(NAME).await.expect("get").is_none(),
        "the finalizer is removed, so the namespace can go"
    );
    assert!(h.server.requests().iter().any(|r| r.is("POST", "/jobs")
        && r.body
            .as_ref()
            .is_some_and(|b| b["metadata"]["labels"][labels::ROLE] == "gc")));
}

#[tokio::test]
async fn permanent_api_errors_stall_the_job_with_an_event_and_back_off() {
    // A name the apiserver accepted before the 63-character rule: the label copy makes every
    // create fail with 422. The status must say so instead of "Pending".
    let (server, client, _task) = FakeApiServer::start();
    let long = "a".repeat(70);
    let spec: PruneDistillJobSpec = serde_yaml::from_str(SPEC).expect("test spec");
    let mut value = serde_json::to_value(PruneDistillJob::new(&long, spec)).expect("serialize");
    value["metadata"]["namespace"] = json!(NS);
    server.with(|s| s.put(PDJ, "prunedistilljobs", value));
    let settings = Settings {
        requeue_error: std::time::Duration::from_secs(5),
        requeue_error_max: std::time::Duration::from_secs(20),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        Arc::new(Metrics::default()),
        None,
    ));
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), NS);
    let obj = Arc::new(api.get(&long).await.expect("job"));
    let error = reconcile(obj.clone(), ctx.clone())
        .await
        .expect_err("the create is rejected");
    assert!(error.is_permanent(), "{error}");
    let obj = api.get(&long).await.expect("job");
    let (st, reason, message) = condition(&obj, CONDITION_STALLED);
    assert_eq!((st.as_str(), reason.as_str()), ("True", "ApiError"));
    assert!(
        message.contains("422") && message.contains("63 characters"),
        "{message}"
    );
    assert_eq!(condition(&obj, CONDITION_RECONCILING).0, "False");
    assert!(server
        .requests()
        .iter()
        .any(|r| r.is("POST", "/events")
            && r.body.as_ref().is_some_and(|b| b["reason"] == "ApiError")));
    // Exponential backoff per object, reset by a successful reconcile.
    let obj = Arc::new(obj);
    let delays: Vec<Action> = (0..4)
        .map(|_| pruneforge_operator::reconcile::error_policy(obj.clone(), &error, ctx.clone()))
        .collect();
    let s = std::time::Duration::from_secs;
    assert_eq!(
        delays,
        [s(5), s(10), s(20), s(20)].map(Action::requeue).to_vec()
    );
}

#[tokio::test]
async fn stage_objects_block_a_foreground_deletion_of_their_owner() {
    let h = Harness::new(SPEC);
    h.reconcile().await;
    let jobs = h.jobs();
    assert!(!jobs.is_empty());
    let cms: Vec<ConfigMap> = h
        .server
        .list(CORE, "configmaps", Some(NS))
        .into_iter()
        .map(|c| serde_json::from_value(c).expect("configmap"))
        .collect();
    assert!(!cms.is_empty());
    let owners = jobs
        .iter()
        .map(|j| &j.metadata)
        .chain(cms.iter().map(|c| &c.metadata))
        .flat_map(|m| m.owner_references.iter().flatten());
    for o in owners {
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(true), "{o:?}");
    }
}

#[tokio::test]
async fn teacher_correction_runs_first_and_is_reported_as_the_teacher() {
    let h = Harness::new(
        r#"
pruning:
  blockSizes: [2]
distillation:
  datasets:
    - name: alpaca
      uri: builtin:alpaca
      format: alpaca
      kind: general
      limit: 8
recovery:
  methods: [none, logit-kd]
  teacherCorrection:
    steps: 4
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: file:///data/out
maxParallelStages: 4
"#,
    );
    h.run_to_ready().await;
    let status = h.get().await.status.expect("status");
    let mut adapters: Vec<&str> = status.adapters.iter().map(|a| a.variant.as_str()).collect();
    adapters.sort();
    assert_eq!(adapters, ["n2-logit-kd", "teacher"]);
    let mut evals: Vec<&str> = status
        .evaluations
        .iter()
        .map(|e| e.variant.as_str())
        .collect();
    evals.sort();
    assert_eq!(evals, ["base", "n2", "n2-logit-kd"]);
}

#[tokio::test]
async fn preference_stages_run_after_their_fine_tunes_and_are_reported() {
    let h = Harness::new(
        r#"
pruning:
  blockSizes: [2]
distillation:
  datasets:
    - name: alpaca
      uri: builtin:alpaca
      format: alpaca
      kind: general
      limit: 8
recovery:
  methods: [none, sft]
  preference:
    after: [sft]
    dpo:
      dataset:
        uri: s3://bucket/pairs.jsonl
    spin:
      iterations: 2
    steps: 4
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: file:///data/out
maxParallelStages: 4
"#,
    );
    h.run_to_ready().await;
    let status = h.get().await.status.expect("status");
    let mut adapters: Vec<&str> = status.adapters.iter().map(|a| a.variant.as_str()).collect();
    adapters.sort();
    assert_eq!(
        adapters,
        ["n2-sft", "n2-sft-dpo", "n2-sft-spin1", "n2-sft-spin2"]
    );
    let spin2 = status
        .adapters
        .iter()
        .find(|a| a.variant == "n2-sft-spin2")
        .unwrap();
    assert_eq!(spin2.method.as_deref(), Some("sft-spin2"));
    assert!(
        spin2
            .summary
            .as_deref()
            .is_some_and(|s| s.contains("reward margin")),
        "{spin2:?}"
    );
    let mut evals: Vec<&str> = status
        .evaluations
        .iter()
        .map(|e| e.variant.as_str())
        .collect();
    evals.sort();
    assert_eq!(
        evals,
        [
            "base",
            "n2",
            "n2-sft",
            "n2-sft-dpo",
            "n2-sft-spin1",
            "n2-sft-spin2"
        ]
    );
}
