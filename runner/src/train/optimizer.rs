//! AdamW (Loshchilov & Hutter; torch.optim.AdamW semantics) over flat f32 parameter buffers,
//! with global-norm gradient clipping, and the optimizer/schedule parameters of a run.
//!
//! One update with learning rate `lr` and gradient `g` (after clipping), step `t` (1-based):
//! `p -= lr * wd * p` (decoupled weight decay), `m = b1 m + (1 - b1) g`,
//! `v = b2 v + (1 - b2) g^2`, `p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.

use super::error::{Result, TrainError};
use serde::{Deserialize, Serialize};

/// Optimizer, schedule and batching parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerParams {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clipping threshold; 0 disables clipping.
    pub max_grad_norm: f64,
    /// Longer examples are truncated to this many tokens.
    pub max_seq_len: usize,
    /// Seed of adapter initialisation, dropout and data order.
    pub seed: u64,
    /// The cosine decay ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for OptimizerParams {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            weight_decay: 0.0,
            warmup_steps: 10,
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            max_grad_norm: 1.0,
            max_seq_len: 512,
            seed: 0,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl OptimizerParams {
    /// The optimizer and schedule a resource asks for (`spec.recovery.optimizer`); the rest
    /// keeps its defaults.
    pub fn from_spec(o: &pruneforge_api::spec::OptimizerSpec) -> Self {
        OptimizerParams {
            lr: o.learning_rate,
            weight_decay: o.weight_decay,
            warmup_steps: o.warmup_steps as u64,
            steps: o.steps as u64,
            batch_size: o.batch_size as usize,
            grad_accum: o.grad_accumulation as usize,
            max_grad_norm: o.max_grad_norm,
            max_seq_len: o.max_seq_len as usize,
            seed: o.seed as u64,
            ..OptimizerParams::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Input(m));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "optimizer.lr must be a positive number, got {}",
                self.lr
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "optimizer.weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if self.steps == 0 {
            return bad("optimizer.steps must be at least 1".into());
        }
        if self.warmup_steps > self.steps {
            return bad(format!(
                "optimizer.warmup_steps ({}) must not exceed steps ({})",
                self.warmup_steps, self.steps
            ));
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("optimizer.batch_size and optimizer.grad_accum must be at least 1".into());
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return bad(format!(
                "optimizer.max_grad_norm must be >= 0 (0 disables clipping), got {}",
                self.max_grad_norm
            ));
        }
        if self.max_seq_len < 2 {
            return bad(format!(
                "optimizer.max_seq_len must be at least 2, got {}",
                self.max_seq_len
            ));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(format!(
                "optimizer.min_lr_ratio must be in [0, 1], got {}",
                self.min_lr_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) || self.eps <= 0.0
        {
            return bad("optimizer betas must be in [0, 1) and eps > 0".into());
        }
        Ok(())
    }
}

/// AdamW state: first and second moments per parameter buffer, and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates applied so far.
    pub t: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(sizes: &[usize], p: &OptimizerParams) -> Self {
        Self {
            beta1: p.beta1,
            beta2: p.beta2,
            eps: p.eps,
            weight_decay: p.weight_decay,
            t: 0,
            m: sizes.iter().map(|&n| vec![0f32; n]).collect(),
            v: sizes.iter().map(|&n| vec![0f32; n]).collect(),
        }
    }

    /// Applies one update to `params` with gradients `grads` (same shapes).
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64) {
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let step = (lr / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        let (b1f, b2f, eps) = (b1 as f32, b2 as f32, self.eps as f32);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            for i in 0..p.len() {
                let gi = g[i];
                m[i] = b1f * m[i] + (1.0 - b1f) * gi;
                v[i] = b2f * v[i] + (1.0 - b2f) * gi * gi;
                p[i] = p[i] * decay - step * m[i] / (v[i].sqrt() * inv_bc2_sqrt + eps);
            }
        }
    }
}

/// The global L2 norm of all gradients (accumulated in f64).
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales the gradients so that their global norm is at most `max_norm` (torch's
/// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when that is below 1). Returns the norm
/// before clipping.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm.is_finite() {
        let factor = max_norm / (norm + 1e-6);
        if factor < 1.0 {
            let f = factor as f32;
            grads
                .iter_mut()
                .flat_map(|g| g.iter_mut())
                .for_each(|x| *x *= f);
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference update, written out in f64 for one scalar.
    fn reference(p0: f64, grads: &[f64], lr: f64, wd: f64) -> f64 {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            p *= 1.0 - lr * wd;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mh = m / (1.0 - b1.powi(t));
            let vh = v / (1.0 - b2.powi(t));
            p -= lr * mh / (vh.sqrt() + eps);
        }
        p
    }

    #[test]
    fn adamw_matches_the_reference_formula() {
        let params = OptimizerParams {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(&[2], &params);
        let gs = [[0.5f32, -2.0], [0.1, 0.3], [-0.7, 1e-3]];
        let mut p = vec![vec![1.0f32, -0.5]];
        for g in &gs {
            opt.update(&mut p, &[g.to_vec()], 1e-2);
        }
        for j in 0..2 {
            let want = reference(
                [1.0, -0.5][j],
                &gs.iter().map(|g| g[j] as f64).collect::<Vec<_>>(),
                1e-2,
                0.1,
            );
            assert!(
                (p[0][j] as f64 - want).abs() < 1e-6,
                "{} vs {want}",
                p[0][j]
            );
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        let n = clip_global_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-9);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let mut small = vec![vec![0.3f32]];
        clip_global_norm(&mut small, 1.0);
        assert_eq!(small[0][0], 0.3);
    }
}
