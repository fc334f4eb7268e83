//! Stage `prefer`: preference training of a fine-tuned model, DPO on a data set's pairs or one
//! SPIN self-play iteration, as a LoRA merged into the model afterwards.
//!
//! The reference is the input model itself: its log-probabilities of every pair's answers are
//! computed once, before the adapter exists, and kept with the pair. SPIN first samples the
//! input model's own answers to the data sets' prompts (`spec.distillation.generation`, the
//! seed mixed with the iteration); each data-set answer (chosen) is paired with the model's
//! answer (rejected); pairs where the two agree carry no preference and are left out.
//!
//! Outputs in `out_dir`: `adapter_config.json` + `adapter_model.safetensors` (PEFT), `merged/`
//! (the model with the adapter folded in), `prefer.json` (parameters, per-step loss, rewards,
//! margin, accuracy and gradient norm, the reference's log-probabilities summarised, counts),
//! and for SPIN `pairs.jsonl` (`{prompt, chosen, rejected}`, readable as a DPO data set).

use super::{Outcome, Result, StageContext, StageError};
use crate::data::preference::{load_preferences, PreferenceRecord};
use crate::data::sft::SftRecord;
use crate::device::Compute;
use crate::exec::resume::ResumeStore;
use crate::generate::{generate_with_streams, GenerateParams};
use crate::loader::{save_hf_dir, HfModel};
use crate::tokenizer::ChatMessage;
use crate::train::batching::{example_of, user_message, DataOrder};
use crate::train::checkpoint::{self, TrainState};
use crate::train::lora::LoraSet;
use crate::train::preference::{
    sequence_logps, PreferenceObjective, PreferencePair, PreferenceStepLog,
};
use crate::train::schedule::learning_rate;
use crate::train::trainer::Trainer;
use crate::train::{AdamW, LoraParams, OptimizerParams};
use crate::util::fs::write_json_atomic;
use crate::util::rng::{mix, SplitMix64};
use pruneforge_api::contract::{self, StageSummary};
use pruneforge_api::params::{PreferParams, PreferencePairs};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

/// Training settings of a `prefer` run.
#[derive(Clone, Debug, Serialize)]
pub struct PreferRunParams {
    pub objective: PreferenceObjective,
    pub lora: LoraParams,
    /// `batch_size` counts pairs (each pair is two sequences).
    pub optimizer: OptimizerParams,
    pub log_every: u64,
    /// Save a resumable checkpoint every this many steps (and at the end); 0: none. Does not
    /// change the result.
    pub checkpoint_every: u64,
    /// Stop this session after this many steps, as if interrupted (a checkpoint is written
    /// when checkpoints are on). Does not change the result.
    pub stop_after: Option<u64>,
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct PreferReport {
    pub model: String,
    pub params: PreferRunParams,
    /// Pairs read, trained on, and left out (empty answer, or a prompt that fills
    /// `max_seq_len`); answers cut to `max_seq_len`.
    pub pairs_read: usize,
    pub pairs: usize,
    pub pairs_skipped: usize,
    pub answers_truncated: usize,
    /// Mean reference log-probability of the chosen and rejected answers (per token for ipo).
    pub reference_chosen_mean: f64,
    pub reference_rejected_mean: f64,
    pub steps: u64,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub final_margin: f64,
    pub final_accuracy: f64,
    pub train_s: f64,
    /// Step the run resumed from, when it did.
    pub resumed_from_step: Option<u64>,
    /// False when the session stopped early (`stop_after`): no adapter or merged model yet.
    pub completed: bool,
    pub history: Vec<PreferenceStepLog>,
    /// SPIN only: how the pairs were made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_play: Option<SelfPlayReport>,
}

/// SPIN's generation of the rejected side.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SelfPlayReport {
    pub iteration: u32,
    pub prompts: usize,
    /// Generated answers identical to the data set's (no pair).
    pub identical: usize,
    /// Empty generations (no pair).
    pub empty: usize,
    pub generated_tokens: usize,
    pub tokens_per_s: f64,
}

/// Mean of the first or last `min(10, n)` values of `f` over the history.
fn window(h: &[PreferenceStepLog], last: bool, f: impl Fn(&PreferenceStepLog) -> f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    let n = h.len().clamp(1, 10);
    let part = if last { &h[h.len() - n..] } else { &h[..n] };
    part.iter().map(f).sum::<f64>() / n as f64
}

/// What a checkpoint must match to be resumed: the settings that shape training, the pairs
/// and the model.
fn fingerprint(params: &PreferRunParams, records: &[PreferenceRecord], model_dir: &Path) -> String {
    let mut h = Sha256::new();
    let shaping = serde_json::json!({
        "objective": params.objective,
        "lora": params.lora,
        "optimizer": params.optimizer,
    });
    h.update(shaping.to_string().as_bytes());
    let dir = crate::loader::resolve_hf_dir(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    super::context::hash_model_identity(&mut h, &dir);
    for r in records {
        for m in &r.prompt {
            h.update(m.role.as_bytes());
            h.update([0]);
            h.update(m.content.as_bytes());
            h.update([0]);
        }
        for a in [&r.chosen, &r.rejected] {
            h.update(a.as_bytes());
            h.update([0]);
        }
    }
    hex::encode(h.finalize())
}

/// Trains `model` (already open) on `records`, writing the outputs into `out_dir`; resumes
/// from the checkpoint in `out_dir/checkpoints` (or, when there is none, the one `resume`
/// saved in storage) and saves checkpoints there.
pub fn run(
    mut m: HfModel,
    model_dir: &Path,
    records: &[PreferenceRecord],
    params: &PreferRunParams,
    out_dir: &Path,
    self_play: Option<SelfPlayReport>,
    resume: Option<&ResumeStore>,
) -> Result<PreferReport> {
    params.objective.validate()?;
    params.lora.validate()?;
    params.optimizer.validate()?;
    if let Some(format) = params.lora.base_quantization {
        // A model opened dense (the CLI, a test) gets the base the parameters name; the
        // stage opens it quantized already.
        m.model.quantize_projections(format)?;
    }
    let o = &params.optimizer;
    let max_len = o.max_seq_len.min(m.model.config.max_position_embeddings);
    let pad = m.tokenizer.pad_id.unwrap_or(0);

    // Tokenized pairs and the reference's log-probabilities, before any adapter exists.
    let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
    let mut truncated = 0usize;
    for r in records {
        let c = example_of(&m.tokenizer, &r.prompt, &r.chosen, max_len)?;
        let j = example_of(&m.tokenizer, &r.prompt, &r.rejected, max_len)?;
        if let (Some((c, cut_c)), Some((j, cut_j))) = (c, j) {
            truncated += usize::from(cut_c) + usize::from(cut_j);
            chosen.push(c);
            rejected.push(j);
        }
    }
    let skipped = records.len() - chosen.len();
    if let (true, Some(sp)) = (records.is_empty(), &self_play) {
        return Err(StageError::Input(format!(
            "SPIN iteration {} made no pairs: of {} answers the model gave, {} were empty and {} \
             repeated the data set's; sample with a temperature above 0 or use more prompts",
            sp.iteration, sp.prompts, sp.empty, sp.identical
        )));
    }
    if chosen.is_empty() {
        return Err(StageError::Input(format!(
            "no preference pairs left: {} read, all with an empty answer or a prompt that fills \
             max_seq_len ({max_len}); raise max_seq_len or check the data",
            records.len()
        )));
    }
    let average = params.objective.loss.averages_tokens();
    let rows = 2 * o.batch_size.max(1);
    let ref_c = sequence_logps(
        &m.model,
        &chosen.iter().collect::<Vec<_>>(),
        rows,
        pad,
        average,
    )?;
    let ref_r = sequence_logps(
        &m.model,
        &rejected.iter().collect::<Vec<_>>(),
        rows,
        pad,
        average,
    )?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (ref_chosen_mean, ref_rejected_mean) = (mean(&ref_c), mean(&ref_r));
    let pairs: Vec<PreferencePair> = chosen
        .into_iter()
        .zip(rejected)
        .zip(ref_c.into_iter().zip(ref_r))
        .map(|((c, r), (rc, rr))| PreferencePair {
            chosen: c,
            rejected: r,
            ref_chosen: rc,
            ref_rejected: rr,
        })
        .collect();
    tracing::info!(
        pairs = pairs.len(),
        skipped,
        truncated,
        reference_chosen = ref_chosen_mean,
        reference_rejected = ref_rejected_mean,
        "preference pairs ready"
    );

    // Trainable state, fresh or from the latest checkpoint.
    let fp = fingerprint(params, records, model_dir);
    let lora = LoraSet::init(&m.model, &params.lora, o.seed)?;
    let mut opt = AdamW::new(&lora.sizes(), o);
    let ckpt_root = out_dir.join("checkpoints");
    let resumed = super::context::resume_training(
        &ckpt_root,
        resume,
        &lora,
        &mut opt,
        &fp,
        "parameters, pairs or model",
    )?;
    let resumed_from_step = resumed.as_ref().map(|s| s.step);
    let mut state = resumed
        .unwrap_or_else(|| TrainState::fresh(SplitMix64::derive(o.seed, 0x9EF5), fp.clone()));
    let lengths: Vec<usize> = pairs
        .iter()
        .map(|p| p.chosen.tokens.len().max(p.rejected.tokens.len()))
        .collect();
    let mut order = DataOrder::new(lengths, o.batch_size, o.seed);
    order.restore(state.data);
    let mut trainer = Trainer::new(&mut m.model, None, lora, opt, None, o.max_grad_norm)?;
    let session = Instant::now();
    let (elapsed_before, session_start) = (state.elapsed_s, state.step);
    let stopping = |step: u64| params.stop_after.is_some_and(|n| step - session_start >= n);
    while state.step < o.steps && !stopping(state.step) {
        let t0 = Instant::now();
        let step = state.step;
        let lr = learning_rate(step, o.steps, o.warmup_steps, o.lr, o.min_lr_ratio);
        let micro: Vec<Vec<&PreferencePair>> = (0..o.grad_accum.max(1))
            .map(|_| order.next_batch().into_iter().map(|i| &pairs[i]).collect())
            .collect();
        let seed = state.rng.next_u64();
        let out = trainer.preference_step(&micro, &params.objective, lr, seed, pad, step)?;
        if params.log_every > 0 && ((step + 1) % params.log_every == 0 || step == 0) {
            tracing::info!(
                step = step + 1,
                loss = out.loss,
                margin = out.margin,
                accuracy = out.accuracy,
                grad_norm = out.grad_norm,
                lr,
                "preference step"
            );
        }
        state.step += 1;
        state.tokens_seen += out.tokens;
        state.data = order.position();
        state.adam_t = trainer.opt.t;
        state.elapsed_s = elapsed_before + session.elapsed().as_secs_f64();
        state.preference_history.push(PreferenceStepLog {
            step: state.step,
            lr,
            outcome: out,
            seconds: t0.elapsed().as_secs_f64(),
        });
        let every = params.checkpoint_every;
        if every > 0 && (state.step % every == 0 || state.step == o.steps || stopping(state.step)) {
            checkpoint::save(&ckpt_root, &trainer.lora, &trainer.opt, &state)?;
            if let Some(store) = resume {
                store.save(&ckpt_root, "checkpoints");
            }
        }
    }
    crate::model::train_kernels::pool::clear();

    // Outputs.
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    let completed = state.step >= o.steps;
    let lora = trainer.lora;
    if completed {
        lora.save_peft(out_dir, &model_dir.display().to_string())?;
        lora.attach(&mut m.model, 0)?;
        m.model.merge_lora()?;
        save_hf_dir(
            &m.model,
            &m.tokenizer,
            &out_dir.join("merged"),
            m.stored_dtype,
        )?;
    }
    let history = state.preference_history;
    let report = PreferReport {
        model: model_dir.display().to_string(),
        params: params.clone(),
        pairs_read: records.len(),
        pairs: pairs.len(),
        pairs_skipped: skipped,
        answers_truncated: truncated,
        reference_chosen_mean: ref_chosen_mean,
        reference_rejected_mean: ref_rejected_mean,
        steps: state.step,
        initial_loss: window(&history, false, |s| s.outcome.loss),
        final_loss: window(&history, true, |s| s.outcome.loss),
        final_margin: window(&history, true, |s| s.outcome.margin),
        final_accuracy: window(&history, true, |s| s.outcome.accuracy),
        train_s: state.elapsed_s,
        resumed_from_step,
        completed,
        history,
        self_play,
    };
    let path = out_dir.join("prefer.json");
    write_json_atomic(&path, &report).map_err(|e| StageError::io(&path, e))?;
    Ok(report)
}

/// SPIN's pairs: each record's answer (chosen) against `m`'s own answer to its prompt, for
/// `records`, the records `first_index..` of the whole prompt set: each
/// prompt samples from the stream of its index in the whole set, so a shard's answers are the
/// ones an unsharded run gives.
pub fn self_play_pairs(
    m: &HfModel,
    records: &[SftRecord],
    generation: &pruneforge_api::spec::GenerationSpec,
    iteration: u32,
    first_index: usize,
) -> Result<(Vec<PreferenceRecord>, SelfPlayReport)> {
    if !m.tokenizer.has_chat_template() {
        return Err(StageError::Input(
            "SPIN generates answers with the chat template, but the model's tokenizer has none"
                .into(),
        ));
    }
    let gen = GenerateParams::from_spec(generation, mix(generation.seed as u64, iteration as u64));
    let ctx = m.model.config.max_position_embeddings;
    let mut prompts = Vec::new();
    let mut kept = Vec::new();
    let mut streams = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let prompt = vec![ChatMessage::user(user_message(r))];
        let ids = m
            .tokenizer
            .encode(&m.tokenizer.apply_chat_template(&prompt, true)?, false)?;
        if ids.len() + 1 < ctx {
            prompts.push(ids);
            kept.push((prompt, r.output.trim().to_string()));
            streams.push((first_index + i) as u64);
        }
    }
    let mut answers = vec![String::new(); prompts.len()];
    let t0 = Instant::now();
    let stats = generate_with_streams(&m.model, &m.tokenizer, &prompts, &streams, &gen, |c| {
        answers[c.index] = c.text.trim().to_string();
        Ok(())
    })?;
    let seconds = t0.elapsed().as_secs_f64();
    let generated_tokens = stats.generated_tokens;
    let (mut identical, mut empty) = (0, 0);
    let mut pairs = Vec::new();
    for ((prompt, chosen), rejected) in kept.into_iter().zip(answers) {
        if rejected.is_empty() {
            empty += 1;
        } else if rejected == chosen {
            identical += 1;
        } else {
            pairs.push(PreferenceRecord {
                prompt,
                chosen,
                rejected,
            });
        }
    }
    let report = SelfPlayReport {
        iteration,
        prompts: prompts.len(),
        identical,
        empty,
        generated_tokens,
        tokens_per_s: generated_tokens as f64 / seconds.max(1e-9),
    };
    Ok((pairs, report))
}

/// Writes SPIN's pairs as `{prompt, chosen, rejected}` JSONL (the prompt's last user message).
pub(crate) fn write_pairs(path: &Path, pairs: &[PreferenceRecord]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        let prompt = p.prompt.last().map(|m| m.content.as_str()).unwrap_or("");
        let line =
            serde_json::json!({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    crate::util::fs::write_atomic(path, text.as_bytes()).map_err(|e| StageError::io(path, e))
}

/// The runner's settings for the API's parameters.
fn run_params(p: &PreferParams) -> PreferRunParams {
    PreferRunParams {
        objective: PreferenceObjective {
            beta: p.beta,
            loss: p.loss,
            label_smoothing: p.label_smoothing,
        },
        lora: LoraParams::from_spec(&p.lora),
        optimizer: OptimizerParams::from_spec(&p.optimizer),
        log_every: 10,
        checkpoint_every: p.checkpoint_every as u64,
        stop_after: None,
    }
}

/// Opens the input model with room for a LoRA step over `2 × batch` rows.
fn open(path: &Path, params: &PreferRunParams, compute: &Compute) -> Result<HfModel> {
    let o = &params.optimizer;
    super::context::open_model_checked_with_base(
        path,
        compute,
        params.lora.base_quantization,
        |cfg| {
            // The preference step keeps every layer's activations on every device (no per-layer
            // checkpointing yet), so the estimate counts them all.
            let mut need = crate::memory_plan::lora_training(
                cfg,
                compute.dtype,
                2 * o.batch_size.max(1),
                o.max_seq_len,
                params.lora.parameter_count(cfg),
                None,
                1024,
                false,
            );
            need.stage = "prefer".into();
            match params.lora.base_quantization {
                Some(base) => need.with_quantized_base(cfg, compute.dtype, base),
                None => need,
            }
        },
    )
}

pub fn run_request(p: &PreferParams, ctx: &StageContext) -> Result<Outcome> {
    let model_dir = ctx.model("model")?;
    let params = run_params(p);
    let m = open(&model_dir, &params, ctx.compute)?;
    let (records, self_play) = match &p.pairs {
        PreferencePairs::Dataset { dataset } => {
            let path = ctx.resolver.resolve(&dataset.uri)?;
            let all = load_preferences(&path)?;
            let records: Vec<PreferenceRecord> = all
                .into_iter()
                .skip(dataset.offset as usize)
                .take(dataset.limit.map_or(usize::MAX, |l| l as usize))
                .collect();
            (records, None)
        }
        PreferencePairs::SelfPlay { iteration } => {
            // The iteration's self-play stage made the pairs (sharded like distill).
            let (pairs, report) = super::self_play::gather(ctx.input("pairs")?)?;
            if report.iteration != *iteration {
                return Err(StageError::Input(format!(
                    "input `pairs` holds SPIN iteration {}'s answers, but this is iteration \
                     {iteration}",
                    report.iteration
                )));
            }
            tracing::info!(
                iteration,
                prompts = report.prompts,
                pairs = pairs.len(),
                identical = report.identical,
                "self-play pairs read"
            );
            std::fs::create_dir_all(ctx.out).map_err(|e| StageError::io(ctx.out, e))?;
            write_pairs(&ctx.out.join("pairs.jsonl"), &pairs)?;
            (pairs, Some(report))
        }
    };
    let r = run(
        m, &model_dir, &records, &params, ctx.out, self_play, ctx.resume,
    )?;
    // Checkpoints are resume state, not a result: keep them out of the artifact.
    let _ = std::fs::remove_dir_all(ctx.out.join("checkpoints"));
    Ok(Outcome::new(
        StageSummary::Prefer(contract::PreferSummary {
            pairs: r.pairs as u64,
            steps: r.steps,
            initial_loss: r.initial_loss,
            final_loss: r.final_loss,
            final_margin: r.final_margin,
            final_accuracy: r.final_accuracy,
        }),
        &[
            "prefer.json",
            "adapter_config.json",
            "adapter_model.safetensors",
            "merged/config.json",
        ],
    ))
}
