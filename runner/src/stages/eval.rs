//! Stage `eval`: benchmarks one model with lm-evaluation-harness semantics and writes
//! `eval.json` (lm-eval's results shape plus our summary, per-task statistics with the
//! at-chance flags, and, given the base model's `eval.json` of the same configuration,
//! recovery % and normalized recovery, with 95 % intervals when the base's `items.jsonl` lies
//! beside it) and `items.jsonl` (one line per scored document: log-likelihoods, predictions,
//! generations, and the per-item values of [`crate::eval::items`]) into `out_dir`.
//!
//! Tasks: arc_easy, arc_challenge, hellaswag, piqa, winogrande (partial scoring), mmlu
//! (5-shot unless told otherwise; macro and micro), truthfulqa_mc2, gsm8k (5-shot greedy
//! generation, strict and flexible match), perplexity (held-out text) and kl (KL(base ‖ model)
//! per token on the same text; the base's eval writes the reference, see [`crate::eval::kl`]). See
//! [`crate::eval`] for the scoring and [`crate::eval::report`] for the report and the main
//! metric of each task.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use pruneforge_api::spec::{EvalTaskName, OutputType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{Outcome, Result, StageContext, StageError};
use crate::data::tasks::{self, TaskConfig, TaskDocs, TaskFiles};
use crate::data::{DataError, DataRoot, Selection};
use crate::device::Compute;
use crate::eval::chance;
use crate::eval::generation::{self, GenOptions};
use crate::eval::items::{items_from_values, parse_items, ItemTable};
use crate::eval::kl;
use crate::eval::normalized_recovery::add_paired_intervals;
use crate::eval::perplexity::{self, PerplexitySource, TokenRow};
use crate::eval::report::{self, TaskOutcome, TaskReport};
use crate::eval::{
    multiple_choice, score, Recovery, ScoreStats, ScorerOptions, TaskRecovery, TaskScore,
};
use crate::generate::probe::{decode_probe, PROBE_NEW_TOKENS};
use crate::generate::GenerationStats;
use crate::model::Llama;
use crate::resolve::Resolver;
use crate::stats::BootstrapConfig;
use crate::tokenizer::Tokenizer;
use crate::util::fs::{write_atomic, write_json_atomic};
use pruneforge_api::contract::StageSummary;

/// The results file.
pub const EVAL_JSON: &str = "eval.json";
/// The per-document log.
pub const ITEMS_JSONL: &str = "items.jsonl";

/// One task to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// arc_easy, arc_challenge, hellaswag, piqa, winogrande, mmlu, truthfulqa_mc2, gsm8k,
    /// perplexity or kl.
    pub name: String,
    /// Few-shot examples; `None`: 5 for mmlu and gsm8k, 0 for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shots: Option<usize>,
    /// Documents scored (perplexity: rows; default 64 held-out rows for the Alpaca source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Documents skipped first.
    #[serde(default)]
    pub offset: usize,
    /// Read the documents from here instead of the public slice: a path, `file://PATH` or
    /// `builtin:NAME`. Few-shot examples still come from the task's train/dev split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

impl TaskSpec {
    /// A task on its public slice with default shots.
    pub fn new(name: &str) -> Self {
        TaskSpec {
            name: name.to_string(),
            shots: None,
            limit: None,
            offset: 0,
            uri: None,
        }
    }
}

impl FromStr for TaskSpec {
    type Err = StageError;

    /// `NAME[:SHOTS[:LIMIT[:OFFSET]]][@URI]`; empty fields keep the default (`mmlu::100`).
    fn from_str(spec: &str) -> Result<Self> {
        let (s, uri) = match spec.split_once('@') {
            Some((s, uri)) if !uri.is_empty() => (s, Some(uri.to_string())),
            Some(_) => {
                return Err(StageError::Input(format!(
                    "task `{spec}`: nothing after `@` (expected a path or builtin:NAME)"
                )))
            }
            None => (spec, None),
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() > 4 || parts[0].is_empty() {
            return Err(StageError::Input(format!(
                "task `{spec}`: expected NAME[:SHOTS[:LIMIT[:OFFSET]]][@URI], e.g. arc_easy:0:200"
            )));
        }
        let number = |i: usize, what: &str| -> Result<Option<usize>> {
            match parts.get(i).filter(|p| !p.is_empty()) {
                None => Ok(None),
                Some(p) => p.parse().map(Some).map_err(|_| {
                    StageError::Input(format!(
                        "task `{spec}`: {what} must be a non-negative integer, got `{p}`"
                    ))
                }),
            }
        };
        Ok(TaskSpec {
            name: parts[0].to_string(),
            shots: number(1, "shots")?,
            limit: number(2, "limit")?,
            offset: number(3, "offset")?.unwrap_or(0),
            uri,
        })
    }
}

/// Settings of the eval stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalParams {
    pub tasks: Vec<TaskSpec>,
    /// Seed of the few-shot sampler (lm-eval's default 1234).
    pub seed: i64,
    /// Sequences per forward pass (scoring) and rows decoded together (generation).
    pub batch_size: usize,
    /// Model window; default: the model's `max_position_embeddings`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// New tokens per generation (lm-eval's `max_gen_toks`).
    pub max_gen_tokens: usize,
    /// Share context prefixes through the KV cache (CPU); off runs every input on its own.
    pub prefix_cache: bool,
    /// Data root; default: found as [`DataRoot::discover`] does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            tasks: EvalTaskName::DEFAULT
                .map(|t| TaskSpec::new(t.as_str()))
                .to_vec(),
            seed: tasks::fewshot::DEFAULT_FEWSHOT_SEED,
            batch_size: 32,
            max_length: None,
            max_gen_tokens: 256,
            prefix_cache: true,
            data_dir: None,
        }
    }
}

/// Few-shot examples of a task when the spec gives none (the task table's default).
pub fn default_shots(task: EvalTaskName) -> usize {
    task.def().default_shots as usize
}

/// What the stage returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalSummary {
    /// Main metric per task, in run order.
    pub tasks: Vec<TaskScore>,
    /// Mean of the accuracy tasks' main metrics, without the tasks at chance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// Mean of every accuracy task's main metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_all_tasks: Option<f64>,
    /// Accuracy tasks left out of `average`: the base is within 2 standard errors of chance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_at_chance: Vec<String>,
    /// average ÷ base average × 100 over the tasks both runs have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovery: Vec<TaskRecovery>,
    /// Log-likelihood scoring speed: tokens run through the model per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_tokens_per_s: Option<f64>,
    /// Generation speed (GSM8K): new tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_tokens_per_s: Option<f64>,
}

impl EvalSummary {
    /// The contract's compact summary (drift is measured by another stage).
    pub fn to_contract(&self) -> pruneforge_api::contract::EvalSummary {
        pruneforge_api::contract::EvalSummary {
            tasks: self
                .tasks
                .iter()
                .map(|t| pruneforge_api::contract::TaskScore {
                    task: t.task.clone(),
                    metric: t.metric.clone(),
                    value: t.value,
                    stderr: t.stderr,
                    items: Some(t.items),
                })
                .collect(),
            average: self.average,
            recovery: self.recovery_percent,
            drift_cosine: None,
        }
    }
}

/// A task with its files resolved.
struct ResolvedTask {
    name: EvalTaskName,
    spec: TaskSpec,
    shots: usize,
    files: TaskFiles,
}

/// PIQA keeps labels beside the items: `valid.jsonl` → `valid-labels.lst`,
/// `valid.public.jsonl` → `valid-labels.public.lst`.
pub fn piqa_labels_path(items: &Path) -> Option<PathBuf> {
    let name = items.file_name()?.to_str()?;
    let stem = name.strip_suffix(".jsonl")?;
    let labels = match stem.split_once('.') {
        Some((head, rest)) => format!("{head}-labels.{rest}.lst"),
        None => format!("{stem}-labels.lst"),
    };
    Some(items.with_file_name(labels))
}

fn resolve_tasks(params: &EvalParams, resolver: &Resolver) -> Result<Vec<ResolvedTask>> {
    if params.tasks.is_empty() {
        return Err(StageError::Input("no eval tasks given".into()));
    }
    if params.batch_size == 0 {
        return Err(StageError::Input("batch_size must be at least 1".into()));
    }
    let resolver = match &params.data_dir {
        Some(dir) => resolver
            .clone()
            .with_data_root(Some(DataRoot::new(dir.clone()))),
        None => resolver.clone(),
    };
    let root = resolver.data_root()?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for spec in &params.tasks {
        let name: EvalTaskName = spec.name.parse().map_err(DataError::from)?;
        if !seen.insert(name) {
            return Err(StageError::Input(format!(
                "task {name} is listed twice; results are keyed by task name"
            )));
        }
        let shots = spec.shots.unwrap_or_else(|| default_shots(name));
        let output_type = name.def().output_type;
        if matches!(
            output_type,
            OutputType::LoglikelihoodRolling | OutputType::Loglikelihood
        ) && shots > 0
        {
            return Err(StageError::Input(format!(
                "{name} has no prompts, so shots must be 0 (got {shots})"
            )));
        }
        if spec.limit == Some(0) {
            return Err(StageError::Input(format!(
                "task {name}: limit 0 scores nothing; leave it unset for all documents"
            )));
        }
        let mut files = TaskFiles::public(name, &root);
        if let Some(uri) = &spec.uri {
            files.docs = resolver.resolve(uri)?;
            if name == EvalTaskName::Piqa {
                files.labels = piqa_labels_path(&files.docs)
                    .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .map(|labels| resolver.resolve_sibling(uri, &labels))
                    .transpose()?;
                match &files.labels {
                    Some(l) if l.is_file() => {}
                    _ => {
                        return Err(StageError::Input(format!(
                            "piqa uri {uri}: the labels file {} is missing (PIQA keeps \
                             labels beside the items: valid.jsonl + valid-labels.lst)",
                            files
                                .labels
                                .as_deref()
                                .map_or("<name>-labels.lst".into(), |p| p.display().to_string())
                        )))
                    }
                }
            }
        }
        if !files.docs.exists() {
            return Err(StageError::Input(format!(
                "task {name}: {} does not exist",
                files.docs.display()
            )));
        }
        out.push(ResolvedTask {
            name,
            spec: spec.clone(),
            shots,
            files,
        });
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| {
        StageError::Input(format!(
            "{}: not valid JSON ({e}); pass a base eval.json",
            path.display()
        ))
    })
}

/// Everything a task evaluation needs from the run.
struct Context<'a> {
    model: &'a Llama,
    tokenizer: &'a Tokenizer,
    params: &'a EvalParams,
    /// The kl task's reference: the base's file to read, or, without a base, the file this
    /// run writes.
    kl_reference: KlReferenceRole,
    scorer: ScorerOptions,
    ll_stats: ScoreStats,
    gen_stats: GenerationStats,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn selected<T>(task: EvalTaskName, items: Vec<T>, sel: Selection) -> Result<Vec<T>> {
    let total = items.len();
    let picked = sel.apply(items);
    if picked.is_empty() {
        return Err(StageError::Input(format!(
            "task {task}: offset {} leaves no documents (the task has {total})",
            sel.offset
        )));
    }
    Ok(picked)
}

fn evaluate_task(ctx: &mut Context<'_>, t: &ResolvedTask) -> Result<TaskReport> {
    let started = Instant::now();
    let config = TaskConfig {
        num_fewshot: t.shots,
        seed: ctx.params.seed,
        selection: Selection::ALL,
    };
    let mut limit = t.spec.limit;
    let mut task_config = json!({
        "task": t.name.as_str(),
        "num_fewshot": t.shots,
        "fewshot_seed": ctx.params.seed,
        "offset": t.spec.offset,
        "docs_file": file_name(&t.files.docs),
        "files": {
            "docs": t.files.docs,
            "labels": t.files.labels,
            "shots": if t.shots > 0 { t.files.shots.clone() } else { None },
        },
        "target_delimiter": tasks::doc::TARGET_DELIMITER,
        "fewshot_delimiter": tasks::fewshot::FEWSHOT_DELIMITER,
        "max_length": ctx.scorer.max_length,
    });
    let output_type = t.name.def().output_type;
    let (outcome, n_original, n_effective): (TaskOutcome, usize, usize) =
        if output_type == OutputType::LoglikelihoodRolling {
            let source = PerplexitySource::for_path(&t.files.docs);
            limit = limit.or(source.default_limit());
            let rows = perplexity::load_rows(&source, ctx.tokenizer)?;
            let n = rows.len();
            let rows = selected(t.name, rows, Selection::new(t.spec.offset, limit))?;
            let out = if t.name == EvalTaskName::Kl {
                kl_outcome(ctx, &rows)?
            } else {
                perplexity_outcome(ctx, &rows)?
            };
            (out, n, rows.len())
        } else {
            match tasks::build(t.name, &t.files, &config)? {
                TaskDocs::MultipleChoice(docs) => {
                    let n = docs.len();
                    let docs = selected(t.name, docs, Selection::new(t.spec.offset, limit))?;
                    let scored = multiple_choice::score_docs(
                        ctx.model,
                        ctx.tokenizer,
                        &docs,
                        &ctx.scorer,
                        &mut ctx.ll_stats,
                    )?;
                    let out = multiple_choice::outcome(t.name, &docs, &scored)?;
                    (out, n, docs.len())
                }
                TaskDocs::Generation(docs) => {
                    let n = docs.len();
                    let docs = selected(t.name, docs, Selection::new(t.spec.offset, limit))?;
                    let opts = GenOptions {
                        batch_size: ctx.params.batch_size,
                        max_gen_tokens: ctx.params.max_gen_tokens,
                        max_length: ctx.scorer.max_length,
                    };
                    if let Some(obj) = task_config.as_object_mut() {
                        obj.insert(
                            "generation_kwargs".into(),
                            json!({
                                "until": docs.first().map(|d| d.stop.clone()),
                                "do_sample": false,
                                "max_gen_toks": ctx.params.max_gen_tokens,
                            }),
                        );
                    }
                    let out = generation::evaluate(
                        ctx.model,
                        ctx.tokenizer,
                        &docs,
                        &opts,
                        &mut ctx.gen_stats,
                    )?;
                    (out, n, docs.len())
                }
                TaskDocs::Answers(docs) => {
                    let n = docs.len();
                    // The bundled Alpaca's held-out answers start at a fixed record.
                    let skip = if t.spec.uri.is_none() {
                        pruneforge_api::spec::ANSWER_NLL_FIRST_RECORD
                    } else {
                        0
                    };
                    let docs = selected(t.name, docs, Selection::new(skip + t.spec.offset, limit))?;
                    (answer_nll_outcome(ctx, &docs)?, n, docs.len())
                }
                TaskDocs::Perplexity(_) => {
                    return Err(StageError::Input(
                        "internal: perplexity documents from the task builder".into(),
                    ))
                }
            }
        };
    if let Some(obj) = task_config.as_object_mut() {
        obj.insert("limit".into(), json!(limit));
        obj.insert("output_type".into(), json!(output_type.as_str()));
        obj.insert(
            "metric_list".into(),
            json!(outcome
                .metrics
                .iter()
                .map(|(k, _)| k)
                .filter(|k| !k.contains("_stderr"))
                .collect::<Vec<_>>()),
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        task = t.name.as_str(),
        documents = n_effective,
        seconds,
        metrics = %multiple_choice::summary_line(&outcome),
        "task evaluated"
    );
    Ok(TaskReport {
        task: t.name,
        outcome,
        n_original,
        n_effective,
        num_fewshot: t.shots,
        config: task_config,
        seconds,
    })
}

fn perplexity_outcome(ctx: &mut Context<'_>, rows: &[TokenRow]) -> Result<TaskOutcome> {
    let per_row: Vec<Vec<crate::eval::EncodedRequest>> = rows
        .iter()
        .map(|r| perplexity::rolling_requests(&r.tokens, ctx.scorer.max_length))
        .collect();
    let flat: Vec<_> = per_row.iter().flatten().cloned().collect();
    let mut scores = score(ctx.model, &flat, &ctx.scorer, &mut ctx.ll_stats)?.into_iter();
    let mut summed = Vec::with_capacity(rows.len());
    let mut out = TaskOutcome::default();
    for (row, reqs) in rows.iter().zip(&per_row) {
        let windows: Vec<_> = scores.by_ref().take(reqs.len()).collect();
        let (nll, tokens) = perplexity::row_nll(&windows);
        out.items.push(json!({
            "task": EvalTaskName::Perplexity.as_str(),
            "idx": row.idx,
            "tokens_scored": tokens,
            "nll": nll,
        }));
        summed.push((row, nll, tokens));
    }
    let s = perplexity::aggregate(&summed);
    if s.tokens == 0 {
        return Err(StageError::Input(
            "perplexity: the selected rows have no token to score (rows need at least 2 tokens)"
                .into(),
        ));
    }
    out.metrics = vec![
        ("perplexity,none".into(), s.perplexity),
        ("nll_per_token,none".into(), s.nll_per_token),
        ("tokens,none".into(), s.tokens as f64),
        ("rows,none".into(), s.rows as f64),
    ];
    for (k, v) in [
        ("word_perplexity,none", s.word_perplexity),
        ("byte_perplexity,none", s.byte_perplexity),
        ("bits_per_byte,none", s.bits_per_byte),
    ] {
        if let Some(v) = v {
            out.metrics.push((k.into(), v));
        }
    }
    Ok(out)
}

/// Where the kl task's reference comes from.
#[derive(Debug, Clone)]
enum KlReferenceRole {
    /// No base eval: this model is the reference; its distributions are written here.
    Write(PathBuf),
    /// The base eval's reference file (`None`: the base eval has none).
    Read(Option<PathBuf>),
}

fn kl_outcome(ctx: &mut Context<'_>, rows: &[TokenRow]) -> Result<TaskOutcome> {
    let task = EvalTaskName::Kl;
    let max_length = ctx.scorer.max_length;
    if let Some(long) = rows.iter().find(|r| r.tokens.len() > max_length) {
        return Err(StageError::Input(format!(
            "kl: row {} has {} tokens, more than max_length {max_length}; score shorter rows \
             (the held-out Alpaca rows have {})",
            long.idx,
            long.tokens.len(),
            perplexity::ROW_TOKENS
        )));
    }
    let pairs: Vec<(usize, &[u32])> = rows.iter().map(|r| (r.idx, r.tokens.as_slice())).collect();
    let started = Instant::now();
    let values = match &ctx.kl_reference {
        KlReferenceRole::Write(path) => {
            let (reference, own) = kl::reference_of(ctx.model, &pairs, kl::TOP_K)?;
            kl::save_reference(&reference, path)?;
            own
        }
        KlReferenceRole::Read(Some(path)) => {
            let reference = kl::load_reference(path)?;
            kl::kl_against(ctx.model, &reference, &pairs)?
        }
        KlReferenceRole::Read(None) => {
            return Err(StageError::Input(format!(
                "kl: the base eval has no {}; evaluate the base model with the kl task too \
                 (its eval writes the reference distributions)",
                kl::REFERENCE_FILE
            )))
        }
    };
    let positions: usize = values.iter().map(|v| v.positions).sum();
    if positions == 0 {
        return Err(StageError::Input(
            "kl: the selected rows have no token to score (rows need at least 2 tokens)".into(),
        ));
    }
    let seconds = started.elapsed().as_secs_f64();
    let stats = &mut ctx.ll_stats;
    stats.requests += values.len();
    stats.sequences += values.len();
    stats.request_tokens += positions;
    stats.forward_tokens += positions;
    stats.padded_tokens += positions;
    stats.logit_rows += positions;
    stats.forward_calls += kl::forward_passes(&pairs);
    stats.seconds += seconds;
    stats.forward_seconds += seconds;
    let mut out = TaskOutcome::default();
    for v in &values {
        out.items.push(json!({
            "task": task.as_str(),
            "idx": v.idx,
            "tokens_scored": v.positions,
            "kl": v.kl_per_token(),
            "kl_sum": v.kl_sum,
            "nll": v.nll_sum,
            "reference_topk_mass": v.reference_mass_sum / v.positions.max(1) as f64,
        }));
    }
    let total = |f: fn(&kl::RowKl) -> f64| values.iter().map(f).sum::<f64>();
    let per_row: Vec<f64> = values.iter().map(kl::RowKl::kl_per_token).collect();
    let nll_per_token = total(|v| v.nll_sum) / positions as f64;
    out.metrics = vec![
        (
            "kl_per_token,none".into(),
            total(|v| v.kl_sum) / positions as f64,
        ),
        ("nll_per_token,none".into(), nll_per_token),
        ("perplexity,none".into(), nll_per_token.exp()),
        (
            "reference_topk_mass,none".into(),
            total(|v| v.reference_mass_sum) / positions as f64,
        ),
        ("tokens,none".into(), positions as f64),
        ("rows,none".into(), values.len() as f64),
    ];
    if let Ok(se) = crate::stats::summary::standard_error(&per_row) {
        out.metrics.push(("kl_per_token_stderr,none".into(), se));
    }
    Ok(out)
}

fn answer_nll_outcome(
    ctx: &mut Context<'_>,
    docs: &[tasks::answers::AnswerDoc],
) -> Result<TaskOutcome> {
    let task = EvalTaskName::AnswerNll;
    let mut encoded = Vec::with_capacity(docs.len());
    for d in docs {
        if let Some((prompt, answer)) =
            crate::train::batching::encode_record(ctx.tokenizer, &d.record)?
        {
            encoded.push((d.idx, prompt, answer));
        }
    }
    let requests: Vec<crate::eval::EncodedRequest> = encoded
        .iter()
        .map(|(_, prompt, answer)| crate::eval::EncodedRequest {
            context: prompt.clone(),
            continuation: answer.clone(),
            // The answer is encoded on its own after the prompt, as fine-tuning does.
            context_is_prefix: true,
        })
        .collect();
    if requests.is_empty() {
        return Err(StageError::Input(
            "answer_nll: none of the selected records has an answer to score".into(),
        ));
    }
    let scores = score(ctx.model, &requests, &ctx.scorer, &mut ctx.ll_stats)?;
    let mut out = TaskOutcome::default();
    let (mut nll_sum, mut tokens) = (0.0, 0usize);
    let mut per_item = Vec::with_capacity(scores.len());
    for ((idx, _, _), s) in encoded.iter().zip(&scores) {
        let per_token = -s.ll / s.tokens.max(1) as f64;
        out.items.push(json!({
            "task": task.as_str(),
            "idx": idx,
            "tokens_scored": s.tokens,
            "nll": -s.ll,
            "nll_per_token": per_token,
        }));
        nll_sum -= s.ll;
        tokens += s.tokens;
        per_item.push(per_token);
    }
    let mean = nll_sum / tokens.max(1) as f64;
    out.metrics = vec![
        ("nll_per_answer_token,none".into(), mean),
        ("perplexity,none".into(), mean.exp()),
        ("tokens,none".into(), tokens as f64),
        ("answers,none".into(), per_item.len() as f64),
        (
            "skipped_empty_answers,none".into(),
            (docs.len() - per_item.len()) as f64,
        ),
    ];
    if let Ok(se) = crate::stats::summary::standard_error(&per_item) {
        out.metrics
            .push(("nll_per_answer_token_stderr,none".into(), se));
    }
    Ok(out)
}

/// Runs the eval stage: `model_dir` (HF directory or .gguf), optionally the base model's
/// `eval.json` for recovery, results into `out_dir`.
pub fn run(
    model_dir: &Path,
    base_eval: Option<&Path>,
    params: &EvalParams,
    resolver: &Resolver,
    out_dir: &Path,
    compute: &Compute,
) -> Result<EvalSummary> {
    // Bad task specs and a bad base file fail before the model is loaded; task files (downloads
    // included) are resolved once.
    let tasks = resolve_tasks(params, resolver)?;
    let base = read_base(base_eval, resolver, &tasks)?;
    let generating = tasks
        .iter()
        .any(|t| t.name.def().output_type == pruneforge_api::spec::OutputType::GenerateUntil);
    let hf = super::context::open_model_checked(model_dir, compute, |cfg| {
        let window = params
            .max_length
            .unwrap_or(2048)
            .min(cfg.max_position_embeddings);
        crate::memory_plan::eval(
            cfg,
            compute.dtype,
            params.batch_size.max(1),
            window,
            params.prefix_cache,
            generating,
            params.max_gen_tokens,
        )
    })?;
    evaluate(
        &hf.model,
        &hf.tokenizer,
        &model_dir.display().to_string(),
        base,
        params,
        &tasks,
        out_dir,
    )
}

/// [`run`] on a model already in memory; `model_label` is recorded as the model in eval.json.
pub fn run_with_model(
    model: &Llama,
    tokenizer: &Tokenizer,
    model_label: &str,
    base_eval: Option<&Path>,
    params: &EvalParams,
    resolver: &Resolver,
    out_dir: &Path,
) -> Result<EvalSummary> {
    let tasks = resolve_tasks(params, resolver)?;
    let base = read_base(base_eval, resolver, &tasks)?;
    evaluate(model, tokenizer, model_label, base, params, &tasks, out_dir)
}

/// The base model's results: its `eval.json` and, when one lies beside it, its `items.jsonl`.
struct BaseEval<'a> {
    path: &'a Path,
    eval: Value,
    items: Option<ItemTable>,
    /// Its kl reference, when a kl task is run and the file exists.
    kl_reference: Option<PathBuf>,
}

/// The base model's `eval.json` with its path and items, when one is given.
fn read_base<'a>(
    base_eval: Option<&'a Path>,
    resolver: &Resolver,
    tasks: &[ResolvedTask],
) -> Result<Option<BaseEval<'a>>> {
    let Some(path) = base_eval else {
        return Ok(None);
    };
    let eval = read_json(path)?;
    let items = read_base_items(path, resolver);
    let kl_reference = if tasks.iter().any(|t| t.name == EvalTaskName::Kl) {
        resolver
            .resolve_sibling(&path.display().to_string(), kl::REFERENCE_FILE)
            .ok()
            .filter(|p| p.is_file())
    } else {
        None
    };
    Ok(Some(BaseEval {
        path,
        eval,
        items,
        kl_reference,
    }))
}

/// The base's `items.jsonl` beside its `eval.json` (resolved as the eval.json's sibling);
/// `None`, logged, when it is absent or unreadable (recovery then has no intervals).
fn read_base_items(eval_path: &Path, resolver: &Resolver) -> Option<ItemTable> {
    let path = match resolver.resolve_sibling(&eval_path.display().to_string(), ITEMS_JSONL) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(error = %e, "no base items.jsonl; recovery without intervals");
            return None;
        }
    };
    if !path.is_file() {
        tracing::info!(path = %path.display(), "no base items.jsonl; recovery without intervals");
        return None;
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (table, skipped) = parse_items(&text);
            if skipped > 0 {
                tracing::warn!(path = %path.display(), skipped, "unreadable lines in the base items.jsonl");
            }
            Some(table)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "base items.jsonl unreadable; recovery without intervals");
            None
        }
    }
}

/// Evaluates resolved `tasks` and writes eval.json and items.jsonl into `out_dir`.
fn evaluate(
    model: &Llama,
    tokenizer: &Tokenizer,
    model_label: &str,
    base: Option<BaseEval<'_>>,
    params: &EvalParams,
    tasks: &[ResolvedTask],
    out_dir: &Path,
) -> Result<EvalSummary> {
    let started = Instant::now();
    let max_pos = model.config.max_position_embeddings;
    let max_length = params.max_length.unwrap_or(max_pos);
    if !(2..=max_pos).contains(&max_length) {
        return Err(StageError::Input(format!(
            "max_length must be between 2 and the model's max_position_embeddings ({max_pos}), \
             got {max_length}"
        )));
    }
    let mut scorer = ScorerOptions::new(params.batch_size, max_length);
    scorer.prefix_cache = params.prefix_cache;
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let kl_reference = match &base {
        None => KlReferenceRole::Write(out_dir.join(kl::REFERENCE_FILE)),
        Some(b) => KlReferenceRole::Read(b.kl_reference.clone()),
    };
    let mut ctx = Context {
        model,
        tokenizer,
        params,
        kl_reference,
        scorer,
        ll_stats: ScoreStats::default(),
        gen_stats: GenerationStats::default(),
    };
    let mut reports = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(evaluate_task(&mut ctx, t)?);
    }
    let scores = report::task_scores(&reports)?;
    let configs: Map<String, Value> = reports
        .iter()
        .map(|r| (r.task.as_str().to_string(), r.config.clone()))
        .collect();
    let statistics = chance::task_statistics(
        &scores,
        &report::task_results(&reports),
        base.as_ref().map(|b| &b.eval),
    );
    let headline = chance::headline(&scores, &statistics);
    let mut recovery: Option<Recovery> = base
        .as_ref()
        .map(|b| report::recovery(&scores, &configs, &b.eval, &b.path.display().to_string()))
        .transpose()?;
    if let (Some(rec), Some(base_items)) = (
        recovery.as_mut(),
        base.as_ref().and_then(|b| b.items.as_ref()),
    ) {
        let own = items_from_values(reports.iter().flat_map(|r| &r.outcome.items));
        add_paired_intervals(rec, &own, base_items, BootstrapConfig::default());
    }
    // The same short generation for every variant: its decode speed, comparable within a run.
    let decode_probe = match decode_probe(ctx.model, ctx.tokenizer, PROBE_NEW_TOKENS) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "decode speed probe failed; eval.json records none");
            None
        }
    };
    let ll = &ctx.ll_stats;
    let gen = &ctx.gen_stats;
    let throughput = json!({
        "loglikelihood": {
            "stats": ll,
            "forward_tokens_per_s": ll.forward_tokens_per_s(),
            "forward_pass_tokens_per_s": ll.forward_pass_tokens_per_s(),
            "request_tokens_per_s": ll.request_tokens_per_s(),
        },
        "generation": gen,
        "decode_probe": decode_probe,
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    let run_config = json!({
        "model": model_label,
        "layers": model.num_layers(),
        "parameters": model.config.parameter_count(),
        "batch_size": params.batch_size,
        "max_length": max_length,
        "max_gen_tokens": params.max_gen_tokens,
        "seed": params.seed,
        "prefix_cache": params.prefix_cache,
        "device": format!("{:?}", model.device()),
    });
    let doc = report::eval_json(
        &reports,
        &scores,
        &statistics,
        &headline,
        recovery.as_ref(),
        run_config,
        throughput,
    );
    let mut items = String::new();
    for r in &reports {
        for item in &r.outcome.items {
            items.push_str(&item.to_string());
            items.push('\n');
        }
    }
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let items_path = out_dir.join(ITEMS_JSONL);
    write_atomic(&items_path, items.as_bytes()).map_err(|e| StageError::io(&items_path, e))?;
    let eval_path = out_dir.join(EVAL_JSON);
    write_json_atomic(&eval_path, &doc).map_err(|e| StageError::io(&eval_path, e))?;
    Ok(EvalSummary {
        average: headline.average,
        average_all_tasks: headline.average_all_tasks,
        excluded_at_chance: headline.excluded_at_chance,
        tasks: scores,
        recovery_percent: recovery.as_ref().and_then(|r| r.average_percent),
        recovery: recovery.map(|r| r.tasks).unwrap_or_default(),
        forward_tokens_per_s: (ll.forward_tokens > 0).then(|| ll.forward_tokens_per_s()),
        generated_tokens_per_s: (gen.generated_tokens > 0).then_some(gen.tokens_per_s),
    })
}

/// The stage contract's `eval`: input `model`, optionally `base-eval` (the base model's eval
/// artifact, for recovery, the `kl` reference and the base side of drift) and `base` (the
/// unpruned model, for drift when `drift` is set). The base model's own eval (no `base-eval`)
/// with `drift` set writes the base side of drift ([`super::drift::DRIFT_BASE_JSON`]).
pub fn run_request(p: &pruneforge_api::params::EvalParams, ctx: &StageContext) -> Result<Outcome> {
    let model = ctx.model("model")?;
    let base_eval = ctx.inputs.get("base-eval").map(|d| d.join(EVAL_JSON));
    let params = EvalParams {
        tasks: p
            .tasks
            .iter()
            .map(|t| TaskSpec {
                name: t.name.as_str().to_string(),
                shots: t.shots.map(|s| s as usize),
                limit: t.limit.map(|l| l as usize),
                offset: 0,
                uri: t.uri.clone(),
            })
            .collect(),
        seed: p.seed as i64,
        batch_size: p.batch_size.max(1) as usize,
        ..EvalParams::default()
    };
    let s = run(
        &model,
        base_eval.as_deref(),
        &params,
        ctx.resolver,
        ctx.out,
        ctx.compute,
    )?;
    let mut summary = s.to_contract();
    let mut files = vec![EVAL_JSON, ITEMS_JSONL];
    // Published only when this run's kl task wrote it (a reused out dir may hold an old one).
    let ran_kl =
        p.tasks.iter().any(|t| t.name == EvalTaskName::Kl) && ctx.inputs.get("base-eval").is_none();
    if ran_kl && ctx.out.join(kl::REFERENCE_FILE).is_file() {
        files.push(kl::REFERENCE_FILE);
    }
    match (&p.drift, ctx.inputs.get("base")) {
        // A variant: drift against the base side its base eval computed (or computed here
        // when that artifact has none for these settings).
        (Some(spec), Some(base)) => {
            let base = ctx.open_model(&super::model_dir_of(base)?)?;
            let candidate = ctx.open_model(&model)?;
            let stored = ctx
                .inputs
                .get("base-eval")
                .map(|d| d.join(super::drift::DRIFT_BASE_JSON))
                .and_then(|path| std::fs::read(path).ok())
                .and_then(|bytes| serde_json::from_slice::<super::drift::DriftBase>(&bytes).ok())
                .filter(|b| &b.spec == spec);
            let base_side = match stored {
                Some(b) => b,
                None => super::drift::base_responses(&base, spec, ctx.resolver)?,
            };
            let report =
                super::drift::measure_against(&base, &base_side, &candidate, ctx.resolver)?;
            let path = ctx.out.join(super::drift::DRIFT_JSON);
            write_json_atomic(&path, &report).map_err(|e| StageError::io(&path, e))?;
            summary.drift_cosine = Some(report.mean_cosine);
            files.push(super::drift::DRIFT_JSON);
        }
        // The base model's own eval: its responses, once for every variant.
        (Some(spec), None) if ctx.inputs.get("base-eval").is_none() => {
            let base = ctx.open_model(&model)?;
            let base_side = super::drift::base_responses(&base, spec, ctx.resolver)?;
            let path = ctx.out.join(super::drift::DRIFT_BASE_JSON);
            write_json_atomic(&path, &base_side).map_err(|e| StageError::io(&path, e))?;
            files.push(super::drift::DRIFT_BASE_JSON);
        }
        _ => {}
    }
    Ok(Outcome::new(StageSummary::Eval(summary), &files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_specs_parse() {
        let t: TaskSpec = "arc_easy:0:200".parse().expect("valid");
        assert_eq!((t.shots, t.limit, t.offset), (Some(0), Some(200), 0));
        let t: TaskSpec = "mmlu::100:8".parse().expect("valid");
        assert_eq!((t.shots, t.limit, t.offset), (None, Some(100), 8));
        let t: TaskSpec = "piqa".parse().expect("valid");
        assert_eq!(t, TaskSpec::new("piqa"));
        let t: TaskSpec = "perplexity:0:8@/d/ids.safetensors".parse().expect("valid");
        assert_eq!(t.uri.as_deref(), Some("/d/ids.safetensors"));
        assert_eq!(t.limit, Some(8));
        assert!("piqa@".parse::<TaskSpec>().is_err());
        assert!("arc_easy:x".parse::<TaskSpec>().is_err());
        assert!(":1".parse::<TaskSpec>().is_err());
        assert!("a:1:2:3:4".parse::<TaskSpec>().is_err());
    }

    #[test]
    fn piqa_labels_beside_items() {
        assert_eq!(
            piqa_labels_path(Path::new("/d/valid.public.jsonl")),
            Some(PathBuf::from("/d/valid-labels.public.lst"))
        );
        assert_eq!(
            piqa_labels_path(Path::new("valid.jsonl")),
            Some(PathBuf::from("valid-labels.lst"))
        );
        assert_eq!(piqa_labels_path(Path::new("valid.txt")), None);
    }

    #[test]
    fn params_from_json_with_defaults() {
        let p: EvalParams = serde_json::from_value(json!({
            "tasks": [{"name": "gsm8k", "limit": 10}],
            "batch_size": 4
        }))
        .expect("valid");
        assert_eq!(p.tasks[0].shots, None);
        assert_eq!(p.max_gen_tokens, 256);
        assert!(serde_json::from_value::<EvalParams>(json!({"bogus": 1})).is_err());
        let bad = EvalParams {
            tasks: vec![TaskSpec::new("arc_easy"), TaskSpec::new("arc_easy")],
            data_dir: Some(PathBuf::from(".")),
            ..EvalParams::default()
        };
        let resolver = Resolver::local();
        assert!(resolve_tasks(&bad, &resolver).is_err());
        let unsupported = EvalParams {
            tasks: vec![TaskSpec {
                uri: Some("ftp://host/x.jsonl".into()),
                ..TaskSpec::new("arc_easy")
            }],
            data_dir: Some(PathBuf::from(".")),
            ..EvalParams::default()
        };
        let err = resolve_tasks(&unsupported, &resolver)
            .err()
            .expect("unsupported scheme refused");
        assert!(err.to_string().contains("ftp:// is not supported"), "{err}");
    }
}
