//! End-to-end: the operator in-process against a real cluster (`PRUNEFORGE_E2E_KUBECONFIG`),
//! optionally playing the kubelet (`PRUNEFORGE_E2E_FAKE_KUBELET=1`, for clusters with an
//! apiserver, etcd and controller-manager but no nodes); and, always, the same wiring against
//! the in-memory apiserver to check the fake kubelet and the controller's watches offline.

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pruneforge_api::status::{JobPhase, StagePhase, CONDITION_READY, CONDITION_STALLED};
use pruneforge_api::PruneDistillJob;
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::{Operator, Scope, Settings};
use pruneforge_tests::cluster::{self, condition_true};
use pruneforge_tests::env;
use pruneforge_tests::kubelet::{FakeKubelet, KubeletConfig};
use serde_json::{json, Value};
use tokio::sync::watch;

/// examples/quickstart.yaml with tiny limits, in `namespace`, storing under `storage_uri`.
fn quickstart(namespace: &str, name: &str, storage_uri: &str) -> PruneDistillJob {
    let path = env::repo_root().join("examples/quickstart.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/quickstart.yaml");
    let mut v: Value = serde_yaml::from_str(&text).expect("quickstart parses");
    v["metadata"] = json!({"name": name, "namespace": namespace});
    let spec = &mut v["spec"];
    spec["calibration"]["sequences"] = json!(4);
    spec["calibration"]["seqLen"] = json!(32);
    if let Some(ds) = spec["distillation"]["datasets"].as_array_mut() {
        for d in ds {
            d["limit"] = json!(4);
        }
    }
    spec["distillation"]["generation"]["maxNewTokens"] = json!(32);
    spec["recovery"]["optimizer"]["steps"] = json!(2);
    spec["recovery"]["optimizer"]["warmupSteps"] = json!(1);
    spec["recovery"]["optimizer"]["maxSeqLen"] = json!(128);
    if let Some(tasks) = spec["evaluation"]["tasks"].as_array_mut() {
        for t in tasks {
            t["limit"] = json!(4);
        }
    }
    spec["evaluation"]["drift"] = json!({"limit": 2, "maxNewTokens": 8});
    spec["speculative"]["maxNewTokens"] = json!(16);
    spec["speculative"]["prompts"]["limit"] = json!(2);
    spec["storage"] = json!({"uri": storage_uri});
    if let Ok(pvc) = std::env::var("PRUNEFORGE_E2E_PVC") {
        spec["storage"]["pvcName"] = json!(pvc);
    }
    serde_json::from_value(v).expect("quickstart is a PruneDistillJob")
}

/// The fake kubelet running real runner pods of `ns` one at a time until `stop`, with its work
/// directory (kept alive by the caller).
fn spawn_kubelet(
    client: &kube::Client,
    ns: &str,
    stop: watch::Receiver<bool>,
) -> (
    tokio::task::JoinHandle<
        Result<Vec<pruneforge_tests::kubelet::PodRun>, pruneforge_tests::kubelet::KubeletError>,
    >,
    tempfile::TempDir,
) {
    spawn_kubelet_with_env(client, ns, stop, Default::default())
}

/// [`spawn_kubelet`] with variables added to every pod's environment.
fn spawn_kubelet_with_env(
    client: &kube::Client,
    ns: &str,
    stop: watch::Receiver<bool>,
    extra_env: std::collections::BTreeMap<String, String>,
) -> (
    tokio::task::JoinHandle<
        Result<Vec<pruneforge_tests::kubelet::PodRun>, pruneforge_tests::kubelet::KubeletError>,
    >,
    tempfile::TempDir,
) {
    let work = tempfile::tempdir().expect("tempdir");
    let config = KubeletConfig {
        runner_bin: env::runner_bin(),
        data_dir: env::data_dir(),
        work_dir: work.path().to_path_buf(),
        parallel: 1,
        poll: Duration::from_millis(500),
        extra_env,
    };
    let task = tokio::spawn(FakeKubelet::new(client.clone(), ns, config).run(stop));
    (task, work)
}

fn summary(obj: &PruneDistillJob) -> String {
    let Some(s) = &obj.status else {
        return "no status".into();
    };
    let stages: Vec<String> = s
        .stages
        .iter()
        .map(|st| {
            format!(
                "{}={:?}({})",
                st.id,
                st.phase,
                st.message.clone().unwrap_or_default()
            )
        })
        .collect();
    format!("phase {:?}; {}", s.phase, stages.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_quickstart_reaches_ready() {
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e").await else {
        return;
    };

    let storage = tempfile::tempdir().expect("tempdir");
    let storage_uri = std::env::var("PRUNEFORGE_E2E_STORAGE_URI")
        .unwrap_or_else(|_| format!("file://{}/out", storage.path().display()));
    let mut settings = Settings::default();
    if let Ok(image) = std::env::var("PRUNEFORGE_E2E_RUNNER_IMAGE") {
        settings.runner_image = image;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let operator = Operator::new(client.clone(), settings, Scope::Namespace(ns.clone()));
    let mut op_stop = stop_rx.clone();
    let op = tokio::spawn(operator.run(async move {
        let _ = op_stop.wait_for(|s| *s).await;
    }));
    let kubelet = env::fake_kubelet().then(|| spawn_kubelet(&client, &ns, stop_rx.clone()));

    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let job = quickstart(&ns, "quickstart", &storage_uri);
    api.patch(
        "quickstart",
        &PatchParams::apply(cluster::MANAGER).force(),
        &Patch::Apply(&job),
    )
    .await
    .expect("apply quickstart");
    let result = cluster::wait_for(
        &api,
        "quickstart",
        Duration::from_secs(env::timeout_secs()),
        "Ready or Stalled",
        |o| condition_true(o, CONDITION_READY) || condition_true(o, CONDITION_STALLED),
    )
    .await;
    let obj = api.get("quickstart").await.expect("get");
    println!("{}", summary(&obj));

    // Deletion: a Retain job carries no finalizer, so it goes at once (owned Jobs by the GC).
    api.delete("quickstart", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        while api.get_opt("quickstart").await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let _ = stop_tx.send(true);
    let _ = op.await;
    if let Some((task, _work)) = kubelet {
        let runs = task.await.expect("kubelet task").expect("kubelet");
        println!("fake kubelet ran {} pods", runs.len());
    }
    cluster::delete_namespace(&client, &ns).await;

    let ready = result.expect("job finished");
    assert!(
        condition_true(&ready, CONDITION_READY),
        "not Ready: {}",
        summary(&ready)
    );
    let status = ready.status.expect("status");
    assert_eq!(status.phase, Some(JobPhase::Succeeded));
    assert!(!status.evaluations.is_empty());
    // With 4 items per task every task may sit within 2 standard errors of chance: then no
    // headline average exists and so no best recovery (issue 13); otherwise there is one.
    let base_average = status
        .evaluations
        .iter()
        .find(|e| e.variant == "base")
        .and_then(|e| e.average);
    println!(
        "base average {base_average:?}, best recovery {:?}",
        status.best_recovery
    );
    assert_eq!(status.best_recovery.is_some(), base_average.is_some());
    assert!(gone.is_ok(), "finalizer did not release the job");
}

/// The controller (with its watches), a minimal Job controller and the fake kubelet with a
/// runner double, all against the in-memory apiserver: a sharded pipeline runs to Ready, a
/// failing stage is retried and stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_kubelet_drives_the_operator_offline() {
    const NS: &str = "offline";
    let (server, client, _task) = FakeApiServer::start();
    let storage = tempfile::tempdir().expect("tempdir");
    let work = tempfile::tempdir().expect("tempdir");
    let (stop_tx, stop_rx) = watch::channel(false);

    let settings = Settings {
        max_attempts: 2,
        requeue_running: Duration::from_secs(2),
        ..Settings::default()
    };
    let operator = Operator::new(client.clone(), settings, Scope::Namespace(NS.into()));
    let mut op_stop = stop_rx.clone();
    let op = tokio::spawn(operator.run(async move {
        let _ = op_stop.wait_for(|s| *s).await;
    }));
    // The Job controller.
    let jc = {
        let server = server.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                server.sync_jobs();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        })
    };
    let runner = env!("CARGO_BIN_EXE_pruneforge-fake-runner");
    let kubelet = tokio::spawn(
        FakeKubelet::new(
            client.clone(),
            NS,
            KubeletConfig {
                runner_bin: runner.into(),
                data_dir: storage.path().join("data"),
                work_dir: work.path().to_path_buf(),
                parallel: 2,
                poll: Duration::from_millis(50),
                extra_env: Default::default(),
            },
        )
        .run(stop_rx.clone()),
    );

    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), NS);
    let storage_uri = format!("file://{}/out", storage.path().display());
    let mut job = quickstart(NS, "quickstart", &storage_uri);
    job.spec.distillation.shards = 2;
    api.create(&PostParams::default(), &job)
        .await
        .expect("create");

    let done = cluster::wait_for(&api, "quickstart", Duration::from_secs(120), "Ready", |o| {
        condition_true(o, CONDITION_READY) || condition_true(o, CONDITION_STALLED)
    })
    .await;
    let obj = api.get("quickstart").await.expect("get");
    let ready = done.unwrap_or_else(|e| panic!("{e}: {}", summary(&obj)));
    assert!(
        condition_true(&ready, CONDITION_READY),
        "{}",
        summary(&ready)
    );
    let status = ready.status.clone().expect("status");
    assert!(status
        .stages
        .iter()
        .all(|s| s.phase == StagePhase::Succeeded));
    // 1 import, 1 score, 1 prune, 2 distill shards, 2 finetunes, 1 merge, 5 evals, 1 speculate.
    let distill = status
        .stages
        .iter()
        .find(|s| s.id == "distill-alpaca")
        .expect("distill");
    assert_eq!(
        distill.message.as_deref(),
        Some("kept 56/64 rewrites (87.5%)")
    );
    assert_eq!(status.evaluations.len(), 5);
    assert_eq!(status.speculative.len(), 1);
    assert_eq!(status.merged_models.len(), 1);
    assert!(status.best_recovery.is_some());
    // The runner double wrote each stage's result.json where the status says.
    for s in &status.stages {
        let uri = s.result_uri.clone().expect("result uri");
        let path = uri.trim_start_matches("file://");
        let ok = std::path::Path::new(path).exists()
            || std::path::Path::new(&path.replace("result.json", "result-0.json")).exists();
        assert!(ok, "{uri}");
    }

    // A failing stage: retried once (max_attempts 2), then Stalled.
    // (runner.env reaches the pod; the seed changes every eval key so the evals rerun.)
    api.patch(
        "quickstart",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "evaluation": {"seed": 7},
            "runner": {"env": [{"name": "PRUNEFORGE_FAKE_FAIL_STAGE", "value": "eval-base"}]},
        }})),
    )
    .await
    .expect("edit");
    let stalled = cluster::wait_for(
        &api,
        "quickstart",
        Duration::from_secs(120),
        "Stalled",
        |o| condition_true(o, CONDITION_STALLED),
    )
    .await;
    let obj = api.get("quickstart").await.expect("get");
    let stalled = stalled.unwrap_or_else(|e| panic!("{e}: {}", summary(&obj)));
    let base = stalled
        .status
        .as_ref()
        .and_then(|s| s.stages.iter().find(|s| s.id == "eval-base"))
        .cloned()
        .expect("eval-base");
    assert_eq!((base.phase, base.attempts), (StagePhase::Failed, 2));
    assert!(
        base.message
            .as_deref()
            .is_some_and(|m| m.contains("PRUNEFORGE_FAKE_FAIL_STAGE")),
        "{:?}",
        base.message
    );

    let _ = stop_tx.send(true);
    let _ = op.await;
    let _ = jc.await;
    let runs = kubelet.await.expect("kubelet task").expect("kubelet");
    assert!(
        runs.iter().filter(|r| r.exit_code != 0).count() == 2,
        "{runs:?}"
    );
    drop(server);
}

/// The operator is stopped mid-pipeline, a running stage's pod is deleted while it is away, and
/// a fresh operator (new caches, new expectations) takes over: no finished stage runs again, no
/// Job is created twice, and the job still reaches Ready. Needs a real control plane and the
/// fake kubelet (`PRUNEFORGE_E2E_FAKE_KUBELET=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_operator_restart_and_a_deleted_pod_rerun_nothing_finished() {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use kube::ResourceExt;
    use std::collections::BTreeMap;

    if !env::fake_kubelet() {
        println!("skipped: needs PRUNEFORGE_E2E_FAKE_KUBELET=1 (a control plane without nodes)");
        return;
    }
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-restart").await else {
        return;
    };
    let storage = tempfile::tempdir().expect("tempdir");
    let storage_uri = format!("file://{}/out", storage.path().display());
    let start_operator = |stop_rx: watch::Receiver<bool>| {
        let operator = Operator::new(
            client.clone(),
            Settings::default(),
            Scope::Namespace(ns.clone()),
        );
        let mut op_stop = stop_rx;
        tokio::spawn(operator.run(async move {
            let _ = op_stop.wait_for(|s| *s).await;
        }))
    };
    let (kubelet_stop_tx, kubelet_stop_rx) = watch::channel(false);
    let (kubelet, _work) = spawn_kubelet(&client, &ns, kubelet_stop_rx);

    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (stop1_tx, stop1_rx) = watch::channel(false);
    let first = start_operator(stop1_rx);
    api.patch(
        "restart",
        &PatchParams::apply(cluster::MANAGER).force(),
        &Patch::Apply(&quickstart(&ns, "restart", &storage_uri)),
    )
    .await
    .expect("apply");
    let succeeded = |o: &PruneDistillJob| {
        o.status
            .iter()
            .flat_map(|s| s.stages.iter())
            .filter(|s| s.phase == StagePhase::Succeeded)
            .map(|s| (s.id.clone(), s.completion_time.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mid = cluster::wait_for(
        &api,
        "restart",
        Duration::from_secs(env::timeout_secs()),
        "three stages Succeeded",
        |o| succeeded(o).len() >= 3,
    )
    .await
    .expect("mid-pipeline");
    let _ = stop1_tx.send(true);
    let _ = first.await;

    // While no operator runs: what exists, and the pod of a running stage deleted.
    let before = api.get("restart").await.expect("get");
    let done_before = succeeded(&before);
    let jobs_before: BTreeMap<String, String> = jobs_api
        .list(&ListParams::default())
        .await
        .expect("list jobs")
        .items
        .iter()
        .map(|j| (j.name_any(), j.uid().unwrap_or_default()))
        .collect();
    let running_pod = pods_api
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .find(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                || p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
        });
    let deleted_pod_job = match &running_pod {
        Some(p) => {
            pods_api
                .delete(&p.name_any(), &DeleteParams::background())
                .await
                .expect("delete pod");
            p.labels().get("batch.kubernetes.io/job-name").cloned()
        }
        None => None,
    };
    println!(
        "stopped with {} of {} stages Succeeded ({} when first seen), {} Jobs; deleted pod {:?} of {:?}",
        done_before.len(),
        before.status.as_ref().map_or(0, |s| s.stages.len()),
        succeeded(&mid).len(),
        jobs_before.len(),
        running_pod.as_ref().map(|p| p.name_any()),
        deleted_pod_job
    );

    let (stop2_tx, stop2_rx) = watch::channel(false);
    let second = start_operator(stop2_rx);
    let result = cluster::wait_for(
        &api,
        "restart",
        Duration::from_secs(env::timeout_secs()),
        "Ready or Stalled",
        |o| condition_true(o, CONDITION_READY) || condition_true(o, CONDITION_STALLED),
    )
    .await;
    let jobs_after = jobs_api
        .list(&ListParams::default())
        .await
        .expect("list jobs")
        .items;
    // Where a stage's result could not be read, what its pods' termination messages hold.
    if let Ok(done) = &result {
        for st in done.status.iter().flat_map(|s| s.stages.iter()) {
            if !st
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("left no stage result")
            {
                continue;
            }
            let pods = pods_api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            for p in pods
                .iter()
                .filter(|p| p.labels().get("batch.kubernetes.io/job-name") == st.job_name.as_ref())
            {
                let message = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .and_then(|c| c.state.as_ref())
                    .and_then(|s| s.terminated.as_ref())
                    .and_then(|t| t.message.clone())
                    .unwrap_or_default();
                println!(
                    "stage {} pod {} phase {:?}: termination message of {} bytes: {}",
                    st.id,
                    p.name_any(),
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    message.len(),
                    message.chars().take(400).collect::<String>()
                );
            }
        }
    }
    let _ = stop2_tx.send(true);
    let _ = second.await;
    let _ = kubelet_stop_tx.send(true);
    let runs = kubelet.await.expect("kubelet task").expect("kubelet");
    cluster::delete_namespace(&client, &ns).await;

    let done = result.expect("job finished");
    println!("{}", summary(&done));
    println!(
        "fake kubelet ran {} pods; {} Jobs in all",
        runs.len(),
        jobs_after.len()
    );
    assert!(condition_true(&done, CONDITION_READY), "not Ready");
    // Every stage's result was read, also that of the stage whose pod was deleted.
    for st in done.status.iter().flat_map(|s| s.stages.iter()) {
        let m = st.message.as_deref().unwrap_or_default();
        assert!(!m.contains("left no stage result"), "{}: {m}", st.id);
    }
    // Finished stages kept their completion: none ran again.
    let done_after = succeeded(&done);
    for (stage, completed) in &done_before {
        assert_eq!(
            done_after.get(stage),
            Some(completed),
            "stage {stage} changed after the restart"
        );
    }
    // Every Job that existed is the same object (not deleted and created again), and one Job
    // per stage and attempt.
    for (name, uid) in &jobs_before {
        let now = jobs_after.iter().find(|j| &j.name_any() == name);
        assert_eq!(
            now.and_then(|j| j.uid()).as_ref(),
            Some(uid),
            "Job {name} was replaced"
        );
    }
    let mut per_stage: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for j in &jobs_after {
        let stage = j
            .labels()
            .get("pruneforge.dev/stage")
            .cloned()
            .unwrap_or_default();
        per_stage.entry(stage).or_default().push(j.name_any());
    }
    for (stage, names) in &per_stage {
        let retried = deleted_pod_job
            .as_ref()
            .is_some_and(|j| names.iter().any(|n| n == j));
        assert!(
            names.len() == 1 || retried,
            "stage {stage} has Jobs {names:?} but only the stage whose pod was deleted may retry"
        );
    }
}

/// A fine-tune pod is deleted mid-training (what preemption or eviction does): the fake kubelet
/// kills its process like a kubelet would, the Job controller starts a new pod with an empty
/// work directory, and the new pod resumes from the checkpoint the first one saved in object
/// storage instead of from step 0. Needs a real control plane and the fake kubelet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_finetune_pod_killed_mid_training_resumes_from_its_checkpoint() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::ListParams;
    use kube::ResourceExt;

    if !env::fake_kubelet() {
        println!("skipped: needs PRUNEFORGE_E2E_FAKE_KUBELET=1 (a control plane without nodes)");
        return;
    }
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-resume").await else {
        return;
    };
    let storage = tempfile::tempdir().expect("tempdir");
    let out = storage.path().join("out");
    let storage_uri = format!("file://{}", out.display());
    let mut job = serde_json::to_value(quickstart(&ns, "resume", &storage_uri)).expect("json");
    let spec = &mut job["spec"];
    spec["recovery"]["methods"] = json!(["none", "sft"]);
    spec["recovery"]["optimizer"]["steps"] = json!(40);
    spec["recovery"]["checkpointEvery"] = json!(2);
    spec["merge"]["enabled"] = json!(false);
    spec["speculative"]["enabled"] = json!(false);
    // Save resume state at every checkpoint (the default throttles saves to one a minute).
    let extra_env = std::collections::BTreeMap::from([(
        "PRUNEFORGE_RESUME_SAVE_SECONDS".to_string(),
        "0".to_string(),
    )]);
    let (kubelet_stop_tx, kubelet_stop_rx) = watch::channel(false);
    let (kubelet, _work) = spawn_kubelet_with_env(&client, &ns, kubelet_stop_rx, extra_env);
    let (stop_tx, stop_rx) = watch::channel(false);
    let operator = Operator::new(
        client.clone(),
        Settings::default(),
        Scope::Namespace(ns.clone()),
    );
    let mut op_stop = stop_rx;
    let op = tokio::spawn(operator.run(async move {
        let _ = op_stop.wait_for(|s| *s).await;
    }));
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    api.patch(
        "resume",
        &PatchParams::apply(cluster::MANAGER).force(),
        &Patch::Apply(&job),
    )
    .await
    .expect("apply");

    // Wait for a committed fine-tune checkpoint in storage while the fine-tune pod runs.
    let resume_root = out.join("_resume");
    let deadline = std::time::Instant::now() + Duration::from_secs(env::timeout_secs());
    let (pod, checkpoint) = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no fine-tune checkpoint before the timeout: {}",
            summary(&api.get("resume").await.expect("get"))
        );
        let saved = std::fs::read_dir(&resume_root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("finetune-"))
                    && p.join("checkpoints").join("_SUCCESS").is_file()
            });
        let running = pods_api
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .find(|p| {
                p.labels()
                    .get("pruneforge.dev/stage")
                    .is_some_and(|s| s.starts_with("finetune"))
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
        if let (Some(saved), Some(pod)) = (saved, running) {
            break (pod, saved);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!(
        "deleting fine-tune pod {} with resume state {}",
        pod.name_any(),
        checkpoint.display()
    );
    pods_api
        .delete(&pod.name_any(), &DeleteParams::background())
        .await
        .expect("delete the fine-tune pod");

    let done = cluster::wait_for(
        &api,
        "resume",
        Duration::from_secs(env::timeout_secs()),
        "Ready or Stalled",
        |o| condition_true(o, CONDITION_READY) || condition_true(o, CONDITION_STALLED),
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = op.await;
    let _ = kubelet_stop_tx.send(true);
    let runs = kubelet.await.expect("kubelet task").expect("kubelet");
    cluster::delete_namespace(&client, &ns).await;
    let done = done.expect("job finished");
    println!("{}", summary(&done));
    assert!(condition_true(&done, CONDITION_READY), "not Ready");
    assert!(
        runs.iter()
            .any(|r| r.pod == pod.name_any() && r.exit_code == 137),
        "the deleted pod's process was killed: {runs:?}"
    );
    // The fine-tune artifact says where the second pod started.
    let finetune_dir = std::fs::read_dir(out.join("finetune"))
        .expect("finetune artifacts")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("finetune.json").is_file())
        .expect("a committed fine-tune");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(finetune_dir.join("finetune.json")).expect("finetune.json"),
    )
    .expect("finetune.json parses");
    let resumed = report["summary"]["resumed_from_step"].as_u64();
    println!(
        "finetune.json: resumed_from_step {resumed:?}, steps {}",
        report["summary"]["steps"]
    );
    assert!(
        resumed.is_some_and(|s| (2..40).contains(&s)),
        "the new pod resumed from the saved checkpoint, not from step 0: {resumed:?}"
    );
    assert!(
        !checkpoint.join("checkpoints").join("_SUCCESS").exists(),
        "resume state is deleted once the stage committed"
    );
}
