//! Batched generation with a KV cache and continuous refilling: every row of the batch holds
//! one prompt; when a row finishes, the next prompt is prefilled into it while the other rows
//! keep decoding.

use super::sampler::{sample, SamplingParams};
use super::stop::{find_stop, FinishReason};
use crate::model::error::{ModelError, Result};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::util::rng::SplitMix64;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop strings; the text is cut before the earliest one.
    pub stop: Vec<String>,
    /// Stop at the tokenizer's end-of-sequence tokens.
    pub stop_on_eos: bool,
    /// Rows decoded together.
    pub batch_size: usize,
}

impl GenerateParams {
    /// The sampling a resource asks for (`spec.distillation.generation`), with sampling seed
    /// `seed`; stops at end of sequence.
    pub fn from_spec(g: &pruneforge_api::spec::GenerationSpec, seed: u64) -> Self {
        GenerateParams {
            max_new_tokens: g.max_new_tokens as usize,
            sampling: SamplingParams {
                temperature: g.temperature as f32,
                top_p: g.top_p as f32,
                top_k: 0,
                seed,
            },
            stop: Vec::new(),
            stop_on_eos: true,
            batch_size: g.batch_size as usize,
        }
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            stop_on_eos: true,
            batch_size: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Completion {
    /// Position of the prompt in the input list.
    pub index: usize,
    pub prompt_tokens: usize,
    /// Generated ids (an end-of-sequence token, if produced, is the last id).
    pub tokens: Vec<u32>,
    /// Decoded text without special tokens, cut at a stop string.
    pub text: String,
    pub finish: FinishReason,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompts: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub wall_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Generated tokens per second of wall time (prefill included).
    pub tokens_per_s: f64,
}

struct Active {
    index: usize,
    prompt_len: usize,
    limit: usize,
    tokens: Vec<u32>,
    rng: SplitMix64,
}

/// What to do with a row after a new token.
fn check_finish(
    a: &Active,
    tok: &Tokenizer,
    params: &GenerateParams,
) -> Result<Option<(String, FinishReason)>> {
    let last = *a.tokens.last().unwrap_or(&0);
    if params.stop_on_eos && tok.eos_ids.contains(&last) {
        let text = tok.decode(&a.tokens[..a.tokens.len() - 1], true)?;
        let text = match find_stop(&text, &params.stop) {
            Some((i, s)) => {
                return Ok(Some((
                    text[..i].to_string(),
                    FinishReason::Stop(s.to_string()),
                )))
            }
            None => text,
        };
        return Ok(Some((text, FinishReason::Eos)));
    }
    if !params.stop.is_empty() || a.tokens.len() >= a.limit {
        let text = tok.decode(&a.tokens, true)?;
        if let Some((i, s)) = find_stop(&text, &params.stop) {
            return Ok(Some((
                text[..i].to_string(),
                FinishReason::Stop(s.to_string()),
            )));
        }
        if a.tokens.len() >= a.limit {
            return Ok(Some((text, FinishReason::Length)));
        }
    }
    Ok(None)
}

fn last_logits(model: &Llama, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (b, t, _) = hidden.dims3()?;
    let last = hidden.narrow(1, t - 1, 1)?;
    let logits = model.logits(&last)?.reshape((b, model.config.vocab_size))?;
    Ok(logits.to_vec2::<f32>()?)
}

/// Generates a completion for every prompt; `on_complete` is called as each finishes (not
/// necessarily in input order).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
    on_complete: impl FnMut(Completion) -> Result<()>,
) -> Result<GenerationStats> {
    let streams: Vec<u64> = (0..prompts.len() as u64).collect();
    generate_with_streams(model, tokenizer, prompts, &streams, params, on_complete)
}

/// Like [`generate`], with the random stream of each prompt given explicitly (e.g. its index
/// in the whole data set), so sampled outputs do not depend on batching, sharding or resuming.
pub fn generate_with_streams(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    streams: &[u64],
    params: &GenerateParams,
    mut on_complete: impl FnMut(Completion) -> Result<()>,
) -> Result<GenerationStats> {
    if streams.len() != prompts.len() {
        return Err(ModelError::Input(format!(
            "{} streams for {} prompts",
            streams.len(),
            prompts.len()
        )));
    }
    params.sampling.validate().map_err(ModelError::Input)?;
    if params.batch_size == 0 {
        return Err(ModelError::Input("batch_size must be ≥ 1".into()));
    }
    let ctx = model.config.max_position_embeddings;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(ModelError::Input(format!("prompt {i} is empty")));
        }
        if p.len() >= ctx {
            return Err(ModelError::Input(format!(
                "prompt {i} has {} tokens; the model context is {ctx}",
                p.len()
            )));
        }
    }
    let start = Instant::now();
    let mut stats = GenerationStats {
        prompts: prompts.len(),
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        ..Default::default()
    };
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = (longest + params.max_new_tokens).min(ctx);
    // A non-ragged cache (other devices) advances all rows together: one prompt at a time.
    let cache_rows = if model.ragged_cache() {
        params.batch_size.min(prompts.len().max(1))
    } else {
        1
    };
    let mut cache = model.new_cache(cache_rows, capacity.max(1));
    let rows = if cache.is_ragged() { cache.rows() } else { 1 };
    let mut pending: VecDeque<usize> = (0..prompts.len()).collect();
    let mut slots: Vec<Option<Active>> = (0..rows).map(|_| None).collect();
    let device = Device::Cpu;

    loop {
        // Refill free rows with new prompts (prefill one prompt at a time).
        #[allow(clippy::needless_range_loop)]
        for slot in 0..rows {
            while slots[slot].is_none() {
                let Some(index) = pending.pop_front() else {
                    break;
                };
                let prompt = &prompts[index];
                cache.reset_row(slot);
                let t0 = Instant::now();
                let ids = Tensor::from_vec(prompt.clone(), (1, prompt.len()), model.device())?;
                let hidden = model.forward_cached(&ids, &mut cache, &[slot])?;
                let logits = last_logits(model, &hidden)?;
                stats.prefill_s += t0.elapsed().as_secs_f64();
                let mut a = Active {
                    index,
                    prompt_len: prompt.len(),
                    limit: params.max_new_tokens.min(ctx - prompt.len()),
                    tokens: Vec::new(),
                    rng: SplitMix64::for_item(params.sampling.seed, streams[index]),
                };
                if a.limit == 0 {
                    on_complete(Completion {
                        index,
                        prompt_tokens: a.prompt_len,
                        tokens: vec![],
                        text: String::new(),
                        finish: FinishReason::Length,
                    })?;
                    continue;
                }
                a.tokens
                    .push(sample(&logits[0], &params.sampling, &mut a.rng));
                stats.generated_tokens += 1;
                match check_finish(&a, tokenizer, params)? {
                    Some((text, finish)) => on_complete(Completion {
                        index,
                        prompt_tokens: a.prompt_len,
                        tokens: a.tokens,
                        text,
                        finish,
                    })?,
                    None => slots[slot] = Some(a),
                }
            }
        }
        let active: Vec<usize> = (0..rows).filter(|&s| slots[s].is_some()).collect();
        if active.is_empty() {
            break;
        }
        let t0 = Instant::now();
        let last: Vec<u32> = active
            .iter()
            .map(|&s| {
                slots[s]
                    .as_ref()
                    .and_then(|a| a.tokens.last().copied())
                    .unwrap_or(0)
            })
            .collect();
        let ids = Tensor::from_vec(last, (active.len(), 1), &device)?.to_device(model.device())?;
        let hidden = model.forward_cached(&ids, &mut cache, &active)?;
        let logits = last_logits(model, &hidden)?;
        stats.decode_s += t0.elapsed().as_secs_f64();
        for (k, &slot) in active.iter().enumerate() {
            let Some(a) = slots[slot].as_mut() else {
                continue;
            };
            let next = sample(&logits[k], &params.sampling, &mut a.rng);
            a.tokens.push(next);
            stats.generated_tokens += 1;
            if let Some((text, finish)) = check_finish(a, tokenizer, params)? {
                if let Some(a) = slots[slot].take() {
                    on_complete(Completion {
                        index: a.index,
                        prompt_tokens: a.prompt_len,
                        tokens: a.tokens,
                        text,
                        finish,
                    })?;
                }
            }
        }
    }
    stats.wall_s = start.elapsed().as_secs_f64();
    stats.tokens_per_s = stats.generated_tokens as f64 / stats.wall_s.max(1e-9);
    Ok(stats)
}

/// Convenience: all completions, in input order.
pub fn generate_all(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &GenerateParams,
) -> Result<(Vec<Completion>, GenerationStats)> {
    let mut out: Vec<Option<Completion>> = vec![None; prompts.len()];
    let stats = generate(model, tokenizer, prompts, params, |c| {
        let i = c.index;
        out[i] = Some(c);
        Ok(())
    })?;
    Ok((out.into_iter().flatten().collect(), stats))
}
