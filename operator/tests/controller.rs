//! The running controller (watches, reflector stores, expectations, debounce) against the
//! in-memory apiserver, which also plays the Job controller and the kubelet.

use std::time::Duration;

use pruneforge_api::status::JobPhase;
use pruneforge_api::{PruneDistillJob, PruneDistillJobSpec};
use pruneforge_operator::fake::cluster::{BATCH, CORE};
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::{labels, Operator, Scope, Settings};
use serde_json::json;
use tokio::sync::watch;

const NS: &str = "team-a";
const PDJ: &str = "/apis/pruneforge.dev/v1alpha1";
const JOBS: usize = 3;

/// The quickstart: import, score, prune, SFT and self-distillation, merge, five evals,
/// speculation (13 stages with fan-out and fan-in).
const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

fn phase(server: &FakeApiServer, name: &str) -> Option<JobPhase> {
    server
        .get(PDJ, "prunedistilljobs", NS, name)
        .and_then(|v| v.pointer("/status/phase").cloned())
        .and_then(|p| serde_json::from_value(p).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_reads_stage_jobs_and_pods_from_its_watch_caches() {
    let (server, client, _task) = FakeApiServer::start();
    let spec: PruneDistillJobSpec = serde_yaml::from_str::<PruneDistillJob>(QUICKSTART)
        .expect("quickstart")
        .spec;
    let stages = pruneforge_api::plan(&spec).expect("plan").len();
    for i in 0..JOBS {
        let obj = PruneDistillJob::new(&format!("job-{i}"), spec.clone());
        let mut value = serde_json::to_value(&obj).expect("serialize");
        value["metadata"]["namespace"] = json!(NS);
        server.with(|s| s.put(PDJ, "prunedistilljobs", value));
    }
    let settings = Settings {
        debounce: Duration::from_millis(20),
        requeue_running: Duration::from_secs(2),
        ..Settings::default()
    };
    let operator = Operator::new(client, settings, Scope::Namespace(NS.into()));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let run = tokio::spawn(operator.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let names: Vec<String> = (0..JOBS).map(|i| format!("job-{i}")).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !names
        .iter()
        .all(|n| phase(&server, n) == Some(JobPhase::Succeeded))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all jobs Succeeded within 60 s: {:?}",
            names.iter().map(|n| phase(&server, n)).collect::<Vec<_>>()
        );
        server.succeed_running_jobs(NS);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;

    let requests = server.requests();
    let lists = |resource: &str| {
        requests
            .iter()
            .filter(|r| {
                r.rbac()
                    .is_some_and(|(_, res, verb)| res == resource && verb == "list")
            })
            .filter(|r| {
                r.query
                    .get("labelSelector")
                    .is_some_and(|s| s.contains(labels::JOB))
            })
            .count()
    };
    // Jobs come from the store only; Pods are listed once per finished stage at most, when
    // its result is read (never on the reconciles in between).
    assert_eq!(lists("jobs"), 0, "per-resource Job lists");
    assert!(
        lists("pods") <= JOBS * stages,
        "{} per-resource Pod lists for {} stages",
        lists("pods"),
        JOBS * stages
    );

    // One Job per stage: no Job was created twice, not even with a 409.
    let jobs = server.list(BATCH, "jobs", Some(NS));
    assert_eq!(jobs.len(), JOBS * stages);
    let creates = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
        .count();
    assert_eq!(creates, JOBS * stages, "Job creates");

    // The request ConfigMaps of succeeded stages are gone.
    let requests_left: Vec<String> = server
        .list(CORE, "configmaps", Some(NS))
        .iter()
        .filter_map(|c| c.pointer("/metadata/name").and_then(|n| n.as_str()))
        .map(str::to_string)
        .collect();
    assert!(requests_left.is_empty(), "left: {requests_left:?}");
}
