//! From a stage request to the stage function, and from the stage's own summary to the
//! contract's compact summary.

use super::request::ExecContext;
use crate::stages::{self, Result, StageError};
use pruneforge_api::contract::{self as c, StageRequest, StageSummary};
use pruneforge_api::params::StageParams;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct DispatchOutcome {
    pub summary: StageSummary,
    /// Main files of the artifact, relative to it (listed in the result).
    pub files: Vec<String>,
    /// The output is one shard's sub-artifact (`shards/<index>/`).
    pub sharded: bool,
}

fn input<'a>(inputs: &'a BTreeMap<String, PathBuf>, name: &str) -> Result<&'a Path> {
    inputs
        .get(name)
        .map(PathBuf::as_path)
        .ok_or_else(|| StageError::Input(format!("the request has no `{name}` input")))
}

pub fn dispatch(
    req: &StageRequest,
    inputs: &BTreeMap<String, PathBuf>,
    work: &Path,
    out: &Path,
    ctx: &ExecContext,
) -> Result<DispatchOutcome> {
    let root = ctx.data_root.as_ref();
    match &req.params {
        StageParams::Import(p) => {
            let s = stages::import::run(p, &work.join("download"), out)?;
            Ok(DispatchOutcome {
                summary: StageSummary::Import(c::ImportSummary {
                    layers: s.layers as u32,
                    parameters: s.parameters,
                }),
                files: vec![
                    "config.json".into(),
                    "model.safetensors".into(),
                    "tokenizer.json".into(),
                ],
                sharded: false,
            })
        }
        StageParams::Distill(p) => {
            let model = input(inputs, "model")?;
            let (count, index) = match req.shard {
                Some(s) => (s.count as usize, s.index as usize),
                None => (1, 0),
            };
            let (s, sharded) = if ctx.all_shards || count == 1 {
                (stages::distill::run(model, p, count, out, root)?, false)
            } else {
                let index = stages::distill::shard::completion_index_from_env().unwrap_or(index);
                (
                    stages::distill::run_shard(model, p, index, count, out, root)?,
                    true,
                )
            };
            Ok(DispatchOutcome {
                summary: StageSummary::Distill(c::DistillSummary {
                    items: s.items as u64,
                    kept: s.kept as u64,
                    kept_rate: s.kept_rate,
                }),
                files: vec!["distill.json".into(), "records.jsonl".into()],
                sharded,
            })
        }
        StageParams::Speculate(p) => {
            let s = stages::speculate::run(
                input(inputs, "target")?,
                input(inputs, "draft")?,
                p,
                out,
                root,
            )?;
            Ok(DispatchOutcome {
                summary: StageSummary::Speculate(c::SpeculateSummary {
                    acceptance_rate: s.acceptance_rate,
                    mean_accepted_length: s.mean_accepted_length,
                    speedup: s.speedup,
                    draft_tokens: s.draft_tokens as u32,
                }),
                files: vec!["speculate.json".into(), "speculate.jsonl".into()],
                sharded: false,
            })
        }
        StageParams::Merge(p) => {
            // model-0, model-1, … in order; the first is mergekit's t = 0 end.
            let mut models = Vec::new();
            for i in 0.. {
                match inputs.get(&format!("model-{i}")) {
                    Some(m) => models.push(m.clone()),
                    None => break,
                }
            }
            let method = match p.method {
                pruneforge_api::spec::MergeMethod::Slerp => stages::merge::MergeMethod::Slerp,
                pruneforge_api::spec::MergeMethod::Linear => stages::merge::MergeMethod::Linear,
            };
            let t = if p.t_gradient.is_empty() {
                stages::merge::TValue::Scalar(p.t)
            } else {
                stages::merge::TValue::List(p.t_gradient.clone())
            };
            let params = stages::merge::MergeParams {
                method,
                t,
                weights: None,
                normalize: true,
            };
            let s = stages::merge::run(&models, None, &params, out)?;
            Ok(DispatchOutcome {
                summary: StageSummary::Merge(c::MergeSummary {
                    tensors: s.tensors as u64,
                    fallback_count: s.fallback_count as u64,
                }),
                files: vec!["config.json".into(), "merge.json".into()],
                sharded: false,
            })
        }
        other => Err(StageError::Input(format!(
            "stage kind `{}` is not wired yet",
            other.kind()
        ))),
    }
}
