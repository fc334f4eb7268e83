//! Generation tasks (GSM8K, lm-eval `gsm8k`): greedy generation with the batched generator,
//! cut at the task's stop strings (and end-of-sequence tokens), then lm-eval's two filters:
//! `strict-match` (`#### <number>`) and `flexible-extract` (the last number), each compared with
//! the reference answer by `exact_match` after lm-eval's normalisation.
//!
//! As lm-eval does, prompts are cut on the left to `max_length - max_gen_tokens` tokens.

use serde_json::{json, Value};

use super::report::TaskOutcome;
use crate::data::metrics::{gsm8k_exact_match, MeanStderr};
use crate::data::tasks::gsm8k::{extract_flexible, extract_strict};
use crate::data::tasks::GenDoc;
use crate::error::{Result, StageError};
use crate::generate::{generate_all, GenerateParams, GenerationStats, SamplingParams};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// Generation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    pub batch_size: usize,
    /// lm-eval's `max_gen_toks`.
    pub max_gen_tokens: usize,
    /// Model window.
    pub max_length: usize,
}

/// Generates an answer for every document and scores it.
pub fn evaluate(
    model: &Llama,
    tokenizer: &Tokenizer,
    docs: &[GenDoc],
    opts: &GenOptions,
    stats: &mut GenerationStats,
) -> Result<TaskOutcome> {
    if opts.max_gen_tokens == 0 || opts.max_gen_tokens >= opts.max_length {
        return Err(StageError::Input(format!(
            "max_gen_tokens must be between 1 and max_length - 1 ({}), got {}",
            opts.max_length.saturating_sub(1),
            opts.max_gen_tokens
        )));
    }
    let max_prompt = opts.max_length - opts.max_gen_tokens;
    let mut texts: Vec<Option<(String, usize, usize, Value)>> = vec![None; docs.len()];
    // Documents with the same stop strings are generated together.
    let mut groups: Vec<(Vec<String>, Vec<usize>)> = Vec::new();
    for (i, d) in docs.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| *s == d.stop) {
            Some((_, members)) => members.push(i),
            None => groups.push((d.stop.clone(), vec![i])),
        }
    }
    for (stop, members) in groups {
        let prompts = members
            .iter()
            .map(|&i| {
                let ids = tokenizer.encode(&docs[i].prompt, false)?;
                let cut = ids.len().saturating_sub(max_prompt);
                Ok(ids[cut..].to_vec())
            })
            .collect::<Result<Vec<Vec<u32>>>>()?;
        let params = GenerateParams {
            max_new_tokens: opts.max_gen_tokens,
            sampling: SamplingParams::default(),
            stop,
            stop_on_eos: true,
            batch_size: opts.batch_size,
        };
        let (completions, s) = generate_all(model, tokenizer, &prompts, &params)?;
        stats.prompts += s.prompts;
        stats.prompt_tokens += s.prompt_tokens;
        stats.generated_tokens += s.generated_tokens;
        stats.wall_s += s.wall_s;
        stats.prefill_s += s.prefill_s;
        stats.decode_s += s.decode_s;
        stats.tokens_per_s = stats.generated_tokens as f64 / stats.wall_s.max(1e-9);
        for c in completions {
            let doc = members[c.index];
            let finish = serde_json::to_value(&c.finish).unwrap_or(Value::Null);
            texts[doc] = Some((c.text, c.prompt_tokens, c.tokens.len(), finish));
        }
    }
    let mut out = TaskOutcome::default();
    let (mut strict_hits, mut flex_hits) = (Vec::new(), Vec::new());
    for (doc, text) in docs.iter().zip(texts) {
        let (generation, prompt_tokens, new_tokens, finish) = text.ok_or_else(|| {
            StageError::Input(format!("internal: no generation for document {}", doc.idx))
        })?;
        let strict = extract_strict(&generation);
        let flexible = extract_flexible(&generation);
        let strict_ok = gsm8k_exact_match(&strict, &doc.reference);
        let flex_ok = gsm8k_exact_match(&flexible, &doc.reference);
        strict_hits.push(f64::from(u8::from(strict_ok)));
        flex_hits.push(f64::from(u8::from(flex_ok)));
        out.items.push(json!({
            "task": doc.task.as_str(),
            "idx": doc.idx,
            "prompt_tokens": prompt_tokens,
            "generated_tokens": new_tokens,
            "finish": finish,
            "generation": generation,
            "filtered": {"strict-match": strict, "flexible-extract": flexible},
            "gold": doc.gold,
            "exact_match": {"strict-match": strict_ok, "flexible-extract": flex_ok},
            "correct": flex_ok,
            "score": f64::from(u8::from(flex_ok)),
        }));
    }
    for (filter, hits) in [
        ("strict-match", &strict_hits),
        ("flexible-extract", &flex_hits),
    ] {
        let m = MeanStderr::of(hits);
        out.metrics.push((format!("exact_match,{filter}"), m.value));
        out.metrics
            .push((format!("exact_match_stderr,{filter}"), m.stderr));
    }
    Ok(out)
}
