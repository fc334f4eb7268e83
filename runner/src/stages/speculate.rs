//! Stage `speculate`: speculative decoding with the pruned (or merged) model, or an 8-bit copy
//! of the base ([`crate::model::Llama::with_int8_decoding`]), drafting for the base model. Reports the acceptance rate (accepted ÷ drafted), the mean accepted length per
//! verification step, and tokens/s with and without speculation on prompts from a data set.
//! With greedy decoding the output is checked to equal target-only decoding token for token.

pub mod decoder;
pub mod draft_length;

use crate::data::sft::SftRecord;
use crate::device::Compute;
use crate::generate::{generate_all, GenerateParams, SamplingParams};
use crate::loader::open_model_on;
use crate::resolve::Resolver;
use crate::stages::{Outcome, Result, StageContext, StageError};
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::util::fs::write_json_atomic;
use crate::util::progress::Progress;
use decoder::{speculative_generate, SpecConfig};
use draft_length::DraftLength;
use pruneforge_api::contract::{self, StageSummary};
pub use pruneforge_api::params::SpeculateParams;
use pruneforge_api::spec::DraftModel;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SpeculateSummary {
    pub prompts: usize,
    /// Most tokens drafted per verification; each step's length is chosen from the measured
    /// acceptance ([`draft_length::DraftLength`]).
    pub draft_tokens: usize,
    /// A draft pass in target passes (the share of the target's weights it reads).
    #[serde(default)]
    pub draft_cost: f64,
    /// Target passes that decoded alone because no draft length paid.
    #[serde(default)]
    pub target_only_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
    /// accepted ÷ drafted.
    pub acceptance_rate: f64,
    /// Accepted draft tokens per verification step.
    pub mean_accepted_length: f64,
    /// Tokens produced per target forward pass after the prompt (verifications and
    /// target-only passes).
    pub tokens_per_target_pass: f64,
    pub generated_tokens: usize,
    pub speculative_tok_s: f64,
    pub baseline_tok_s: f64,
    /// speculative ÷ baseline tokens/s.
    pub speedup: f64,
    /// Greedy runs: prompts whose speculative output equals target-only decoding.
    pub identical_to_target: Option<usize>,
}

/// The prompts speculation decodes from: each record's instruction (and input) as one user
/// turn of the chat template, ready for the assistant's answer.
pub fn chat_prompts(records: &[SftRecord], tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    Ok(records
        .iter()
        .map(|r| {
            let msg = ChatMessage::user(super::distill::instruction_text(r));
            tokenizer.encode_chat(&[msg], true)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

pub fn run(
    target_dir: &Path,
    draft_dir: &Path,
    params: &SpeculateParams,
    out_dir: &Path,
    resolver: &Resolver,
    compute: &Compute,
) -> Result<SpeculateSummary> {
    let data = super::inputs::load_sft(&params.prompts, resolver)?;
    if data.records.is_empty() {
        return Err(StageError::Input(
            "speculative.prompts selects no records".into(),
        ));
    }
    let kv = 1024 + params.max_new_tokens as usize;
    let target = super::context::open_model_checked(target_dir, compute, |cfg| {
        crate::memory_plan::inference("speculate", cfg, compute.dtype, 2, 1, 1024, 1024, kv, false)
    })?;
    let draft = match params.draft {
        DraftModel::Int8 => target.model.with_int8_decoding()?,
        DraftModel::Pruned | DraftModel::Merged => {
            let draft = open_model_on(draft_dir, &compute.device, compute.dtype)?;
            if draft.tokenizer.vocab_size() != target.tokenizer.vocab_size() {
                return Err(StageError::Input(
                    "the draft and target tokenizers differ".into(),
                ));
            }
            draft.model
        }
    };
    // An 8-bit copy runs prompts on the target's own f32 weights: its prompt cache is the
    // target's.
    let shares_prompt = params.draft == DraftModel::Int8;
    let prompts = chat_prompts(&data.records, &target.tokenizer)?;
    let sampling = SamplingParams {
        temperature: params.temperature as f32,
        top_p: 1.0,
        top_k: 0,
        seed: params.seed as u64,
    };
    let max_new = params.max_new_tokens as usize;
    // Baseline: the target alone, one prompt at a time (as speculative decoding runs).
    let base_params = GenerateParams {
        max_new_tokens: max_new,
        sampling: sampling.clone(),
        stop: vec![],
        stop_on_eos: true,
        batch_size: 1,
    };
    let t0 = Instant::now();
    let (baseline, base_stats) =
        generate_all(&target.model, &target.tokenizer, &prompts, &base_params)?;
    let base_s = t0.elapsed().as_secs_f64();
    let mut summary = SpeculateSummary {
        prompts: prompts.len(),
        draft_tokens: params.draft_tokens as usize,
        draft_cost: decoder::draft_cost(&target.model, &draft),
        ..Default::default()
    };
    let mut identical = 0;
    let mut log = String::new();
    let mut progress = Progress::new("speculate", prompts.len() as u64);
    let mut lengths = DraftLength::new(
        params.draft_tokens as usize,
        true,
        decoder::draft_cost(&target.model, &draft),
    );
    let t1 = Instant::now();
    for (i, p) in prompts.iter().enumerate() {
        let cfg = SpecConfig {
            draft_shares_prompt_cache: shares_prompt,
            max_new_tokens: max_new,
            sampling: &sampling,
            eos: &target.tokenizer.eos_ids,
            stream: i as u64,
        };
        let out = speculative_generate(&target.model, &draft, p, &cfg, &mut lengths)?;
        summary.drafted += out.drafted;
        summary.target_only_steps += out.target_only_steps;
        summary.accepted += out.accepted;
        summary.generated_tokens += out.tokens.len();
        let same = out.tokens == baseline[i].tokens;
        identical += same as usize;
        let line = serde_json::json!({"index": i, "steps": out.steps,
            "target_only_steps": out.target_only_steps, "drafted": out.drafted,
            "accepted": out.accepted, "tokens": out.tokens.len(), "identical_to_target": same,
            "text": target.tokenizer.decode(&out.tokens, true)?});
        log.push_str(&line.to_string());
        log.push('\n');
        summary.mean_accepted_length += out.steps as f64; // steps, normalised below
        progress.inc(&format!(
            "accepted {}/{}",
            summary.accepted, summary.drafted
        ));
    }
    progress.finish();
    let spec_s = t1.elapsed().as_secs_f64();
    let steps = summary.mean_accepted_length.max(1.0);
    summary.acceptance_rate = summary.accepted as f64 / summary.drafted.max(1) as f64;
    summary.mean_accepted_length = summary.accepted as f64 / steps;
    let passes = steps + summary.target_only_steps as f64;
    summary.tokens_per_target_pass = (summary.accepted as f64 + passes) / passes;
    summary.speculative_tok_s = summary.generated_tokens as f64 / spec_s.max(1e-9);
    summary.baseline_tok_s = base_stats.generated_tokens as f64 / base_s.max(1e-9);
    summary.speedup = summary.speculative_tok_s / summary.baseline_tok_s.max(1e-9);
    summary.identical_to_target = sampling.is_greedy().then_some(identical);
    std::fs::create_dir_all(out_dir).map_err(|e| StageError::io(out_dir, e))?;
    crate::util::fs::write_atomic(&out_dir.join("speculate.jsonl"), log.as_bytes())
        .map_err(|e| StageError::io(out_dir, e))?;
    write_json_atomic(&out_dir.join("speculate.json"), &summary)
        .map_err(|e| StageError::io(out_dir, e))?;
    tracing::info!(
        acceptance_rate = summary.acceptance_rate,
        speedup = summary.speedup,
        mean_accepted_length = summary.mean_accepted_length,
        "speculative decoding done"
    );
    Ok(summary)
}

/// The stage contract's `speculate`: input `draft` drafts for input `target`.
pub fn run_request(p: &SpeculateParams, ctx: &StageContext) -> Result<Outcome> {
    let s = run(
        &ctx.model("target")?,
        &ctx.model("draft")?,
        p,
        ctx.out,
        ctx.resolver,
        ctx.compute,
    )?;
    Ok(Outcome::new(
        StageSummary::Speculate(contract::SpeculateSummary {
            acceptance_rate: s.acceptance_rate,
            mean_accepted_length: s.mean_accepted_length,
            speedup: s.speedup,
            draft_tokens: s.draft_tokens as u32,
        }),
        &["speculate.json", "speculate.jsonl"],
    ))
}
