//! How many tokens to draft before each verification, chosen from the acceptance measured so
//! far and from what a draft token costs against a target pass.
//!
//! With per-token acceptance `α` and `k` drafted tokens, one verification yields on average
//! `E(k) = (1 − α^(k+1)) / (1 − α)` tokens (the accepted prefix plus the target's own token).
//! It costs `k` draft passes of relative cost `c` each and one target pass over `k + 1`
//! tokens, `1 + e·k` (a decoding pass reads every weight once, so a few more tokens add only
//! their arithmetic). Plain decoding yields 1 token per cost 1, so drafting pays only where
//! `E(k) / (1 + (c + e)·k) > 1`; the policy takes the `k ≤ max` with the highest rate, and
//! `k = 0` (decode with the target alone) when none beats 1.
//!
//! The costs are not timed: `c` is the draft's share of the target's weights (decoding is bound
//! by reading them) and `e` a fixed per-token verification overhead, so that the same prompt and
//! seed always draft the same lengths and sampled output stays reproducible. The acceptance is
//! counted with a decay, so that it follows the text as it changes. While the target decodes
//! alone, the policy asks for a probe of one drafted token after a pause that doubles each time
//! the probe does not pay.

/// Extra cost of verifying one more token, in target passes (`bench generate`: a 5-token pass
/// took 1.5x a 1-token pass of SmolLM2-135M on 2 cores, i.e. 0.12 per token).
pub const VERIFY_COST_PER_TOKEN: f64 = 0.12;
/// Weight of the acceptance counts kept per verification (a memory of about 20 steps; one
/// policy serves every prompt of a run).
const DECAY: f64 = 0.95;
/// Prior acceptance counts (a Beta(1, 1) prior: α starts at 0.5).
const PRIOR: (f64, f64) = (1.0, 1.0);
/// Target-only steps before the first probe, and the most between two probes.
const FIRST_PAUSE: usize = 8;
const MAX_PAUSE: usize = 64;

#[derive(Debug, Clone)]
pub struct DraftLength {
    max: usize,
    adaptive: bool,
    /// A draft pass in target passes.
    draft_cost: f64,
    accepted: f64,
    rejected: f64,
    /// Target-only steps left before the next probe, and the pause after it.
    until_probe: usize,
    pause: usize,
}

impl DraftLength {
    /// A policy drafting at most `max` tokens; `adaptive: false` always drafts `max`.
    /// `draft_cost` is a draft pass in target passes (e.g. the ratio of their weight counts).
    pub fn new(max: usize, adaptive: bool, draft_cost: f64) -> Self {
        DraftLength {
            max,
            adaptive,
            draft_cost: draft_cost.max(0.0),
            accepted: 0.0,
            rejected: 0.0,
            until_probe: 0,
            pause: FIRST_PAUSE,
        }
    }

    /// The most tokens drafted per verification.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The acceptance estimate: decayed counts with the prior.
    pub fn acceptance(&self) -> f64 {
        (self.accepted + PRIOR.0) / (self.accepted + self.rejected + PRIOR.0 + PRIOR.1)
    }

    /// Expected tokens per target pass with `k` drafted tokens, relative to plain decoding.
    pub fn rate(&self, k: usize) -> f64 {
        let a = self.acceptance().min(1.0 - 1e-9);
        let tokens = (1.0 - a.powi(k as i32 + 1)) / (1.0 - a);
        tokens / (1.0 + (self.draft_cost + VERIFY_COST_PER_TOKEN) * k as f64)
    }

    /// The length to draft next (`0`: decode one token with the target alone), at most
    /// `remaining`.
    pub fn next(&mut self, remaining: usize) -> usize {
        let cap = self.max.min(remaining);
        if !self.adaptive || cap == 0 {
            return cap;
        }
        let best = (1..=cap)
            .map(|k| (k, self.rate(k)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, r)| r > 1.0)
            .map(|(k, _)| k);
        match best {
            Some(k) => k,
            None if self.until_probe == 0 => {
                self.until_probe = self.pause;
                self.pause = (self.pause * 2).min(MAX_PAUSE);
                1
            }
            None => {
                self.until_probe -= 1;
                0
            }
        }
    }

    /// Records a verification: `accepted` of `drafted` tokens kept.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        self.accepted = self.accepted * DECAY + accepted as f64;
        // A rejection ends the step: the tokens after it were never judged.
        let judged = (accepted + 1).min(drafted);
        self.rejected = self.rejected * DECAY + (judged - accepted) as f64;
        if self.rate(1) > 1.0 {
            self.pause = FIRST_PAUSE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cheap_accurate_draft_drafts_long_and_an_expensive_one_not_at_all() {
        let mut cheap = DraftLength::new(6, true, 0.05);
        for _ in 0..30 {
            let k = cheap.next(100);
            cheap.record(k, k); // always accepted
        }
        assert_eq!(cheap.next(100), 6);
        assert!(cheap.acceptance() > 0.9);

        // The quickstart's case: a draft of 84 % of the target's weights, a quarter accepted.
        let mut costly = DraftLength::new(4, true, 0.84);
        let mut drafted = 0;
        for step in 0..200 {
            let k = costly.next(100);
            drafted += k;
            costly.record(k, usize::from(k > 0 && step % 4 == 0));
        }
        assert_eq!(costly.next(100), 0);
        assert!(drafted < 20, "only probes draft: {drafted}");
    }

    #[test]
    fn the_rate_follows_the_formula_and_fixed_length_ignores_it() {
        let p = DraftLength::new(4, true, 0.5);
        // α = 0.5 from the prior alone: E(2) = 1.75, cost 1 + 2 * 0.62.
        assert!((p.rate(2) - 1.75 / 2.24).abs() < 1e-12);
        assert!((p.rate(0) - 1.0).abs() < 1e-12);
        let mut fixed = DraftLength::new(4, false, 10.0);
        assert_eq!(fixed.next(100), 4);
        assert_eq!(fixed.next(3), 3);
        assert_eq!(fixed.next(0), 0);
    }

    #[test]
    fn probes_come_after_pauses_that_double() {
        let mut p = DraftLength::new(4, true, 1.0);
        let mut probes = vec![];
        for step in 0..60 {
            let k = p.next(100);
            if k > 0 {
                probes.push(step);
                p.record(k, 0);
            }
        }
        // First step probes, then pauses of 8, 16, 32 target-only steps.
        assert_eq!(probes, vec![0, 9, 26, 59]);
    }
}
