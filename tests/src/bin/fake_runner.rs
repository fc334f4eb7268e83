//! `pruneforge-fake-runner stage --request FILE` / `gc --prefix URI...`: a runner double for the
//! offline check of the fake kubelet. It follows the runner contract (request file,
//! `JOB_COMPLETION_INDEX`, `PRUNEFORGE_TERMINATION_LOG`, exit code) but computes nothing: the
//! result is `pruneforge_operator::fake::results::succeeded`. `PRUNEFORGE_FAKE_FAIL_STAGE=<id>`
//! makes that stage fail.

use std::path::PathBuf;

use anyhow::{bail, Context};
use pruneforge_api::StageRequest;
use pruneforge_operator::fake::results;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stage") => stage(&args[1..]),
        Some("gc") => gc(&args[1..]),
        _ => bail!("usage: pruneforge-fake-runner stage --request FILE | gc --prefix URI..."),
    }
}

fn stage(args: &[String]) -> anyhow::Result<()> {
    let path = match args {
        [flag, path] if flag == "--request" => PathBuf::from(path),
        _ => bail!("usage: stage --request FILE"),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut request = StageRequest::from_json(&text)?;
    if let Ok(index) = std::env::var("JOB_COMPLETION_INDEX") {
        let index: u32 = index.parse().context("JOB_COMPLETION_INDEX")?;
        request = request.for_shard(index)?;
    }
    let fail =
        std::env::var("PRUNEFORGE_FAKE_FAIL_STAGE").is_ok_and(|s| s == request.stage_id.as_str());
    let result = if fail {
        results::failed(&request, "failing on request (PRUNEFORGE_FAKE_FAIL_STAGE)")
    } else {
        results::succeeded(&request)
    };
    if let Some(dir) = request.output_uri.strip_prefix("file://") {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
        let name = match request.shard {
            Some(s) => format!("result-{}.json", s.index),
            None => "result.json".into(),
        };
        std::fs::write(PathBuf::from(dir).join(name), result.to_json())?;
    }
    let log = std::env::var("PRUNEFORGE_TERMINATION_LOG")
        .unwrap_or_else(|_| "/dev/termination-log".into());
    std::fs::write(&log, result.to_termination_message())
        .with_context(|| format!("writing {log}"))?;
    if fail {
        std::process::exit(1);
    }
    Ok(())
}

fn gc(args: &[String]) -> anyhow::Result<()> {
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let Some(uri) = it.next().filter(|_| flag == "--prefix") else {
            bail!("usage: gc --prefix URI...");
        };
        if let Some(dir) = uri.strip_prefix("file://") {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {dir}")),
            }
        }
    }
    Ok(())
}
