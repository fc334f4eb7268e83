//! Scale benchmark: N PruneDistillJobs (default 500, `PRUNEFORGE_BENCH_JOBS`) against the
//! in-memory apiserver with the full controller (watches, owned Jobs, pod watches). Every stage
//! Job is finished by a minimal Job controller with synthetic results until every job is
//! Ready. Reports wall time, reconciles, reconcile throughput and the process's memory
//! (VmRSS / VmHWM from /proc/self/status; the in-memory apiserver lives in the same process, so
//! this is an upper bound for the operator).
//!
//!     cargo bench -p pruneforge-operator --bench reconcile

use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use pruneforge_api::status::JobPhase;
use pruneforge_api::{PruneDistillJob, PruneDistillJobSpec};
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::{Operator, Scope, Settings};
use tokio::sync::watch;

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
  uri: s3://bench/out
maxParallelStages: 2
"#;
const NAMESPACES: usize = 10;

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim only releases free heap pages back to the OS.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

fn count_phase(server: &FakeApiServer, phase: JobPhase) -> usize {
    server
        .list("/apis/pruneforge.dev/v1alpha1", "prunedistilljobs", None)
        .into_iter()
        .filter(|v| {
            v.pointer("/status/phase")
                .and_then(|p| serde_json::from_value::<JobPhase>(p.clone()).ok())
                == Some(phase)
        })
        .count()
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("PRUNEFORGE_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let rss_start = proc_status("VmRSS:");
        let (server, client, _task) = FakeApiServer::start();
        server.with(|s| s.record = false);
        let spec: PruneDistillJobSpec = serde_yaml::from_str(SPEC)?;
        let stages = pruneforge_api::plan(&spec)?.len();
        for i in 0..n {
            let ns = format!("bench-{}", i % NAMESPACES);
            let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
            let mut obj = PruneDistillJob::new(&format!("job-{i}"), spec.clone());
            obj.metadata.namespace = Some(ns);
            api.create(&PostParams::default(), &obj).await?;
        }
        let operator = Operator::new(client.clone(), Settings::default(), Scope::Cluster);
        let ctx = operator.context.clone();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let start = Instant::now();
        let op = tokio::spawn(operator.run(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));

        // First reconcile of every job: finalizer, first stage Job, status.
        loop {
            if count_phase(&server, JobPhase::Running) == n {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                anyhow::bail!("initial reconciles did not finish in 600 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first_round = start.elapsed();
        let reconciles_first = ctx.metrics.reconciles.get();

        // Run every pipeline to the end.
        let mut jobs_finished = 0usize;
        loop {
            for i in 0..NAMESPACES {
                jobs_finished += server.succeed_running_jobs(&format!("bench-{i}"));
            }
            if count_phase(&server, JobPhase::Succeeded) == n {
                break;
            }
            if start.elapsed() > Duration::from_secs(1800) {
                anyhow::bail!("pipelines did not finish in 1800 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let total = start.elapsed();
        let reconciles = ctx.metrics.reconciles.get();
        let rss_end = proc_status("VmRSS:");
        let hwm = proc_status("VmHWM:");
        let (objects, bytes) = server.with(|s| s.footprint());
        // The operator alone: the in-memory apiserver drops its objects and glibc returns the
        // freed memory; the controller (and its PruneDistillJob cache) keeps running.
        server.with(|s| s.forget_objects());
        trim_heap();
        let rss_operator = proc_status("VmRSS:");
        let _ = stop_tx.send(true);
        let _ = op.await;

        println!("resources: {n} PruneDistillJobs x {stages} stages, {NAMESPACES} namespaces");
        println!(
            "first reconcile of all: {:.2} s ({} reconciles, {:.0} reconciles/s)",
            first_round.as_secs_f64(),
            reconciles_first,
            reconciles_first as f64 / first_round.as_secs_f64()
        );
        println!(
            "all Ready: {:.2} s, {} stage Jobs finished, {} reconciles, {:.0} reconciles/s, {:.1} reconciles per job",
            total.as_secs_f64(),
            jobs_finished,
            reconciles,
            reconciles as f64 / total.as_secs_f64(),
            reconciles as f64 / n as f64
        );
        println!(
            "memory (operator + in-memory apiserver): VmRSS {:.1} MiB at start, {:.1} MiB at end, peak VmHWM {:.1} MiB",
            rss_start as f64 / 1024.0,
            rss_end as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        println!(
            "memory without the apiserver's objects (operator, its caches and runtime): VmRSS {:.1} MiB",
            rss_operator as f64 / 1024.0
        );
        println!(
            "in-memory apiserver held {objects} objects, {:.1} MiB serialized (incl. watch history)",
            bytes as f64 / (1024.0 * 1024.0)
        );
        Ok(())
    })
}
