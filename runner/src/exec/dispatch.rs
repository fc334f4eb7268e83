//! From a stage request to the stage that owns it.

use super::context::ExecContext;
use super::resume::ResumeStore;
use crate::device::Compute;
use crate::stages::{self, Outcome, Result, ShardRun, StageContext};
use pruneforge_api::contract::StageRequest;
use pruneforge_api::params::StageParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Runs the stage of `req` on materialised `inputs`, writing into `out`.
pub fn dispatch(
    req: &StageRequest,
    inputs: &BTreeMap<String, PathBuf>,
    work: &Path,
    out: &Path,
    exec: &ExecContext,
    compute: &Compute,
    resume: Option<&ResumeStore>,
) -> Result<Outcome> {
    let shards = match req.shard {
        Some(s) if !exec.all_shards && s.count > 1 => ShardRun::One {
            index: s.index as usize,
            count: s.count as usize,
        },
        Some(s) => ShardRun::All {
            count: s.count.max(1) as usize,
        },
        None => ShardRun::All { count: 1 },
    };
    let ctx = StageContext {
        inputs,
        work,
        out,
        resolver: &exec.resolver,
        shards,
        compute,
        resume,
    };
    match &req.params {
        StageParams::Import(p) => stages::import::run_request(p, &ctx),
        StageParams::Score(p) => stages::score::run_request(p, &ctx),
        StageParams::Prune(p) => stages::prune::run_request(p, &ctx),
        StageParams::Distill(p) => stages::distill::run_request(p, &ctx),
        StageParams::Finetune(p) => stages::finetune::run_request(p, &ctx),
        StageParams::SelfPlay(p) => stages::self_play::run_request(p, &ctx),
        StageParams::Prefer(p) => stages::prefer::run_request(p, &ctx),
        StageParams::Merge(p) => stages::merge::run_request(p, &ctx),
        StageParams::Eval(p) => stages::eval::run_request(p, &ctx),
        StageParams::Speculate(p) => stages::speculate::run_request(p, &ctx),
    }
}
