//! `pruneforge stage --request FILE`: run one stage as a Kubernetes pod does. The compact
//! result goes to the termination message file (`$PRUNEFORGE_TERMINATION_LOG`, default
//! `/dev/termination-log`), the full result to `<outputUri>result.json`.

use pruneforge::exec::{execute_request, ExecContext};
use pruneforge_api::contract::{StageRequest, StageResult};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct StageArgs {
    /// The StageRequest JSON (mounted from the stage's ConfigMap in a cluster).
    #[arg(long)]
    pub request: PathBuf,
    /// Working directory (default: $PRUNEFORGE_WORK_DIR, else /work if writable, else a temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn default_work_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PRUNEFORGE_WORK_DIR") {
        return PathBuf::from(p);
    }
    let work = PathBuf::from("/work");
    if std::fs::create_dir_all(work.join(".probe")).is_ok() {
        let _ = std::fs::remove_dir(work.join(".probe"));
        return work;
    }
    std::env::temp_dir().join("pruneforge-work")
}

fn write_termination(result: &StageResult) {
    let path = std::env::var_os("PRUNEFORGE_TERMINATION_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/termination-log"));
    if let Err(e) = std::fs::write(&path, result.to_termination_message()) {
        tracing::debug!(path = %path.display(), error = %e, "no termination message written");
    }
}

pub fn run(args: StageArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let text = std::fs::read_to_string(&args.request)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.request.display()))?;
    let mut request = StageRequest::from_json(&text)?;
    if let (Some(shard), Some(index)) = (
        &mut request.shard,
        pruneforge::stages::distill::shard::completion_index_from_env(),
    ) {
        shard.index = index as u32;
    }
    let work_root = args.work_dir.unwrap_or_else(default_work_dir);
    let ctx = ExecContext::new(work_root, None, false);
    let result = match execute_request(&request, &ctx) {
        Ok(r) => r,
        Err(e) => {
            let r =
                StageResult::failed(&request, format!("{e:#}"), started.elapsed().as_secs_f64());
            write_termination(&r);
            println!("{}", r.to_json());
            return Err(e.into());
        }
    };
    write_termination(&result);
    println!("{}", result.to_json());
    Ok(())
}
