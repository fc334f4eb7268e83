//! Stage `distill`: self-data distillation (Cerebras 2024, after SDFT). The ORIGINAL, unpruned
//! model rewrites every answer of an SFT set in its own words, given the instruction and the
//! reference answer; the answer check keeps good rewrites and falls back to the original
//! answer otherwise. The output has the input's schema, so fine-tuning reads both alike.
//!
//! Layout of the output directory (shard k of K, k zero-padded to 5 digits):
//! - `shards/k/journal.jsonl`: progress, one line per finished item (resume point);
//! - `shards/k/data.jsonl` (or `data.json` for Alpaca arrays), `shards/k/records.jsonl`
//!   (per item: kept or fallback and why), `shards/k/distill.json` (stats);
//! - after [`gather`]: `data.jsonl`/`data.json`, `records.jsonl` and `distill.json` for the
//!   whole set, shards concatenated in index order.

pub mod check;
pub mod journal;
pub mod shard;
pub mod template;

use crate::data::sft::{SftDataset, SftRecord, SftSchema};
use crate::device::Compute;
use crate::exec::resume::ResumeStore;
use crate::generate::{generate_with_streams, FinishReason, GenerateParams};
use crate::resolve::Resolver;
use crate::stages::{Outcome, Result, ShardRun, StageContext, StageError};
use crate::tokenizer::ChatMessage;
use crate::util::fs::write_json_atomic;
use crate::util::progress::Progress;
use check::{check, Decision, FallbackReason};
use journal::{Entry, Journal};
use pruneforge_api::contract::{self, StageSummary};
pub use pruneforge_api::params::DistillParams;
use pruneforge_api::spec::DataKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use template::ResolvedTemplate;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DistillSummary {
    pub dataset: String,
    pub items: usize,
    pub kept: usize,
    pub fallback: usize,
    pub kept_rate: f64,
    /// Fallback count per reason label (empty, truncated, banned-phrase, banned-prefix,
    /// wrong-answer, prompt-too-long).
    pub fallback_reasons: BTreeMap<String, usize>,
    /// Records whose answer in the distilled set differs from the original one: kept rewrites
    /// that are not identical to it (whitespace at the ends aside). `None` in summaries written
    /// before this was counted.
    #[serde(default)]
    pub differing: Option<usize>,
    /// `differing / items`.
    #[serde(default)]
    pub differing_rate: Option<f64>,
    pub generated_tokens: usize,
    pub wall_s: f64,
    pub tokens_per_s: f64,
    /// Items found already done in the journal (resumed run).
    pub resumed_items: usize,
    pub shards: usize,
}

/// The SFT records a distill dataset reference points at (offset/limit applied).
pub fn load_input(params: &DistillParams, resolver: &Resolver) -> Result<SftDataset> {
    super::inputs::load_sft(&params.dataset.dataset_ref(), resolver)
}

fn data_file_name(schema: &SftSchema) -> &'static str {
    match schema {
        SftSchema::Alpaca => "data.json",
        _ => "data.jsonl",
    }
}

fn shard_dir(out: &Path, index: usize) -> PathBuf {
    out.join("shards").join(format!("{index:05}"))
}

/// The instruction text shown to the model (Alpaca input appended after a blank line).
pub fn instruction_text(r: &SftRecord) -> String {
    if r.input.trim().is_empty() {
        r.instruction.trim().to_string()
    } else {
        format!("{}\n\n{}", r.instruction.trim(), r.input.trim())
    }
}

/// The record with its answer replaced by a kept rewrite. GSM8K answers keep their schema: the
/// final `#### <gold>` line is appended when the rewrite lacks one.
fn rewritten(r: &SftRecord, rewrite: &str, schema: &SftSchema) -> SftRecord {
    let mut out = r.clone();
    let mut text = rewrite.trim().to_string();
    if matches!(schema, SftSchema::Gsm8k) && !text.contains("####") {
        if let Some(g) = &r.gold {
            text = format!("{text}\n#### {g}");
        }
    }
    out.output = text;
    out
}

/// Runs shard `index` of `count` of the rewrite. Resumes from the shard's journal.
pub fn run_shard(
    model_dir: &Path,
    params: &DistillParams,
    index: usize,
    count: usize,
    out_dir: &Path,
    resolver: &Resolver,
    compute: &Compute,
) -> Result<DistillSummary> {
    let shard = Shard { index, count };
    run_shard_resumable(model_dir, params, shard, out_dir, resolver, compute, None)
}

/// Which shard of how many.
#[derive(Clone, Copy, Debug)]
pub struct Shard {
    /// 0-based index.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

/// [`run_shard`] that saves the shard's journal to `resume` (at most once per save interval,
/// and at the end) and, with no local journal, starts from the one saved there.
pub fn run_shard_resumable(
    model_dir: &Path,
    params: &DistillParams,
    shard: Shard,
    out_dir: &Path,
    resolver: &Resolver,
    compute: &Compute,
    resume: Option<&ResumeStore>,
) -> Result<DistillSummary> {
    let Shard { index, count } = shard;
    if count == 0 || index >= count {
        return Err(StageError::Input(format!(
            "shard {index} of {count} does not exist"
        )));
    }
    let input = load_input(params, resolver)?;
    if input.records.is_empty() {
        return Err(StageError::Input(format!(
            "distill dataset `{}` ({}) selects no records: check offset/limit",
            params.dataset.name, params.dataset.uri
        )));
    }
    let math = params.dataset.kind == DataKind::Math;
    if math
        && params.answer_check.math_last_number
        && input.records.iter().any(|r| r.gold.is_none())
    {
        return Err(StageError::Input(format!(
            "dataset `{}` is kind math with answerCheck.mathLastNumber, but its records have no gold answer: \
             use format gsm8k (answers ending in `#### <n>`) or turn the check off",
            params.dataset.name
        )));
    }
    let range = shard::shard_range(input.records.len(), index, count);
    let dir = shard_dir(out_dir, index);
    let resume_sub = format!("shard-{index:05}");
    if let Some(store) = resume {
        store.restore(&dir, &resume_sub);
    }
    std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
    let mut journal = Journal::open(&dir.join("journal.jsonl"))?;
    let resumed = journal.done.keys().filter(|k| range.contains(k)).count();
    let tpl = ResolvedTemplate::resolve(params.dataset.kind, &params.template);

    let todo: Vec<usize> = range
        .clone()
        .filter(|i| !journal.done.contains_key(i))
        .collect();
    let started = std::time::Instant::now();
    let mut generated_tokens = 0usize;
    if !todo.is_empty() {
        let g = &params.generation;
        let m = super::context::open_model_checked(model_dir, compute, |cfg| {
            crate::memory_plan::generation(
                "distill",
                cfg,
                compute.dtype,
                g.batch_size as usize,
                g.max_new_tokens as usize,
            )
        })?;
        if !m.tokenizer.has_chat_template() {
            return Err(StageError::Input(format!(
                "{}: the model's tokenizer has no chat template; distillation needs one",
                model_dir.display()
            )));
        }
        let g = &params.generation;
        let gen = GenerateParams::from_spec(g, g.seed as u64);
        let ctx = m.model.config.max_position_embeddings;
        let mut prompts = Vec::new();
        let mut streams = Vec::new();
        let mut items = Vec::new();
        for &i in &todo {
            let r = &input.records[i];
            let mut messages = Vec::new();
            if !tpl.system.is_empty() {
                messages.push(ChatMessage::system(tpl.system.clone()));
            }
            messages.push(ChatMessage::user(
                tpl.user_message(&instruction_text(r), r.output.trim()),
            ));
            let text = m.tokenizer.apply_chat_template(&messages, true)? + &tpl.response_prefix;
            let ids = m.tokenizer.encode(&text, false)?;
            if ids.len() + 1 >= ctx {
                journal.append(Entry {
                    index: i,
                    id: r.id.clone(),
                    rewrite: String::new(),
                    decision: Decision::Fallback(FallbackReason::PromptTooLong),
                    generated_tokens: 0,
                    finish: FinishReason::Length,
                })?;
                continue;
            }
            prompts.push(ids);
            streams.push(i as u64);
            items.push(i);
        }
        let mut progress = Progress::new(
            format!("distill {}", params.dataset.name),
            todo.len() as u64,
        );
        progress.set_done((todo.len() - items.len()) as u64, "");
        let mut kept = 0usize;
        let stats = generate_with_streams(&m.model, &m.tokenizer, &prompts, &streams, &gen, |c| {
            let i = items[c.index];
            let r = &input.records[i];
            let decision = check(
                &c.text,
                c.finish == FinishReason::Length,
                r.gold.as_deref(),
                math,
                &params.answer_check,
            );
            if decision == Decision::Kept {
                kept += 1;
            }
            journal
                .append(Entry {
                    index: i,
                    id: r.id.clone(),
                    rewrite: c.text.trim().to_string(),
                    decision,
                    generated_tokens: c.tokens.len(),
                    finish: c.finish,
                })
                .map_err(|e| crate::model::ModelError::Input(e.to_string()))?;
            if let Some(store) = resume {
                if store.save_due() {
                    journal
                        .sync()
                        .map_err(|e| crate::model::ModelError::Input(e.to_string()))?;
                    store.save(&dir, &resume_sub);
                }
            }
            progress.inc(&format!("kept {kept}"));
            Ok(())
        })?;
        progress.finish();
        journal.sync()?;
        if let Some(store) = resume {
            store.save(&dir, &resume_sub);
        }
        generated_tokens = stats.generated_tokens;
    }
    let wall = started.elapsed().as_secs_f64();
    write_shard_outputs(
        &input,
        range,
        &journal,
        &dir,
        params,
        generated_tokens,
        wall,
        resumed,
        count,
    )
}

#[allow(clippy::too_many_arguments)]
fn write_shard_outputs(
    input: &SftDataset,
    range: std::ops::Range<usize>,
    journal: &Journal,
    dir: &Path,
    params: &DistillParams,
    generated_tokens: usize,
    wall_s: f64,
    resumed: usize,
    count: usize,
) -> Result<DistillSummary> {
    let mut records = Vec::with_capacity(range.len());
    let mut log = String::new();
    let mut summary = DistillSummary {
        dataset: params.dataset.name.clone(),
        items: range.len(),
        generated_tokens,
        wall_s,
        tokens_per_s: generated_tokens as f64 / wall_s.max(1e-9),
        resumed_items: resumed,
        shards: count,
        ..Default::default()
    };
    let mut differing = 0usize;
    for i in range {
        let r = &input.records[i];
        let e = journal
            .done
            .get(&i)
            .ok_or_else(|| StageError::Input(format!("item {i} missing from the journal")))?;
        match &e.decision {
            Decision::Kept => {
                summary.kept += 1;
                let record = rewritten(r, &e.rewrite, &input.schema);
                if record.output.trim() != r.output.trim() {
                    differing += 1;
                }
                records.push(record);
            }
            Decision::Fallback(reason) => {
                summary.fallback += 1;
                *summary
                    .fallback_reasons
                    .entry(reason.label().to_string())
                    .or_default() += 1;
                records.push(r.clone());
            }
        }
        let line = serde_json::json!({"index": i, "id": e.id, "decision": e.decision,
            "generated_tokens": e.generated_tokens, "rewrite": e.rewrite});
        log.push_str(&line.to_string());
        log.push('\n');
    }
    summary.kept_rate = summary.kept as f64 / summary.items.max(1) as f64;
    summary.differing = Some(differing);
    summary.differing_rate = Some(differing as f64 / summary.items.max(1) as f64);
    let out = SftDataset {
        schema: input.schema.clone(),
        records,
    };
    out.write(&dir.join(data_file_name(&input.schema)))?;
    crate::util::fs::write_atomic(&dir.join("records.jsonl"), log.as_bytes())
        .map_err(|e| StageError::io(dir, e))?;
    write_json_atomic(&dir.join("distill.json"), &summary).map_err(|e| StageError::io(dir, e))?;
    tracing::info!(
        dataset = %summary.dataset, items = summary.items, kept = summary.kept,
        kept_rate = summary.kept_rate, differing = differing, tokens_per_s = summary.tokens_per_s, "distill shard done"
    );
    Ok(summary)
}

/// Combines shards `0..count` in order into the top-level data file, records and stats.
pub fn gather(out_dir: &Path, count: usize) -> Result<DistillSummary> {
    gather_into(out_dir, count, out_dir)
}

/// The shard count recorded by the shards of a distill output.
pub fn shard_count(dir: &Path) -> Result<usize> {
    let p = shard_dir(dir, 0).join("distill.json");
    let text = std::fs::read_to_string(&p)
        .map_err(|e| StageError::Input(format!("{}: {e}", p.display())))?;
    let s: DistillSummary = serde_json::from_str(&text)
        .map_err(|e| StageError::Input(format!("{}: {e}", p.display())))?;
    Ok(s.shards.max(1))
}

/// The distilled data file of a distill output: the gathered file if there is one, else the
/// shards are gathered into `scratch` first (a sharded artifact straight from the cluster).
pub fn distilled_data(dir: &Path, scratch: &Path) -> Result<PathBuf> {
    if let Ok(p) = find_data_file(dir) {
        return Ok(p);
    }
    let count = shard_count(dir)?;
    gather_into(dir, count, scratch)?;
    find_data_file(scratch)
}

/// Reads shards `0..count` of `src` and writes the gathered outputs into `dest`.
pub fn gather_into(src: &Path, count: usize, dest: &Path) -> Result<DistillSummary> {
    let out_dir = dest;
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let mut total = DistillSummary {
        shards: count,
        differing: Some(0),
        ..Default::default()
    };
    let mut schema = None;
    let mut records = Vec::new();
    let mut log = String::new();
    for k in 0..count {
        let dir = shard_dir(src, k);
        let stats_path = dir.join("distill.json");
        let text = std::fs::read_to_string(&stats_path).map_err(|e| {
            StageError::Input(format!(
                "shard {k} of {count} is not finished ({}: {e})",
                stats_path.display()
            ))
        })?;
        let s: DistillSummary = serde_json::from_str(&text)
            .map_err(|e| StageError::Input(format!("{}: {e}", stats_path.display())))?;
        total.dataset = s.dataset.clone();
        total.items += s.items;
        total.kept += s.kept;
        total.fallback += s.fallback;
        total.generated_tokens += s.generated_tokens;
        total.wall_s += s.wall_s;
        total.resumed_items += s.resumed_items;
        // Unknown for the whole set as soon as one shard did not count it.
        total.differing = total.differing.zip(s.differing).map(|(t, d)| t + d);
        for (k, v) in s.fallback_reasons {
            *total.fallback_reasons.entry(k).or_default() += v;
        }
        let data = find_data_file(&dir)?;
        let ds = SftDataset::load_detected(&data)?;
        schema.get_or_insert(ds.schema.clone());
        records.extend(ds.records);
        log.push_str(
            &std::fs::read_to_string(dir.join("records.jsonl"))
                .map_err(|e| StageError::io(&dir, e))?,
        );
    }
    total.kept_rate = total.kept as f64 / total.items.max(1) as f64;
    total.differing_rate = total
        .differing
        .map(|d| d as f64 / total.items.max(1) as f64);
    total.tokens_per_s = total.generated_tokens as f64 / total.wall_s.max(1e-9);
    let schema = schema.ok_or_else(|| StageError::Input("no shards to gather".into()))?;
    let out = SftDataset {
        schema: schema.clone(),
        records,
    };
    out.write(&out_dir.join(data_file_name(&schema)))?;
    crate::util::fs::write_atomic(&out_dir.join("records.jsonl"), log.as_bytes())
        .map_err(|e| StageError::io(out_dir, e))?;
    write_json_atomic(&out_dir.join("distill.json"), &total)
        .map_err(|e| StageError::io(out_dir, e))?;
    Ok(total)
}

/// The data file of a distill output (gathered) or shard directory.
pub fn find_data_file(dir: &Path) -> Result<PathBuf> {
    for name in ["data.jsonl", "data.json"] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(StageError::Input(format!(
        "{}: no distilled data (data.jsonl or data.json)",
        dir.display()
    )))
}

/// Runs every shard of the set here and gathers them (the local runner's path).
pub fn run(
    model_dir: &Path,
    params: &DistillParams,
    shards: usize,
    out_dir: &Path,
    resolver: &Resolver,
    compute: &Compute,
) -> Result<DistillSummary> {
    run_resumable(model_dir, params, shards, out_dir, resolver, compute, None)
}

/// [`run`] with the journals saved to (and restored from) `resume`.
pub fn run_resumable(
    model_dir: &Path,
    params: &DistillParams,
    shards: usize,
    out_dir: &Path,
    resolver: &Resolver,
    compute: &Compute,
    resume: Option<&ResumeStore>,
) -> Result<DistillSummary> {
    let count = shards.max(1);
    for index in 0..count {
        let shard = Shard { index, count };
        run_shard_resumable(model_dir, params, shard, out_dir, resolver, compute, resume)?;
    }
    gather(out_dir, count)
}

/// The stage contract's `distill`: input `model` (the unpruned model) rewrites the data set;
/// every shard here and gathered, or the request's one shard as a sub-artifact.
pub fn run_request(p: &DistillParams, ctx: &StageContext) -> Result<Outcome> {
    let model = ctx.model("model")?;
    let (s, sharded) = match ctx.shards {
        ShardRun::All { count } => (
            run_resumable(
                &model,
                p,
                count,
                ctx.out,
                ctx.resolver,
                ctx.compute,
                ctx.resume,
            )?,
            false,
        ),
        ShardRun::One { index, count } => (
            run_shard_resumable(
                &model,
                p,
                Shard { index, count },
                ctx.out,
                ctx.resolver,
                ctx.compute,
                ctx.resume,
            )?,
            true,
        ),
    };
    Ok(Outcome {
        summary: StageSummary::Distill(contract::DistillSummary {
            items: s.items as u64,
            kept: s.kept as u64,
            kept_rate: s.kept_rate,
        }),
        files: vec!["distill.json".into(), "records.jsonl".into()],
        sharded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pruneforge_api::spec::{
        AnswerCheck, DatasetFormat, DistillDataset, GenerationSpec, PromptTemplate,
    };

    fn entry(index: usize, rewrite: &str, decision: Decision) -> Entry {
        Entry {
            index,
            id: index.to_string(),
            rewrite: rewrite.to_string(),
            decision,
            generated_tokens: 3,
            finish: FinishReason::Eos,
        }
    }

    /// A finished journal needs no model: the shard's outputs come from the journal alone.
    #[test]
    fn differing_counts_kept_rewrites_that_change_the_answer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data.json");
        let records = serde_json::json!([
            {"instruction": "a", "input": "", "output": "Paris."},
            {"instruction": "b", "input": "", "output": "Blue.\n"},
            {"instruction": "c", "input": "", "output": "Four."},
            {"instruction": "d", "input": "", "output": "Yes."},
        ]);
        std::fs::write(&data, records.to_string()).expect("data");
        let params = DistillParams {
            dataset: DistillDataset {
                name: "t".into(),
                uri: data.display().to_string(),
                format: DatasetFormat::Alpaca,
                fields: None,
                kind: DataKind::General,
                limit: None,
                offset: 0,
            },
            template: PromptTemplate::default(),
            answer_check: AnswerCheck::default(),
            generation: GenerationSpec::default(),
        };
        let out = tmp.path().join("out");
        for (shard, entries) in [
            (
                0,
                vec![
                    entry(0, "The capital of France is Paris.", Decision::Kept),
                    entry(1, "  Blue.", Decision::Kept),
                ],
            ),
            (
                1,
                vec![
                    entry(2, "", Decision::Fallback(FallbackReason::Empty)),
                    entry(3, "Yes, it is.", Decision::Kept),
                ],
            ),
        ] {
            let mut journal =
                Journal::open(&shard_dir(&out, shard).join("journal.jsonl")).expect("journal");
            for e in entries {
                journal.append(e).expect("append");
            }
            journal.sync().expect("sync");
        }
        let no_model = tmp.path().join("no-model");
        let s = run(
            &no_model,
            &params,
            2,
            &out,
            &Resolver::local(),
            &Compute::cpu(),
        )
        .expect("run");
        assert_eq!((s.items, s.kept, s.fallback), (4, 3, 1));
        // Item 1's rewrite is the original answer: kept, but not different.
        assert_eq!(s.differing, Some(2));
        assert_eq!(s.differing_rate, Some(0.5));
        assert_eq!(s.fallback_reasons.get("empty"), Some(&1));
        let written: DistillSummary =
            serde_json::from_str(&std::fs::read_to_string(out.join("distill.json")).expect("read"))
                .expect("parse");
        assert_eq!(written, s);
        // A summary written before the count existed still parses, as unknown.
        let mut old = serde_json::to_value(&s).expect("json");
        if let Some(o) = old.as_object_mut() {
            o.remove("differing");
            o.remove("differing_rate");
        }
        let old: DistillSummary = serde_json::from_value(old).expect("old summary");
        assert_eq!(old.differing, None);
    }
}
