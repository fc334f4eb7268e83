//! `pruneforge run JOB.yaml`: the whole job on this machine, artifacts cached by content key.

use pruneforge::exec::local::{
    cached_result, load_job, plan_job, run_job, RunOptions, RunStatus, StageRun,
};
use pruneforge::report::describe;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A PruneDistillJob manifest (the same YAML the cluster takes).
    pub job: PathBuf,
    /// Storage root for artifacts, replacing spec.storage.uri (a path or file://, s3://, gs://,
    /// az:// URI).
    #[arg(long)]
    pub storage: Option<String>,
    /// Working directory for in-progress stages (resume state).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Do not write the HTML/Markdown report at the end.
    #[arg(long)]
    pub no_report: bool,
    /// Print the stage plan (order, inputs, cache key, cached or to run) and exit without
    /// running anything.
    #[arg(long)]
    pub plan: bool,
    /// Device of the model-computing stages, replacing spec.compute.device: auto (the first
    /// visible CUDA device when built with `cuda`, else the CPU), cpu or cuda.
    #[arg(long)]
    pub device: Option<pruneforge::device::DeviceSpec>,
    /// Their dtype, replacing spec.compute.dtype: auto (bf16 on CUDA, f32 on the CPU), f32,
    /// bf16 or f16. A dtype other than f32 is part of the stages' cache keys.
    #[arg(long)]
    pub dtype: Option<pruneforge::device::DTypeSpec>,
}

/// `--plan`: what a run would do.
fn print_plan(job: &pruneforge_api::PruneDistillJob, opts: &RunOptions) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let plan = plan_job(job, opts)?;
    let order = plan.topological_order();
    let mut out = format!(
        "{:<28} {:<10} {:<14} {:<8} inputs\n",
        "stage", "kind", "key", "state"
    );
    let mut to_run = 0;
    for id in &order {
        let Some(stage) = plan.get(id.as_str()) else {
            continue;
        };
        // The same test the run applies before skipping a stage.
        let cached = cached_result(&stage.artifact_uri).is_some();
        if !cached {
            to_run += 1;
        }
        let inputs: Vec<String> = stage
            .inputs
            .iter()
            .map(|(name, from)| format!("{name}={from}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<28} {:<10} {:<14} {:<8} {}",
            id.as_str(),
            stage.params.kind().to_string(),
            stage.key.chars().take(12).collect::<String>(),
            if cached { "cached" } else { "to run" },
            inputs.join(" ")
        );
    }
    let _ = writeln!(out, "\n{to_run} of {} stages to run", order.len());
    write_stdout(&out)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Cached => "cached",
        RunStatus::Ran => "ran",
        RunStatus::Failed => "FAILED",
        RunStatus::Skipped => "skipped",
    }
}

fn line(i: usize, total: usize, r: &StageRun, done: bool) -> String {
    if !done {
        return format!("[{:>2}/{total}] {:<28} running…", i + 1, r.id);
    }
    let extra = r.message.clone().unwrap_or_else(|| describe(&r.summary));
    format!(
        "[{:>2}/{total}] {:<28} {:<7} {:>8.1}s  {extra}",
        i + 1,
        r.id,
        status(r.status),
        r.seconds
    )
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let job = load_job(&args.job)?;
    let opts = RunOptions {
        storage: args.storage.clone(),
        work_root: args.work_dir.clone(),
        data_root: None,
        device: args.device,
        dtype: args.dtype,
    };
    if args.plan {
        return print_plan(&job, &opts);
    }
    let report = run_job(&job, &opts, |i, total, r, done| {
        eprintln!("{}", line(i, total, r, done));
    })?;
    println!("\n{:<28} {:<8} {:>9}  result", "stage", "status", "seconds");
    for r in &report.stages {
        let extra = r.message.clone().unwrap_or_else(|| describe(&r.summary));
        println!(
            "{:<28} {:<8} {:>9.1}  {extra}",
            r.id,
            status(r.status),
            r.seconds
        );
    }
    println!(
        "\n{} stages in {:.1}s; artifacts under {}",
        report.stages.len(),
        report.wall_s,
        report.storage
    );
    if !args.no_report {
        match pruneforge::report::write_for_run(&report) {
            Ok(paths) => println!("report: {}", paths.join(", ")),
            Err(e) => eprintln!("warning: report not written: {e}"),
        }
    }
    if report.failed() {
        anyhow::bail!("some stages failed or were skipped");
    }
    Ok(())
}
