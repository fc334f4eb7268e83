//! `self-play`: SPIN iteration k's generation. The input model (the fine-tune, or iteration
//! k − 1's preference stage) answers the SFT prompts; each answer that is neither empty nor the
//! data set's own becomes a pair (the data set's answer chosen, the model's rejected), which
//! the iteration's `prefer` stage trains on.
//!
//! Sharded like distill: shard k of K answers the contiguous slice
//! [`shard_range`](super::distill::shard::shard_range) of the prompts and writes
//! `shards/<k>/pairs.jsonl` and `shards/<k>/self_play.json`. Every prompt samples from the
//! stream of its index in the whole set, so sharding does not change the random numbers a
//! prompt gets: the shards concatenated in index order are the pairs one unsharded run makes
//! (exactly when each prompt's logits do not depend on the rows decoded beside it, as the
//! few-row decode kernel guarantees; a prefill batched differently can round differently).
//! Unsharded (or run locally with every shard), the stage writes `pairs.jsonl` and
//! `self_play.json` at the top.

use std::path::{Path, PathBuf};

use pruneforge_api::contract::{self, StageSummary};
use pruneforge_api::params::SelfPlayParams;
use serde::{Deserialize, Serialize};

use super::context::{Outcome, ShardRun, StageContext};
use super::distill::shard::shard_range;
use super::prefer::{self_play_pairs, write_pairs, SelfPlayReport};
use crate::data::preference::{load_preferences, PreferenceRecord};
use crate::data::sft::SftRecord;
use crate::error::{Result, StageError};
use crate::util::fs::write_json_atomic;

/// The pairs, as `{prompt, chosen, rejected}` JSONL.
pub const PAIRS_FILE: &str = "pairs.jsonl";
/// How they were made ([`ShardReport`]).
pub const REPORT_FILE: &str = "self_play.json";

/// One shard's generation report (the whole set's when unsharded: index 0 of 1).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardReport {
    pub shard_index: usize,
    pub shard_count: usize,
    /// The shard's prompts: `first_prompt..first_prompt + report.prompts` of the set.
    pub first_prompt: usize,
    pub report: SelfPlayReport,
}

/// The SFT records whose prompts SPIN answers: every data set's, in order, cut to `prompts`.
pub fn prompts_of(p: &SelfPlayParams, ctx: &StageContext) -> Result<Vec<SftRecord>> {
    let mut sft = Vec::new();
    for d in &p.datasets {
        sft.extend(super::inputs::load_sft(&d.dataset_ref(), ctx.resolver)?.records);
    }
    if let Some(n) = p.prompts {
        sft.truncate(n as usize);
    }
    Ok(sft)
}

fn shard_dir(out: &Path, index: usize) -> PathBuf {
    out.join("shards").join(format!("{index:05}"))
}

pub fn run_request(p: &SelfPlayParams, ctx: &StageContext) -> Result<Outcome> {
    let model_dir = ctx.model("model")?;
    let sft = prompts_of(p, ctx)?;
    let (index, count, dir, sharded) = match ctx.shards {
        ShardRun::One { index, count } if count > 1 => {
            (index, count, shard_dir(ctx.out, index), true)
        }
        _ => (0, 1, ctx.out.to_path_buf(), false),
    };
    let range = shard_range(sft.len(), index, count);
    let g = &p.generation;
    let m = super::context::open_model_checked(&model_dir, ctx.compute, |cfg| {
        crate::memory_plan::generation(
            "self-play",
            cfg,
            ctx.compute.dtype,
            g.batch_size as usize,
            g.max_new_tokens as usize,
        )
    })?;
    let (pairs, report) = self_play_pairs(&m, &sft[range.clone()], g, p.iteration, range.start)?;
    tracing::info!(
        iteration = p.iteration,
        shard = index,
        shards = count,
        prompts = report.prompts,
        pairs = pairs.len(),
        identical = report.identical,
        empty = report.empty,
        tokens_per_s = report.tokens_per_s,
        "self-play answers generated"
    );
    std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
    write_pairs(&dir.join(PAIRS_FILE), &pairs)?;
    let summary = contract::SelfPlaySummary {
        prompts: report.prompts as u64,
        pairs: pairs.len() as u64,
        empty: report.empty as u64,
        identical: report.identical as u64,
    };
    let shard_report = ShardReport {
        shard_index: index,
        shard_count: count,
        first_prompt: range.start,
        report,
    };
    let path = dir.join(REPORT_FILE);
    write_json_atomic(&path, &shard_report).map_err(|e| StageError::io(&path, e))?;
    Ok(Outcome {
        summary: StageSummary::SelfPlay(summary),
        files: vec![REPORT_FILE.into(), PAIRS_FILE.into()],
        sharded,
    })
}

/// The pairs at `path`; an empty file (a shard whose answers made no pair) has none.
fn read_pairs(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let len = std::fs::metadata(path)
        .map_err(|e| StageError::io(path, e))?
        .len();
    if len == 0 {
        return Ok(Vec::new());
    }
    Ok(load_preferences(path)?)
}

fn read_report(path: &Path) -> Result<ShardReport> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        StageError::Input(format!(
            "{}: not a self-play report ({e}); was the input written by a self-play stage?",
            path.display()
        ))
    })
}

/// The pairs and the generation report of a `self-play` output at `dir`: its top-level files,
/// or its shards gathered in index order (all of them must be there). Counts are summed;
/// `tokens_per_s` becomes the generated tokens over the shards' summed decoding time.
pub fn gather(dir: &Path) -> Result<(Vec<PreferenceRecord>, SelfPlayReport)> {
    if dir.join(REPORT_FILE).is_file() {
        let r = read_report(&dir.join(REPORT_FILE))?;
        return Ok((read_pairs(&dir.join(PAIRS_FILE))?, r.report));
    }
    let first = shard_dir(dir, 0);
    if !first.join(REPORT_FILE).is_file() {
        return Err(StageError::Input(format!(
            "{} holds neither {REPORT_FILE} nor shards/00000/{REPORT_FILE}: not the output of a \
             self-play stage",
            dir.display()
        )));
    }
    let count = read_report(&first.join(REPORT_FILE))?.shard_count.max(1);
    let mut pairs = Vec::new();
    let mut total: Option<SelfPlayReport> = None;
    let mut seconds = 0.0;
    for index in 0..count {
        let d = shard_dir(dir, index);
        let r = read_report(&d.join(REPORT_FILE)).map_err(|e| {
            StageError::Input(format!(
                "self-play shard {index} of {count} is missing or unreadable ({e}); every \
                 shard must finish before its pairs are used"
            ))
        })?;
        if r.shard_index != index || r.shard_count != count {
            return Err(StageError::Input(format!(
                "{}: says shard {} of {}, expected {index} of {count}",
                d.display(),
                r.shard_index,
                r.shard_count
            )));
        }
        pairs.extend(read_pairs(&d.join(PAIRS_FILE))?);
        let rep = r.report;
        seconds += rep.generated_tokens as f64 / rep.tokens_per_s.max(1e-9);
        total = Some(match total {
            None => rep,
            Some(mut t) => {
                t.prompts += rep.prompts;
                t.identical += rep.identical;
                t.empty += rep.empty;
                t.generated_tokens += rep.generated_tokens;
                t
            }
        });
    }
    let mut report = total.ok_or_else(|| StageError::Input("no self-play shards".into()))?;
    report.tokens_per_s = report.generated_tokens as f64 / seconds.max(1e-9);
    Ok((pairs, report))
}
