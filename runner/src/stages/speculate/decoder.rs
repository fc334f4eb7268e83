//! Speculative decoding of one prompt: the draft proposes k tokens, the target verifies them
//! in one forward pass. Greedy acceptance reproduces target-only greedy decoding token for
//! token; with temperature > 0 the standard rejection sampling (Leviathan et al. 2023, Chen et
//! al. 2023) keeps the target's output distribution.

use crate::generate::sampler::{argmax, distribution, draw, SamplingParams};
use crate::generate::SplitMix64;
use crate::model::error::{ModelError, Result};
use crate::model::{KvCache, Llama};
use candle_core::Tensor;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SpecOutput {
    pub tokens: Vec<u32>,
    /// Verification steps (target forward passes after the prompt).
    pub steps: usize,
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

fn feed(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
    let ids = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), model.device())?;
    let h = model.forward_cached(&ids, cache, &[0])?;
    logits_rows(model, &h)
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
    pub k: usize,
    pub max_new_tokens: usize,
    pub sampling: &'a SamplingParams,
    pub eos: &'a [u32],
    pub stream: u64,
}

/// Generates up to `max_new_tokens` after `prompt` (stopping after an end-of-sequence token).
pub fn speculative_generate(
    target: &Llama,
    draft: &Llama,
    prompt: &[u32],
    cfg: &SpecConfig<'_>,
) -> Result<SpecOutput> {
    if cfg.k == 0 {
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
    let cap = prompt.len() + cfg.max_new_tokens + cfg.k + 2;
    let mut tc = target.new_cache(1, cap);
    let mut dc = draft.new_cache(1, cap);
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
    let t_logits = feed(target, &mut tc, prompt)?;
    feed(draft, &mut dc, &prompt[..prompt.len() - 1])?;
    let mut draft_pending = vec![prompt[prompt.len() - 1]];
    let first = pick(&t_logits[t_logits.len() - 1], &mut rng);
    let mut out = SpecOutput {
        tokens: vec![first],
        ..Default::default()
    };
    let mut last = first;
    while out.tokens.len() < cfg.max_new_tokens && !cfg.eos.contains(&last) {
        let k = cfg.k.min(cfg.max_new_tokens - out.tokens.len());
        // Draft k tokens.
        draft_pending.push(last);
        let mut proposals = Vec::with_capacity(k);
        let mut draft_dists = Vec::with_capacity(k);
        let mut pending = std::mem::take(&mut draft_pending);
        for _ in 0..k {
            let rows = feed(draft, &mut dc, &pending)?;
            let logits = &rows[rows.len() - 1];
            let tok = if greedy {
                argmax(logits)
            } else {
                let d = distribution(logits, cfg.sampling);
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
