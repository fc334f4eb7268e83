//! `pruneforge-operator`: the PruneDistillJob operator binary.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams};
use kube::Client;
use prometheus_client::registry::Registry;
use pruneforge_api::PruneDistillJob;
use pruneforge_operator::leader::{LeaderElector, LeaseConfig};
use pruneforge_operator::metrics::Metrics;
use pruneforge_operator::server::{self, ServerState};
use pruneforge_operator::telemetry::{self, LogFormat};
use pruneforge_operator::{controller, rbac, settings, Context, Scope, Settings};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Kubernetes operator that runs PruneDistillJobs as runner Jobs.
#[derive(Parser, Debug)]
#[command(name = "pruneforge-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the RBAC rules the operator needs as a ClusterRole (YAML).
    Rbac {
        /// Name of the ClusterRole.
        #[arg(long, default_value = "pruneforge-operator")]
        name: String,
    },
    /// Print the PruneDistillJob CRD (YAML).
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Watch only these namespaces, comma-separated (default: all namespaces).
    #[arg(long, env = "PRUNEFORGE_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoint.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Runner image for jobs that do not set spec.runner.image.
    #[arg(long, env = "PRUNEFORGE_RUNNER_IMAGE", default_value = settings::DEFAULT_RUNNER_IMAGE)]
    runner_image: String,
    /// Runner image for jobs that request GPUs and do not set spec.runner.image.
    #[arg(long, env = "PRUNEFORGE_RUNNER_CUDA_IMAGE")]
    runner_cuda_image: Option<String>,
    /// GPU extended resource name for jobs that keep the default (nvidia.com/gpu).
    #[arg(long, env = "PRUNEFORGE_GPU_RESOURCE_NAME")]
    gpu_resource_name: Option<String>,
    /// Storage credentials Secret for jobs with object storage that set no secretRef.
    #[arg(long, env = "PRUNEFORGE_STORAGE_SECRET")]
    storage_secret: Option<String>,
    /// Service account of runner pods for jobs that set no spec.runner.serviceAccountName.
    #[arg(long, env = "PRUNEFORGE_RUNNER_SERVICE_ACCOUNT")]
    runner_service_account: Option<String>,
    /// Attempts (Jobs) per stage before the job is Stalled.
    #[arg(long, default_value_t = settings::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Seconds a stage Job may wait with stuck pods (image pull error, unschedulable, ...) or
    /// none at all before its stage fails with the pods' reason.
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(30..))]
    startup_deadline_seconds: u64,
    /// ttlSecondsAfterFinished of stage Jobs whose spec.runner sets none.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(i32).range(0..))]
    stage_job_ttl_seconds: i32,
    /// Milliseconds a burst of events for one resource is gathered into one reconcile.
    #[arg(long, default_value_t = settings::DEFAULT_DEBOUNCE_MS, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    debounce_ms: u64,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Run the controller only while holding a coordination.k8s.io Lease.
    #[arg(long)]
    leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "pruneforge-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else the client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity in the Lease and in Events (default: POD_NAME, else the hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Rbac { name }) => write_stdout(&rbac::cluster_role_yaml(&name)?),
        Some(Command::Crd) => write_stdout(&pruneforge_api::crd_yaml()?),
        None => run(cli.run).await,
    }
}

/// `None` for an unset or empty flag (the chart passes empty values through).
fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref().filter(|s| !s.trim().is_empty()).cloned()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "pruneforge-operator".into());

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::default().register(&mut registry));
    let state = ServerState::new(registry);
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(server::serve(
        args.metrics_addr,
        state.clone(),
        stop_rx.clone(),
    ));

    // Signal → stop.
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutdown requested");
            let _ = stop_tx.send(true);
        });
    }

    // The CRD must be served before anything else makes sense.
    let scope = Scope::from_namespace(args.namespace.clone());
    for part in scope.parts() {
        let probe: Api<PruneDistillJob> = part.api(client.clone());
        probe
            .list(&ListParams::default().limit(1))
            .await
            .with_context(|| format!("cannot list PruneDistillJobs ({part:?}): install the CRD (pruneforge-operator crd | kubectl apply --server-side -f -) and check the operator's RBAC"))?;
    }
    state.ready.store(true, Ordering::Relaxed);

    let settings = Settings {
        runner_image: args.runner_image.clone(),
        max_attempts: args.max_attempts,
        runner_cuda_image: non_empty(&args.runner_cuda_image),
        gpu_resource_name: non_empty(&args.gpu_resource_name),
        storage_secret: non_empty(&args.storage_secret),
        runner_service_account: non_empty(&args.runner_service_account),
        watched: scope.clone(),
        stage_job_ttl_seconds: args.stage_job_ttl_seconds,
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        startup_deadline: std::time::Duration::from_secs(args.startup_deadline_seconds),
        // The chart creates the runner account in each watched namespace, or only in its own
        // when watching all of them.
        runner_service_account_namespaces: match &scope {
            Scope::Cluster => args.lease_namespace.clone().map(|ns| vec![ns]),
            Scope::Namespace(ns) => Some(vec![ns.clone()]),
            Scope::Namespaces(list) => Some(list.clone()),
        },
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        Some(identity.clone()),
    ));

    let mut exit_lost = false;
    if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let elector = Arc::new(LeaderElector::new(
            client.clone(),
            LeaseConfig::new(&args.lease_name, namespace, &identity),
        ));
        let mut stop = stop_rx.clone();
        if elector.acquire(&mut stop).await {
            state.leader.store(true, Ordering::Relaxed);
            let (lost_tx, mut lost_rx) = watch::channel(false);
            let renew = tokio::spawn({
                let elector = elector.clone();
                let stop = stop_rx.clone();
                async move {
                    let lost = elector.keep_renewing(stop).await;
                    if lost {
                        let _ = lost_tx.send(true);
                    }
                    lost
                }
            });
            let mut stop_ctrl = stop_rx.clone();
            let shutdown = async move {
                tokio::select! {
                    _ = stop_ctrl.wait_for(|s| *s) => {}
                    _ = lost_rx.wait_for(|l| *l) => {}
                }
            };
            controller::run(ctx, scope, args.concurrency, shutdown).await;
            let _ = stop_tx.send(true);
            exit_lost = renew.await.unwrap_or(false);
            state.leader.store(false, Ordering::Relaxed);
            if !exit_lost {
                if let Err(e) = elector.release().await {
                    warn!(error = %e, "releasing lease failed");
                }
            }
        }
    } else {
        let mut stop = stop_rx.clone();
        state.leader.store(true, Ordering::Relaxed);
        controller::run(ctx, scope, args.concurrency, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
        let _ = stop_tx.send(true);
    }

    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), server).await {
        error!(error = %e, "metrics endpoint failed");
    }
    if exit_lost {
        anyhow::bail!("lost leadership; exiting so a restart can compete for the lease again");
    }
    info!("stopped");
    Ok(())
}
