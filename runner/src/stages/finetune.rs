//! Stage `finetune`: LoRA fine-tuning of a (pruned) model on SFT data, optionally with logit
//! distillation from the unpruned teacher.
//!
//! Every recovery method is this one stage with different inputs:
//!
//! | method | `data_files` | `kd` | teacher |
//! |---|---|---|---|
//! | `sft` | the original SFT set | `None` | — |
//! | `self-distill` | the distill stage's output (same schema; shards in order) | `None` | — |
//! | `logit-kd` | the original set | `ratio: 1` | the unpruned model |
//! | `sft+logit-kd` | the original set | `ratio: r` | the unpruned model |
//! | `self-distill+logit-kd` | the distilled set | `ratio: r` | the unpruned model |
//!
//! The loss on answer tokens is `(1 - r) * CE + r * T^2 * KL(p_teacher || p_student)` at
//! temperature `T` (see [`crate::train::loss`]); `r = 0` is plain SFT.
//!
//! Outputs in `out_dir`:
//! - `adapter_config.json` + `adapter_model.safetensors`: the adapter in PEFT format
//!   (`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight` `[r, in]`, `lora_B`
//!   `[out, r]`), loadable with `PeftModel.from_pretrained`;
//! - `merged/`: the model with the adapter folded in, as an HF directory;
//! - `finetune.json`: parameters, the loss curve (per optimizer step: loss, ce, kd, lr,
//!   grad_norm, tokens), throughput, truncation counts, initial/final loss, held-out NLL, and
//!   the training `dose` ([`crate::train::dose::TrainingDose`]: optimizer steps, sequences,
//!   epochs, answer and input tokens, `‖ΔW‖ / ‖W‖` overall, per projection kind and per layer);
//! - `loss.svg`: the loss curve;
//! - `checkpoints/`: the latest resumable checkpoint (when `checkpoint_every > 0`); a run
//!   started again on the same `out_dir` resumes from it step for step.

use super::{Outcome, Result, StageContext, StageError};
use crate::data::sft::{SftDataset, SftRecord};
use crate::device::Compute;
use crate::loader::{open_model_on, save_hf_dir, HfModel};
use crate::model::config::ModelConfig;
use crate::train::batching::{tokenize, Batch, DataOrder, Example};
use crate::train::checkpoint::{self, StepLog, TrainState};
use crate::train::dose::{self, AdapterDelta, TrainingDose, WeightChange};
use crate::train::eval::mean_nll;
use crate::train::lora::LoraSet;
use crate::train::schedule::learning_rate;
use crate::train::trainer::{PhaseTimes, Trainer};
use crate::train::{AdamW, KdParams, LoraParams, OptimizerParams, TrainError};
use crate::util::fs::{write_atomic, write_json_atomic};
use crate::util::rng::SplitMix64;
use pruneforge_api::contract::{self, StageSummary};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Parameters of a fine-tuning run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneParams {
    pub lora: LoraParams,
    pub optimizer: OptimizerParams,
    /// Logit distillation against the teacher; `None` trains on cross-entropy only.
    pub kd: Option<KdParams>,
    /// Save a resumable checkpoint every this many optimizer steps (and at the end);
    /// 0 disables checkpoints. Does not change the result.
    pub checkpoint_every: u64,
    /// Train on at most this many records (after the hold-out split).
    pub limit: Option<usize>,
    /// Hold the last this-many records out of training and report the mean NLL of their
    /// answers before and after (0: no held-out evaluation).
    pub holdout: usize,
    /// Write the merged model to `merged/`.
    pub write_merged: bool,
    /// Log progress every this many steps.
    pub log_every: u64,
    /// Stop this session after this many optimizer steps, as if interrupted (a checkpoint is
    /// written when checkpoints are on; the next run resumes). For time-boxed sessions on
    /// preemptible nodes; does not change the result.
    pub stop_after: Option<u64>,
}

impl Default for FinetuneParams {
    fn default() -> Self {
        Self {
            lora: LoraParams::default(),
            optimizer: OptimizerParams::default(),
            kd: None,
            checkpoint_every: 50,
            limit: None,
            holdout: 0,
            write_merged: true,
            log_every: 10,
            stop_after: None,
        }
    }
}

/// Compact result of the stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSummary {
    /// Optimizer steps taken (in total, including resumed ones).
    pub steps: u64,
    /// Answer tokens trained on (tokens that carry loss).
    pub tokens: u64,
    /// Answer tokens per second of training wall time.
    pub tokens_per_s: f64,
    /// All input tokens (prompt + answer, no padding) per second of training wall time.
    pub input_tokens_per_s: f64,
    /// Mean loss of the first `min(10, steps)` steps.
    pub initial_loss: f64,
    /// Mean loss of the last `min(10, steps)` steps.
    pub final_loss: f64,
    /// Training examples after filtering.
    pub examples: usize,
    /// Examples cut to `max_seq_len`.
    pub truncated: usize,
    /// Records skipped (prompt alone too long, or empty answer).
    pub skipped: usize,
    pub trainable_params: usize,
    /// Step the run resumed from, when it did.
    pub resumed_from_step: Option<u64>,
    /// Mean NLL per answer token of the held-out records before and after training.
    pub heldout_nll_before: Option<f64>,
    pub heldout_nll_after: Option<f64>,
    /// Training wall time (all sessions of a resumed run).
    pub train_s: f64,
    /// False when the session stopped early (`stop_after`): no adapter or merged model was
    /// written yet.
    pub completed: bool,
}

/// The SFT files to read for `path`: the file itself, or for a directory its `data.jsonl` /
/// `data.json`, else its `part-*.jsonl` / `part-*.json` shards in name order.
pub fn data_files_of(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(StageError::Input(format!(
                "training data {} does not exist",
                path.display()
            )));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    for name in ["data.jsonl", "data.json"] {
        if path.join(name).is_file() {
            return Ok(vec![path.join(name)]);
        }
    }
    let mut parts: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| StageError::io(path, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with("part-") && (n.ends_with(".jsonl") || n.ends_with(".json"))
        })
        .collect();
    parts.sort();
    if parts.is_empty() {
        return Err(StageError::Input(format!(
            "{} is a directory without data.jsonl, data.json or part-*.jsonl shards",
            path.display()
        )));
    }
    Ok(parts)
}

/// All records of `paths` (files or shard directories), concatenated in order.
pub fn load_records(paths: &[PathBuf]) -> Result<(Vec<SftRecord>, Vec<PathBuf>)> {
    if paths.is_empty() {
        return Err(StageError::Input(
            "no training data: pass at least one SFT file".into(),
        ));
    }
    let mut files = Vec::new();
    for p in paths {
        files.extend(data_files_of(p)?);
    }
    let mut records = Vec::new();
    for f in &files {
        records.extend(SftDataset::load_detected(f)?.records);
    }
    Ok((records, files))
}

/// What a checkpoint must agree with to be resumed: parameters (except the checkpoint
/// interval and logging), data contents, and the models' configs and weight file sizes.
fn fingerprint(
    params: &FinetuneParams,
    files: &[PathBuf],
    student_dir: &Path,
    teacher_dir: Option<&Path>,
) -> Result<String> {
    let mut p = params.clone();
    p.checkpoint_every = 0;
    p.log_every = 0;
    p.write_merged = true;
    p.stop_after = None;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&p).unwrap_or_default());
    for f in files {
        let digest = crate::util::fs::sha256_file(f).map_err(|e| StageError::io(f, e))?;
        h.update(digest.as_bytes());
    }
    for dir in std::iter::once(student_dir).chain(teacher_dir) {
        super::context::hash_model_identity(&mut h, dir);
    }
    Ok(hex::encode(h.finalize()))
}

#[derive(Serialize)]
struct Report<'a> {
    student: String,
    teacher: Option<String>,
    data_files: Vec<String>,
    params: &'a FinetuneParams,
    max_seq_len_effective: usize,
    summary: &'a FinetuneSummary,
    input_tokens: u64,
    phase_seconds: PhaseTimes,
    threads: usize,
    history: &'a [StepLog],
    dose: &'a TrainingDose,
}

/// The dose of a run after `steps` optimizer steps of `grad_accum` batches each, measured
/// before the adapters are merged into `student`. The weight change is left out (with a
/// warning) when it cannot be measured: it describes the run, it is not its result.
fn training_dose(
    student: &crate::model::Llama,
    lora: &LoraSet,
    replay_order: DataOrder,
    examples: &[Example],
    steps: u64,
    grad_accum: u64,
) -> TrainingDose {
    let seen = dose::sequences_seen(replay_order, examples, steps * grad_accum);
    let change = || -> std::result::Result<WeightChange, TrainError> {
        let delta = AdapterDelta::from_lora_set(lora)?;
        dose::weight_change(&delta, &dose::base_norms_sq(student, &delta)?)
    };
    let weight_change = match change() {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "could not measure the weight change of the adapters");
            None
        }
    };
    let d = TrainingDose::new(steps, seen, examples.len(), weight_change);
    tracing::info!(
        steps = d.optimizer_steps,
        sequences = d.sequences,
        epochs = d.epochs,
        answer_tokens = d.answer_tokens,
        relative_change = d.weight_change.as_ref().map(|c| c.overall.ratio),
        "training dose"
    );
    d
}

fn validate(params: &FinetuneParams) -> Result<()> {
    params.lora.validate()?;
    params.optimizer.validate()?;
    if let Some(kd) = &params.kd {
        kd.validate()?;
    }
    Ok(())
}

/// Runs the stage; see the module docs.
pub fn run(
    student_dir: &Path,
    teacher_dir: Option<&Path>,
    data_files: &[PathBuf],
    params: &FinetuneParams,
    out_dir: &Path,
    compute: &Compute,
) -> Result<FinetuneSummary> {
    run_resumable(
        student_dir,
        teacher_dir,
        data_files,
        params,
        out_dir,
        compute,
        None,
    )
}

/// [`run`] that also saves each checkpoint to `resume` and, with no local checkpoint, starts
/// from the one saved there (a new pod after a preemption).
pub fn run_resumable(
    student_dir: &Path,
    teacher_dir: Option<&Path>,
    data_files: &[PathBuf],
    params: &FinetuneParams,
    out_dir: &Path,
    compute: &Compute,
    resume: Option<&crate::exec::resume::ResumeStore>,
) -> Result<FinetuneSummary> {
    validate(params)?;
    let opt_p = &params.optimizer;
    let teacher_dir = match (&params.kd, teacher_dir) {
        (Some(_), None) => {
            return Err(StageError::Input(
                "kd is set but no teacher model was given: logit distillation needs the \
                 unpruned model as teacher (or drop kd for plain SFT)"
                    .into(),
            ))
        }
        (None, Some(t)) => {
            tracing::warn!(teacher = %t.display(), "a teacher was given but kd is not set; training on cross-entropy only");
            None
        }
        (_, t) => t,
    };

    // Data.
    let (mut records, files) = load_records(data_files)?;
    let total_records = records.len();
    if params.holdout >= records.len() && params.holdout > 0 {
        return Err(StageError::Input(format!(
            "holdout ({}) leaves no training records out of {}",
            params.holdout,
            records.len()
        )));
    }
    let heldout_records = records.split_off(records.len() - params.holdout);
    if let Some(limit) = params.limit {
        records.truncate(limit);
    }

    // Models.
    let HfModel {
        model: mut student,
        tokenizer,
        stored_dtype,
        ..
    } = super::context::open_model_checked_with_base(
        student_dir,
        compute,
        params.lora.base_quantization,
        |cfg| {
            let teacher_cfg = teacher_dir.and_then(|t| {
                crate::loader::resolve_hf_dir(t)
                    .ok()
                    .and_then(|d| ModelConfig::from_json_file(&d.join("config.json")).ok())
            });
            let need = crate::memory_plan::lora_training(
                cfg,
                compute.dtype,
                opt_p.batch_size.max(1),
                opt_p.max_seq_len,
                params.lora.parameter_count(cfg),
                teacher_cfg.as_ref(),
                1024,
                // The trainer checkpoints layers on the device-generic path.
                !(compute.device.is_cpu() && compute.dtype == candle_core::DType::F32),
            );
            match params.lora.base_quantization {
                Some(base) => need.with_quantized_base(cfg, compute.dtype, base),
                None => need,
            }
        },
    )?;
    if let Some(q) = student.quantized_base() {
        tracing::info!(
            format = ?q.format,
            weights = q.weights,
            mib = q.bytes as f64 / (1 << 20) as f64,
            dense_f32_mib = (4 * q.weights) as f64 / (1 << 20) as f64,
            "QLoRA: the base projections stay quantized"
        );
    }
    let teacher = teacher_dir
        .map(|t| open_model_on(t, &compute.device, compute.dtype))
        .transpose()?;
    if let Some(t) = &teacher {
        if t.model.config.vocab_size != student.config.vocab_size {
            return Err(StageError::Input(format!(
                "teacher vocabulary ({}) differs from the student's ({}): logit distillation \
                 needs the same tokenizer",
                t.model.config.vocab_size, student.config.vocab_size
            )));
        }
    }
    let mut max_len = opt_p
        .max_seq_len
        .min(student.config.max_position_embeddings);
    if let Some(t) = &teacher {
        max_len = max_len.min(t.model.config.max_position_embeddings);
    }
    if max_len < opt_p.max_seq_len {
        tracing::warn!(
            requested = opt_p.max_seq_len,
            used = max_len,
            "max_seq_len exceeds the model's context; clamped"
        );
    }
    let tokenized = tokenize(&tokenizer, &records, max_len)?;
    let skipped = tokenized.skipped_prompt_too_long + tokenized.skipped_empty_answer;
    if tokenized.examples.is_empty() {
        return Err(StageError::Input(format!(
            "no training examples left: {total_records} records read, {} held out, {} used; \
             {} skipped because the prompt alone fills max_seq_len ({max_len}), {} with an \
             empty answer. Raise max_seq_len or check the data",
            heldout_records.len(),
            records.len(),
            tokenized.skipped_prompt_too_long,
            tokenized.skipped_empty_answer
        )));
    }
    let heldout = tokenize(&tokenizer, &heldout_records, max_len)?.examples;
    let pad = tokenizer.pad_id.unwrap_or(0);
    tracing::info!(
        examples = tokenized.examples.len(),
        truncated = tokenized.truncated,
        skipped,
        heldout = heldout.len(),
        "training data ready"
    );

    // Trainable state, fresh or from the latest checkpoint.
    let fp = fingerprint(params, &files, student_dir, teacher_dir)?;
    let lora = LoraSet::init(&student, &params.lora, opt_p.seed)?;
    let mut opt = AdamW::new(&lora.sizes(), opt_p);
    let ckpt_root = out_dir.join("checkpoints");
    let resumed = super::context::resume_training(
        &ckpt_root,
        resume,
        &lora,
        &mut opt,
        &fp,
        "parameters, data or model",
    )?;
    let resumed_from_step = resumed.as_ref().map(|s| s.step);
    let mut state = resumed
        .unwrap_or_else(|| TrainState::fresh(SplitMix64::derive(opt_p.seed, 0xD20F), fp.clone()));
    if state.heldout_nll_before.is_none() && !heldout.is_empty() {
        state.heldout_nll_before = Some(mean_nll(&student, &heldout, opt_p.batch_size, pad)?);
    }

    let lengths: Vec<usize> = tokenized.examples.iter().map(|e| e.tokens.len()).collect();
    // A fresh copy of the order to count, at the end, what every session fed.
    let replay_order = DataOrder::new(lengths.clone(), opt_p.batch_size, opt_p.seed);
    let mut order = DataOrder::new(lengths, opt_p.batch_size, opt_p.seed);
    order.restore(state.data);
    let examples: &[Example] = &tokenized.examples;
    let hidden_kd = match (&params.kd, &teacher) {
        (Some(kd), Some(t)) if kd.hidden_weight > 0.0 => Some(hidden_kd_of(
            kd,
            student_dir,
            &student,
            &t.model,
            &compute.device,
        )?),
        _ => None,
    };
    let mut trainer = Trainer::new(
        &mut student,
        teacher.as_ref().map(|t| &t.model),
        lora,
        opt,
        params.kd.clone(),
        opt_p.max_grad_norm,
    )?;
    if let Some(h) = hidden_kd {
        tracing::info!(pairs = ?h.pairs, weight = h.weight, "hidden-state distillation");
        trainer = trainer.with_hidden_kd(h)?;
    }
    let mut phases = PhaseTimes::default();
    let mut input_tokens = 0u64;
    let mut last_ckpt: Option<u64> = resumed_from_step;
    let session = Instant::now();
    let elapsed_before = state.elapsed_s;
    let session_start_step = state.step;
    while state.step < opt_p.steps {
        if params
            .stop_after
            .is_some_and(|n| state.step - session_start_step >= n)
        {
            break;
        }
        let t0 = Instant::now();
        let lr = learning_rate(
            state.step,
            opt_p.steps,
            opt_p.warmup_steps,
            opt_p.lr,
            opt_p.min_lr_ratio,
        );
        let micro: Vec<Batch> = (0..opt_p.grad_accum)
            .map(|_| {
                let idx = order.next_batch();
                let refs: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
                input_tokens += refs.iter().map(|e| e.tokens.len() as u64 - 1).sum::<u64>();
                Batch::from_examples(&refs, pad)
            })
            .collect();
        let dropout_seed = state.rng.next_u64();
        let out = trainer
            .step(&micro, lr, dropout_seed, state.step)
            .map_err(|e| match e {
                TrainError::NonFinite {
                    step,
                    what,
                    value,
                    hint,
                } => TrainError::NonFinite {
                    step,
                    what,
                    value,
                    hint: match last_ckpt {
                        Some(k) => format!(
                            "{hint}; the last good checkpoint (step {k}) is in {}",
                            ckpt_root.display()
                        ),
                        None => format!("{hint}; no checkpoint was written before"),
                    },
                },
                other => other,
            })?;
        phases.add(&out.times);
        state.step += 1;
        state.tokens_seen += out.tokens;
        state.data = order.position();
        state.adam_t = trainer.opt.t;
        state.elapsed_s = elapsed_before + session.elapsed().as_secs_f64();
        state.history.push(StepLog {
            step: state.step,
            loss: out.loss,
            ce: out.ce,
            kd: out.kd,
            hidden: trainer.hidden.is_some().then_some(out.hidden),
            lr,
            grad_norm: out.grad_norm,
            tokens: out.tokens,
            seconds: t0.elapsed().as_secs_f64(),
        });
        if params.log_every > 0 && (state.step % params.log_every == 0 || state.step == 1) {
            tracing::info!(
                step = state.step,
                loss = out.loss,
                ce = out.ce,
                kd = out.kd,
                hidden = out.hidden,
                lr,
                grad_norm = out.grad_norm,
                tokens = out.tokens,
                step_s = t0.elapsed().as_secs_f64(),
                "train step"
            );
        }
        let every = params.checkpoint_every;
        let stopping = params
            .stop_after
            .is_some_and(|n| state.step - session_start_step >= n);
        if every > 0 && (state.step % every == 0 || state.step == opt_p.steps || stopping) {
            checkpoint::save(&ckpt_root, &trainer.lora, &trainer.opt, &state)?;
            last_ckpt = Some(state.step);
            if let Some(store) = resume {
                store.save(&ckpt_root, "checkpoints");
            }
        }
    }
    let train_s = state.elapsed_s;
    crate::model::train_kernels::pool::clear();
    let session_s = session.elapsed().as_secs_f64().max(1e-9);

    // Outputs.
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let completed = state.step >= opt_p.steps;
    let lora = trainer.lora;
    let dose = training_dose(
        &student,
        &lora,
        replay_order,
        examples,
        state.step,
        opt_p.grad_accum as u64,
    );
    if dose.answer_tokens != state.tokens_seen {
        tracing::warn!(
            replayed = dose.answer_tokens,
            counted = state.tokens_seen,
            "the replayed data order disagrees with the answer tokens counted in training"
        );
    }
    let mut heldout_nll_after = None;
    if completed {
        lora.save_peft(out_dir, &student_dir.display().to_string())?;
        lora.attach(&mut student, 0)?;
        student.merge_lora()?;
        if params.write_merged {
            save_hf_dir(&student, &tokenizer, &out_dir.join("merged"), stored_dtype)?;
        }
        if !heldout.is_empty() {
            heldout_nll_after = Some(mean_nll(&student, &heldout, opt_p.batch_size, pad)?);
        }
    }
    let h = &state.history;
    let window = h.len().clamp(1, 10);
    let final_loss = if h.is_empty() {
        f64::NAN
    } else {
        h[h.len() - window..].iter().map(|s| s.loss).sum::<f64>() / window as f64
    };
    let summary = FinetuneSummary {
        steps: state.step,
        tokens: state.tokens_seen,
        tokens_per_s: if train_s > 0.0 {
            state.tokens_seen as f64 / train_s
        } else {
            0.0
        },
        input_tokens_per_s: input_tokens as f64 / session_s,
        initial_loss: if h.is_empty() {
            f64::NAN
        } else {
            h[..window].iter().map(|s| s.loss).sum::<f64>() / window as f64
        },
        final_loss,
        examples: examples.len(),
        truncated: tokenized.truncated,
        skipped,
        trainable_params: lora.trainable_params(),
        resumed_from_step,
        heldout_nll_before: state.heldout_nll_before,
        heldout_nll_after,
        train_s,
        completed,
    };
    let report = Report {
        student: student_dir.display().to_string(),
        teacher: teacher_dir.map(|t| t.display().to_string()),
        data_files: files.iter().map(|f| f.display().to_string()).collect(),
        params,
        max_seq_len_effective: max_len,
        summary: &summary,
        input_tokens,
        phase_seconds: phases,
        threads: rayon::current_num_threads(),
        history: h,
        dose: &dose,
    };
    let report_path = out_dir.join("finetune.json");
    write_json_atomic(&report_path, &report).map_err(|e| StageError::io(&report_path, e))?;
    let svg_path = out_dir.join("loss.svg");
    let title = format!(
        "finetune: {} steps, loss {:.3} -> {:.3}",
        summary.steps, summary.initial_loss, summary.final_loss
    );
    write_atomic(
        &svg_path,
        crate::train::plot::loss_svg(h, &title).as_bytes(),
    )
    .map_err(|e| StageError::io(&svg_path, e))?;
    Ok(summary)
}

/// Hidden-state distillation of `student` (read from `student_dir`) against `teacher`: the
/// layer pairing from the student's `pruning.json`; a student without one must have the
/// teacher's shape (layer `i` pairs with layer `i`).
fn hidden_kd_of(
    kd: &KdParams,
    student_dir: &Path,
    student: &crate::model::Llama,
    teacher: &crate::model::Llama,
    device: &candle_core::Device,
) -> Result<crate::train::HiddenKd> {
    use crate::stages::prune::PruningLineage;
    let dims = |m: &crate::model::Llama| (m.num_layers(), m.config.hidden_size);
    let dir = crate::loader::resolve_hf_dir(student_dir)?;
    let lineage = match PruningLineage::read(&dir)? {
        Some(l) => l,
        None if dims(student) == dims(teacher) => {
            PruningLineage::identity(teacher.num_layers(), teacher.config.hidden_size)
        }
        None => {
            return Err(StageError::Input(format!(
                "hidden-state distillation needs to know which teacher layer each student layer \
                 came from, but {} has no {} (a model pruned by `pruneforge prune` has one); \
                 drop kd.hidden_weight or prune the model with pruneforge",
                dir.display(),
                crate::stages::prune::LINEAGE_FILE
            )))
        }
    };
    Ok(crate::train::HiddenKd::new(
        kd.hidden_weight,
        &kd.hidden_layers,
        &lineage,
        dims(student),
        dims(teacher),
        device,
    )?)
}

/// The stage contract's `finetune`: input `model` (the pruned student), `teacher` when the
/// recipe distills logits, and the training data (distilled inputs or the original sets).
pub fn run_request(
    p: &pruneforge_api::params::FinetuneParams,
    ctx: &StageContext,
) -> Result<Outcome> {
    let student = ctx.model("model")?;
    let teacher = match p.recipe.needs_teacher() {
        true => Some(ctx.model("teacher")?),
        false => None,
    };
    let data_files = finetune_data(p, ctx)?;
    let params = finetune_params(p);
    let s = run_resumable(
        &student,
        teacher.as_deref(),
        &data_files,
        &params,
        ctx.out,
        ctx.compute,
        ctx.resume,
    )?;
    // Checkpoints are resume state, not a result: keep them out of the artifact.
    let _ = std::fs::remove_dir_all(ctx.out.join("checkpoints"));
    Ok(Outcome::new(
        StageSummary::Finetune(contract::FinetuneSummary {
            final_loss: s.final_loss,
            steps: s.steps,
            tokens: s.tokens,
        }),
        &[
            "finetune.json",
            "adapter_config.json",
            "adapter_model.safetensors",
            "merged/config.json",
        ],
    ))
}

/// The training files of a finetune request: the distill stages' outputs (inputs
/// `data-<name>`, in name order) or the original data sets, written to the work directory in
/// a schema the finetune reader detects.
fn finetune_data(
    p: &pruneforge_api::params::FinetuneParams,
    ctx: &StageContext,
) -> Result<Vec<PathBuf>> {
    use crate::data::sft::{FieldMap, SftSchema};
    use pruneforge_api::spec::TrainingData;
    let mut files = Vec::new();
    match p.recipe.data {
        TrainingData::Distilled => {
            for (name, dir) in ctx.inputs_with_prefix("data-") {
                let scratch = ctx.work.join("gathered").join(name);
                files.push(super::distill::distilled_data(dir, &scratch)?);
            }
            if files.is_empty() {
                return Err(StageError::Input(
                    "this recovery method trains on distilled data, but the request has no \
                     `data-<name>` input from a distill stage"
                        .into(),
                ));
            }
        }
        TrainingData::Original => {
            for d in &p.datasets {
                let mut ds = super::inputs::load_sft(&d.dataset_ref(), ctx.resolver)?;
                // Custom field names are not detectable: store with the Alpaca names.
                if matches!(ds.schema, SftSchema::Jsonl(_)) {
                    ds.schema = SftSchema::Jsonl(FieldMap::alpaca());
                }
                let dir = ctx.work.join("original");
                std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
                let path = dir.join(format!("{}.jsonl", d.name));
                ds.write(&path)?;
                files.push(path);
            }
            if files.is_empty() {
                return Err(StageError::Input(
                    "no training data: set spec.distillation.datasets".into(),
                ));
            }
        }
    }
    Ok(files)
}

/// The runner's fine-tuning parameters for the API's.
fn finetune_params(p: &pruneforge_api::params::FinetuneParams) -> FinetuneParams {
    use crate::train::{KdParams, LoraParams, OptimizerParams};
    let defaults = FinetuneParams::default();
    FinetuneParams {
        lora: LoraParams::from_spec(&p.lora),
        optimizer: OptimizerParams::from_spec(&p.optimizer),
        kd: p.recipe.needs_teacher().then(|| KdParams {
            temperature: p.kd_temperature.unwrap_or(1.0),
            ratio: p.recipe.kd_weight,
            hidden_weight: p.kd_hidden_states.as_ref().map_or(0.0, |h| h.weight),
            hidden_layers: p
                .kd_hidden_states
                .iter()
                .flat_map(|h| h.layers.iter().map(|&l| l as usize))
                .collect(),
        }),
        checkpoint_every: p.checkpoint_every as u64,
        limit: p.train_limit.map(|l| l as usize),
        ..defaults
    }
}
