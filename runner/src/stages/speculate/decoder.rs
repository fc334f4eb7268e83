//! Speculative decoding of one prompt: the draft proposes k tokens, the target verifies them
//! in one forward pass. Greedy acceptance reproduces target-only greedy decoding token for
//! token; with temperature > 0 the standard rejection sampling (Leviathan et al. 2023, Chen et
//! al. 2023) keeps the target's output distribution.

use super::draft_length::DraftLength;
use crate::generate::sampler::{argmax, distribution, draw, SamplingParams};
use crate::generate::SplitMix64;
use crate::model::error::{ModelError, Result};
use crate::model::linear::FusedLinear;
use crate::model::{KvCache, Llama};
use candle_core::Tensor;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SpecOutput {
    pub tokens: Vec<u32>,
    /// Verification steps (target passes over drafted tokens).
    pub steps: usize,
    /// Target passes that decoded one token without a draft (the draft length policy chose 0).
    pub target_only_steps: usize,
    pub drafted: usize,
    pub accepted: usize,
}

fn logits_rows(model: &Llama, hidden: &Tensor) -> Result<Vec<Vec<f32>>> {
    let (_, t, _) = hidden.dims3()?;
    let l = model
        .logits(hidden)?
        .reshape((t, model.config.vocab_size))?;
    Ok(l.to_vec2::<f32>()?)
}

/// Feeds `tokens` and returns the logits of every one of them.
fn feed(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
    let h = forward(model, cache, tokens)?;
    logits_rows(model, &h)
}

/// Feeds `tokens` and returns the logits of the last one only (a prompt or a catch-up needs no
/// more: the LM head over every row would cost more than the layers).
fn feed_last(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>> {
    let h = forward(model, cache, tokens)?;
    let last = h.narrow(1, tokens.len() - 1, 1)?;
    Ok(logits_rows(model, &last)?.remove(0))
}

fn forward(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Result<Tensor> {
    let ids = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), model.device())?;
    model.forward_cached(&ids, cache, &[0])
}

/// Share of a batch-1 decoding pass spent outside reading the projections and the LM head
/// (attention, norms, the embedding lookup, thread hand-offs): what a draft costs however few
/// bytes its weights take. Fitted to SmolLM2-135M on 2 cores: its 8-bit copy, alone, decoded
/// at 0.43-0.44 of the f32 model's time (`--example spec_int8`), with 0.28 of its bytes.
const FIXED_STEP_SHARE: f64 = 0.2;

/// A draft pass in target passes. A decoding pass is bound by reading the weights once, so
/// beyond a fixed share ([`FIXED_STEP_SHARE`]) it costs the bytes its projections and LM head
/// take: 4 a weight in f32, 1.125 for an 8-bit copy. Counted from the shapes, not timed, so
/// that draft lengths (and sampled output) do not depend on the machine's speed of the moment.
pub fn draft_cost(target: &Llama, draft: &Llama) -> f64 {
    fn bytes_per_token(m: &Llama) -> f64 {
        let per_weight = |int8: bool| {
            if int8 {
                1.0 + 4.0 / crate::model::kernels::skinny_int8::BLOCK as f64
            } else {
                m.dtype().size_in_bytes() as f64
            }
        };
        // Projection weights are 2-D by construction.
        let weights = |lin: &FusedLinear| lin.weight.dims2().map_or(0, |(r, c)| r * c) as f64;
        let layers: f64 = m
            .layers
            .iter()
            .flat_map(|l| l.projections())
            .map(|(_, lin)| weights(lin) * per_weight(lin.decode_int8.is_some()))
            .sum();
        let c = &m.config;
        let head = (c.hidden_size * c.vocab_size) as f64;
        layers + head * per_weight(m.lm_head_int8.is_some())
    }
    let share = bytes_per_token(draft) / bytes_per_token(target).max(1.0);
    FIXED_STEP_SHARE + (1.0 - FIXED_STEP_SHARE) * share
}

fn probs_of(dist: &[(u32, f64)], tok: u32) -> f64 {
    dist.iter().find(|x| x.0 == tok).map(|x| x.1).unwrap_or(0.0)
}

/// One step of speculative rejection sampling: keep the draft's token `x` (drawn from `q`)
/// with probability min(1, p(x)/q(x)) → `None`; otherwise draw from the normalised residual
/// max(0, p − q) → `Some(token)`. The result is distributed exactly as `p`.
pub fn rejection_step(
    p: &[(u32, f64)],
    q: &[(u32, f64)],
    x: u32,
    rng: &mut SplitMix64,
) -> Option<u32> {
    let (px, qx) = (probs_of(p, x), probs_of(q, x));
    if qx > 0.0 && rng.next_f64() < (px / qx).min(1.0) {
        return None;
    }
    let mut residual: Vec<(u32, f64)> = p
        .iter()
        .map(|&(t, pt)| (t, (pt - probs_of(q, t)).max(0.0)))
        .filter(|x| x.1 > 0.0)
        .collect();
    let z: f64 = residual.iter().map(|x| x.1).sum();
    Some(if z > 0.0 {
        residual.iter_mut().for_each(|x| x.1 /= z);
        draw(&residual, rng)
    } else {
        draw(p, rng)
    })
}

pub struct SpecConfig<'a> {
    /// The draft computes a prompt as the target does (an 8-bit copy runs prompts of more than
    /// [`crate::model::kernels::skinny_int8::MAX_ROWS`] tokens on the shared f32 weights, and
    /// shorter ones differ only by rounding), so it starts from a copy of the target's prompt
    /// cache instead of its own pass over the prompt. The output does not depend on it: the
    /// target verifies every token.
    pub draft_shares_prompt_cache: bool,
    pub max_new_tokens: usize,
    pub sampling: &'a SamplingParams,
    pub eos: &'a [u32],
    pub stream: u64,
}

/// Generates up to `max_new_tokens` after `prompt` (stopping after an end-of-sequence token).
/// `lengths` chooses each draft length and learns the acceptance; pass the same one for every
/// prompt of a run so that it keeps what it measured.
pub fn speculative_generate(
    target: &Llama,
    draft: &Llama,
    prompt: &[u32],
    cfg: &SpecConfig<'_>,
    lengths: &mut DraftLength,
) -> Result<SpecOutput> {
    if lengths.max() == 0 {
        return Err(ModelError::Input("draft_tokens must be ≥ 1".into()));
    }
    if target.config.vocab_size != draft.config.vocab_size {
        return Err(ModelError::Input(format!(
            "draft vocabulary ({}) differs from the target's ({})",
            draft.config.vocab_size, target.config.vocab_size
        )));
    }
    if prompt.is_empty() {
        return Err(ModelError::Input("empty prompt".into()));
    }
    let cache_shape = |m: &Llama| {
        (
            m.num_layers(),
            m.config.num_key_value_heads,
            m.config.head_dim,
        )
    };
    if cfg.draft_shares_prompt_cache && cache_shape(draft) != cache_shape(target) {
        return Err(ModelError::Input(
            "a draft sharing the prompt cache must have the target's shape".into(),
        ));
    }
    let cap = prompt.len() + cfg.max_new_tokens + lengths.max() + 2;
    let mut tc = target.new_cache(1, cap);
    let mut rng = SplitMix64::for_item(cfg.sampling.seed, cfg.stream);
    let greedy = cfg.sampling.is_greedy();
    let pick = |logits: &[f32], rng: &mut SplitMix64| {
        if greedy {
            argmax(logits)
        } else {
            draw(&distribution(logits, cfg.sampling), rng)
        }
    };
    // Prefill both; the first new token comes from the target.
    let t_logits = feed_last(target, &mut tc, prompt)?;
    // Tokens the target has and the draft has not seen yet.
    let mut draft_pending = vec![];
    let mut dc = if cfg.draft_shares_prompt_cache {
        tc.clone()
    } else {
        let mut dc = draft.new_cache(1, cap);
        if prompt.len() > 1 {
            forward(draft, &mut dc, &prompt[..prompt.len() - 1])?;
        }
        draft_pending.push(prompt[prompt.len() - 1]);
        dc
    };
    let first = pick(&t_logits, &mut rng);
    let mut out = SpecOutput {
        tokens: vec![first],
        ..Default::default()
    };
    let mut last = first;
    while out.tokens.len() < cfg.max_new_tokens && !cfg.eos.contains(&last) {
        let k = lengths.next(cfg.max_new_tokens - out.tokens.len());
        if k == 0 {
            // The target alone; the draft catches up when it drafts again.
            let row = feed_last(target, &mut tc, &[last])?;
            draft_pending.push(last);
            out.target_only_steps += 1;
            last = pick(&row, &mut rng);
            out.tokens.push(last);
            continue;
        }
        // Draft k tokens.
        draft_pending.push(last);
        let mut proposals = Vec::with_capacity(k);
        let mut draft_dists = Vec::with_capacity(k);
        let mut pending = std::mem::take(&mut draft_pending);
        for _ in 0..k {
            let logits = feed_last(draft, &mut dc, &pending)?;
            let tok = if greedy {
                argmax(&logits)
            } else {
                let d = distribution(&logits, cfg.sampling);
                let t = draw(&d, &mut rng);
                draft_dists.push(d);
                t
            };
            proposals.push(tok);
            pending = vec![tok];
        }
        // Verify: the target sees `last` and the k proposals in one pass.
        let base = tc.len(0);
        let mut verify = vec![last];
        verify.extend_from_slice(&proposals);
        let rows = feed(target, &mut tc, &verify)?;
        let mut accepted = 0;
        let mut next = None;
        for i in 0..k {
            if greedy {
                let t = argmax(&rows[i]);
                if t == proposals[i] {
                    accepted += 1;
                } else {
                    next = Some(t);
                    break;
                }
            } else {
                let p = distribution(&rows[i], cfg.sampling);
                match rejection_step(&p, &draft_dists[i], proposals[i], &mut rng) {
                    None => accepted += 1,
                    Some(tok) => {
                        next = Some(tok);
                        break;
                    }
                }
            }
        }
        let next = match next {
            Some(t) => t,
            None => pick(&rows[k], &mut rng),
        };
        out.steps += 1;
        out.drafted += k;
        out.accepted += accepted;
        lengths.record(k, accepted);
        // Keep `last` and the accepted proposals in both caches.
        tc.truncate(0, base + 1 + accepted)?;
        let keep = base + 1 + accepted;
        if dc.len(0) >= keep {
            dc.truncate(0, keep)?;
            draft_pending = vec![];
        } else {
            // Every proposal was accepted: the draft never saw the last one.
            draft_pending = vec![proposals[k - 1]];
        }
        let mut new_tokens: Vec<u32> = proposals[..accepted].to_vec();
        new_tokens.push(next);
        for t in new_tokens {
            if out.tokens.len() >= cfg.max_new_tokens {
                break;
            }
            out.tokens.push(t);
            last = t;
            if cfg.eos.contains(&t) {
                break;
            }
        }
        // `last` is pushed to the draft at the top of the loop; the target gets it on verify.
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_sampling_preserves_the_target_distribution() {
        let p = vec![(0u32, 0.5), (1, 0.3), (2, 0.2)];
        let q = vec![(0u32, 0.2), (1, 0.2), (2, 0.6)];
        let mut rng = SplitMix64::new(11);
        let n = 200_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            let x = draw(&q, &mut rng);
            let tok = rejection_step(&p, &q, x, &mut rng).unwrap_or(x);
            counts[tok as usize] += 1;
        }
        for (i, &(_, pi)) in p.iter().enumerate() {
            let f = counts[i] as f64 / n as f64;
            assert!((f - pi).abs() < 0.01, "token {i}: {f} vs {pi}");
        }
    }
}
