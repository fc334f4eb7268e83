//! Scale benchmark: N PruneDistillJobs (default 500, `PRUNEFORGE_BENCH_JOBS`) reconciled by the
//! full controller (watches, owned Jobs, pod watches) against the in-memory apiserver served
//! over HTTP on 127.0.0.1 by a child process, which also plays the Job controller and kubelet:
//! every stage Job is finished with a synthetic result until every job is Ready. Each job is the
//! quickstart (13 stages with fan-out and fan-in). Apiserver requests are counted by verb and
//! resource. The operator
//! runs alone in this process, so its memory (VmRSS / VmHWM from /proc/self/status) is the
//! operator's: kube client, controller, caches, runtime.
//!
//!     cargo bench -p pruneforge-operator --bench reconcile

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pruneforge_api::status::JobPhase;
use pruneforge_api::{PruneDistillJob, PruneDistillJobSpec};
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::{Operator, Scope, Settings};
use tokio::sync::watch;

/// The quickstart (13 stages: import, score, prune, distill, two fine-tunes, merge, five
/// evaluations, speculation), as users run it.
const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");
const NAMESPACES: usize = 10;
const ROLE: &str = "PRUNEFORGE_BENCH_ROLE";

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

fn jobs() -> usize {
    std::env::var("PRUNEFORGE_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if std::env::var(ROLE).is_ok_and(|r| r == "apiserver") {
        rt.block_on(apiserver())
    } else {
        rt.block_on(operator())
    }
}

fn quickstart_spec() -> anyhow::Result<PruneDistillJobSpec> {
    Ok(serde_yaml::from_str::<PruneDistillJob>(QUICKSTART)?.spec)
}

/// Child: the apiserver, the Job controller and the kubelet. Prints `PORT <port>`, then
/// `FIRST <seconds>`, `READY <seconds> <stage jobs finished>`, `STORE <objects> <bytes>`,
/// `COUNTS <json object of request counts>`.
async fn apiserver() -> anyhow::Result<()> {
    let n = jobs();
    let server = FakeApiServer::new();
    server.with(|s| s.record = false);
    let spec = quickstart_spec()?;
    for i in 0..n {
        let mut obj = PruneDistillJob::new(&format!("job-{i}"), spec.clone());
        obj.metadata.namespace = Some(format!("bench-{}", i % NAMESPACES));
        let value = serde_json::to_value(&obj)?;
        server.with(|s| s.put("/apis/pruneforge.dev/v1alpha1", "prunedistilljobs", value));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (_stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(pruneforge_operator::fake::http::serve(
        server.clone(),
        listener,
        stop_rx,
    ));
    println!("PORT {port}");
    let start = Instant::now();
    while count_phase(&server, JobPhase::Running) < n {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "initial reconciles took > 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("FIRST {}", start.elapsed().as_secs_f64());
    let mut finished = 0usize;
    while count_phase(&server, JobPhase::Succeeded) < n {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "pipelines took > 1800 s"
        );
        for i in 0..NAMESPACES {
            finished += server.succeed_running_jobs(&format!("bench-{i}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("READY {} {finished}", start.elapsed().as_secs_f64());
    let (objects, bytes) = server.with(|s| s.footprint());
    println!("STORE {objects} {bytes}");
    let counts = server.with(|s| s.counts.clone());
    println!("COUNTS {}", serde_json::to_string(&counts)?);
    // Keep serving until the operator is done measuring (stdin closes).
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    Ok(())
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> anyhow::Result<String> {
    rx.recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("apiserver process ended early"))
}

/// Parent: the operator.
async fn operator() -> anyhow::Result<()> {
    let n = jobs();
    let rss_start = proc_status("VmRSS:");
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE, "apiserver")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no child stdout"))?;
    let (line_tx, mut line_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let port_line = next(&mut line_rx).await?;
    let port: u16 = port_line
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected line {port_line:?}"))?;
    let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse()?);
    config.default_namespace = "default".into();
    let client = kube::Client::try_from(config)?;
    let mut settings = Settings::default();
    if let Some(ms) = std::env::var("PRUNEFORGE_BENCH_DEBOUNCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        settings.debounce = Duration::from_millis(ms);
    }
    println!("debounce: {} ms", settings.debounce.as_millis());
    let operator = Operator::new(client, settings, Scope::Cluster);
    let ctx = operator.context.clone();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let op = tokio::spawn(operator.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let first: f64 = next(&mut line_rx)
        .await?
        .strip_prefix("FIRST ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let reconciles_first = ctx.metrics.reconciles.get();
    let ready = next(&mut line_rx).await?;
    let mut parts = ready.split_whitespace().skip(1);
    let total: f64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let finished: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let reconciles = ctx.metrics.reconciles.get();
    let rss_end = proc_status("VmRSS:");
    let hwm = proc_status("VmHWM:");
    let store = next(&mut line_rx).await?;
    let counts_line = next(&mut line_rx).await?;
    let counts: std::collections::BTreeMap<String, u64> = counts_line
        .strip_prefix("COUNTS ")
        .map(serde_json::from_str)
        .transpose()?
        .unwrap_or_default();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), op).await;
    drop(child.stdin.take());
    let _ = child.wait();

    let stages = pruneforge_api::plan(&quickstart_spec()?)?.len();
    println!("resources: {n} PruneDistillJobs x {stages} stages, {NAMESPACES} namespaces; apiserver in a child process over HTTP on 127.0.0.1");
    println!(
        "first reconcile of all: {first:.2} s ({reconciles_first} reconciles, {:.0} reconciles/s)",
        reconciles_first as f64 / first
    );
    println!(
        "all Ready: {total:.2} s, {finished} stage Jobs finished, {reconciles} reconciles, {:.0} reconciles/s, {:.1} reconciles per job",
        reconciles as f64 / total,
        reconciles as f64 / n as f64
    );
    println!(
        "operator memory: VmRSS {:.1} MiB at start, {:.1} MiB at end, peak VmHWM {:.1} MiB",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let mut s = store.split_whitespace().skip(1);
    println!(
        "apiserver held {} objects, {:.1} MiB serialized (incl. watch history)",
        s.next().unwrap_or("?"),
        s.next()
            .and_then(|b| b.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / (1024.0 * 1024.0)
    );
    let total: u64 = counts.values().sum();
    println!(
        "apiserver requests: {total} in all, {:.1} per resource, {:.2} per stage",
        total as f64 / n as f64,
        total as f64 / (n * stages) as f64
    );
    let mut by_count: Vec<(&String, &u64)> = counts.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    for (what, count) in by_count {
        println!(
            "  {what:<36} {count:>8}  ({:.2} per resource)",
            *count as f64 / n as f64
        );
    }
    Ok(())
}
