//! Next-token selection: greedy, or temperature + top-k + top-p (nucleus) sampling.

use crate::util::rng::SplitMix64;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }
}

/// Index of the largest logit (first on ties, like torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// The sampling distribution after temperature, top-k and top-p, as (token, probability)
/// pairs (probabilities sum to 1). Used by sampling and by speculative rejection sampling.
pub fn distribution(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    let t = p.temperature.max(1e-6) as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l as f64 - max) / t).exp()))
        .collect();
    let needs_sort = p.top_k > 0 || p.top_p < 1.0;
    if needs_sort {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if p.top_k > 0 && p.top_k < probs.len() {
            probs.truncate(p.top_k);
        }
    }
    let total: f64 = probs.iter().map(|x| x.1).sum();
    for x in &mut probs {
        x.1 /= total;
    }
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, x) in probs.iter().enumerate() {
            acc += x.1;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let total: f64 = probs.iter().map(|x| x.1).sum();
        for x in &mut probs {
            x.1 /= total;
        }
    }
    probs
}

/// Draws from a (token, probability) list.
pub fn draw(dist: &[(u32, f64)], rng: &mut SplitMix64) -> u32 {
    let u = rng.next_f64();
    let mut acc = 0.0;
    for &(tok, p) in dist {
        acc += p;
        if u < acc {
            return tok;
        }
    }
    dist.last().map(|x| x.0).unwrap_or(0)
}

pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut SplitMix64) -> u32 {
    if p.is_greedy() {
        argmax(logits)
    } else {
        draw(&distribution(logits, p), rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_first_max() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            ..Default::default()
        };
        let d = distribution(&[10.0, 0.0, 0.0], &p);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, 0);
    }

    #[test]
    fn sampling_is_reproducible() {
        let p = SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 0,
            seed: 3,
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<u32> = (0..20)
            .map(|i| sample(&logits, &p, &mut SplitMix64::for_item(3, i)))
            .collect();
        let b: Vec<u32> = (0..20)
            .map(|i| sample(&logits, &p, &mut SplitMix64::for_item(3, i)))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 1);
    }
}
