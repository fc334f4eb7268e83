//! Preference losses (DPO, conservative DPO, IPO, hinge; SPIN is the sigmoid loss with the
//! model's own answers as the rejected side) and one LoRA optimizer step over preference pairs.
//!
//! For a pair with policy log-probabilities `π_c`, `π_r` of the chosen and rejected answers
//! and the reference's `ρ_c`, `ρ_r` (summed over answer tokens; averaged for IPO), TRL's
//! `DPOTrainer.dpo_loss` computes the margin `h = (π_c − π_r) − (ρ_c − ρ_r)` and
//!
//! - `sigmoid`: `−(1 − ε) log σ(βh) − ε log σ(−βh)`
//! - `hinge`: `max(0, 1 − βh)`
//! - `ipo`: `(h − 1/(2β))²`
//!
//! with rewards `β(π_c − ρ_c)` and `β(π_r − ρ_r)`, and the mean over pairs. SPIN's
//! `spin_loss` (uclaml/SPIN) is the same with `π_c` the data set's answer ("real") and `π_r`
//! the model's own ("generated"). The loss is computed here in f64 from the sequence
//! log-probabilities with its derivative in closed form; the step back-propagates
//! `∂L/∂π` through the per-token NLL of the fused LM-head kernel.

use super::batching::{Batch, Example};
use super::error::{Result, TrainError};
use super::loss::token_nll;
use super::trainer::{add_grads, forward_at_targets, head_weight, Trainer};
use crate::model::Llama;
use crate::util::rng::mix;
use candle_core::Tensor;
pub use pruneforge_api::spec::PreferenceLoss;
use serde::{Deserialize, Serialize};

/// Positions per LM-head chunk when scoring pairs.
const CHUNK: usize = 512;

/// β, the loss and its label smoothing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceObjective {
    pub beta: f64,
    pub loss: PreferenceLoss,
    /// Conservative DPO's ε (0: plain DPO).
    pub label_smoothing: f64,
}

impl PreferenceObjective {
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(TrainError::Input(format!(
                "beta must be > 0, got {}",
                self.beta
            )));
        }
        if !(0.0..=0.5).contains(&self.label_smoothing) {
            return Err(TrainError::Input(format!(
                "label_smoothing must be in [0, 0.5], got {}",
                self.label_smoothing
            )));
        }
        if self.label_smoothing > 0.0 && self.loss == PreferenceLoss::Ipo {
            return Err(TrainError::Input(
                "label_smoothing applies to the sigmoid and hinge losses, not ipo".into(),
            ));
        }
        Ok(())
    }

    /// The loss of one pair, its derivatives and rewards.
    pub fn pair(&self, lp: PairLogps) -> PairLoss {
        let beta = self.beta;
        let eps = self.label_smoothing;
        let h = (lp.chosen - lp.rejected) - (lp.ref_chosen - lp.ref_rejected);
        let (loss, d_h) = match self.loss {
            PreferenceLoss::Sigmoid => {
                let x = beta * h;
                (
                    -(1.0 - eps) * log_sigmoid(x) - eps * log_sigmoid(-x),
                    -beta * (1.0 - eps) * sigmoid(-x) + beta * eps * sigmoid(x),
                )
            }
            PreferenceLoss::Hinge => {
                let x = 1.0 - beta * h;
                if x > 0.0 {
                    (x, -beta)
                } else {
                    (0.0, 0.0)
                }
            }
            PreferenceLoss::Ipo => {
                let x = h - 1.0 / (2.0 * beta);
                (x * x, 2.0 * x)
            }
        };
        PairLoss {
            loss,
            d_chosen: d_h,
            d_rejected: -d_h,
            chosen_reward: beta * (lp.chosen - lp.ref_chosen),
            rejected_reward: beta * (lp.rejected - lp.ref_rejected),
        }
    }
}

/// `log σ(x)`, stable for large |x|.
fn log_sigmoid(x: f64) -> f64 {
    -(x.max(0.0) - x + (-x.abs()).exp().ln_1p())
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Sequence log-probabilities of one pair under the policy and the reference.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairLogps {
    pub chosen: f64,
    pub rejected: f64,
    pub ref_chosen: f64,
    pub ref_rejected: f64,
}

/// One pair's loss, `∂loss/∂π_c`, `∂loss/∂π_r` and the implicit rewards.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairLoss {
    pub loss: f64,
    pub d_chosen: f64,
    pub d_rejected: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
}

/// A tokenized pair with its reference log-probabilities (computed once, before training).
#[derive(Clone, Debug, PartialEq)]
pub struct PreferencePair {
    pub chosen: Example,
    pub rejected: Example,
    pub ref_chosen: f64,
    pub ref_rejected: f64,
}

/// Log-probability of each row's answer tokens and their count, from per-position NLL.
fn row_sums(batch: &Batch, nll: &[f32]) -> (Vec<f64>, Vec<usize>) {
    let mut sums = vec![0f64; batch.rows];
    let mut counts = vec![0usize; batch.rows];
    for (&p, &v) in batch.positions.iter().zip(nll) {
        let r = p as usize / batch.len.max(1);
        sums[r] -= v as f64;
        counts[r] += 1;
    }
    (sums, counts)
}

/// The sequence log-probability of every example's answer under `model` (no gradient, no
/// dropout), summed over answer tokens or, with `average`, their mean; `batch_size` rows at
/// a time.
pub fn sequence_logps(
    model: &Llama,
    examples: &[&Example],
    batch_size: usize,
    pad: u32,
    average: bool,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = Batch::from_examples(chunk, pad);
        let (states, _) = forward_at_targets(model, &batch, false, &[])?;
        let nll = token_nll(&states, head_weight(model), &batch.targets, CHUNK)?;
        let (sums, counts) = row_sums(&batch, &nll.to_vec1::<f32>()?);
        out.extend(sums.iter().zip(&counts).map(
            |(&s, &n)| {
                if average {
                    s / n.max(1) as f64
                } else {
                    s
                }
            },
        ));
    }
    Ok(out)
}

/// What one preference step did: means over its pairs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PreferenceStepOutcome {
    pub loss: f64,
    pub chosen_reward: f64,
    pub rejected_reward: f64,
    /// Mean of `chosen_reward − rejected_reward`.
    pub margin: f64,
    /// Share of pairs whose chosen reward exceeds the rejected one.
    pub accuracy: f64,
    pub grad_norm: f64,
    pub pairs: u64,
    /// Answer tokens of both sides.
    pub tokens: u64,
}

/// One optimizer step of preference training, as logged and checkpointed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreferenceStepLog {
    pub step: u64,
    pub lr: f64,
    #[serde(flatten)]
    pub outcome: PreferenceStepOutcome,
    pub seconds: f64,
}

/// Sums over the pairs of a step, and the gradient per LoRA variable.
#[derive(Default)]
struct Sums {
    grads: Vec<Vec<f32>>,
    loss: f64,
    chosen: f64,
    rejected: f64,
    correct: usize,
    tokens: usize,
}

impl Trainer<'_> {
    /// Loss of `pairs` (one micro-batch: chosen rows, then rejected rows) added into `sums`,
    /// with the gradient of `scale ×` their summed loss.
    fn preference_micro(
        &mut self,
        pairs: &[&PreferencePair],
        objective: &PreferenceObjective,
        scale: f64,
        dropout_seed: u64,
        pad: u32,
        sums: &mut Sums,
    ) -> Result<()> {
        self.lora.attach(self.student, dropout_seed)?;
        let examples: Vec<&Example> = pairs
            .iter()
            .map(|p| &p.chosen)
            .chain(pairs.iter().map(|p| &p.rejected))
            .collect();
        let batch = Batch::from_examples(&examples, pad);
        let (states, _) = forward_at_targets(self.student, &batch, true, &[])?;
        let nll = token_nll(
            &states,
            head_weight(self.student),
            &batch.targets,
            self.chunk,
        )?;
        let (logp, counts) = row_sums(&batch, &nll.to_vec1::<f32>()?);
        let average = objective.loss.averages_tokens();
        let per_token = |r: usize| {
            if average {
                1.0 / counts[r].max(1) as f64
            } else {
                1.0
            }
        };
        let k = pairs.len();
        // ∂(scale · Σ loss)/∂π per row; π = −Σ nll (× 1/n for averages), so each position of
        // row r gets −∂/∂π_r (× 1/n).
        let mut d_row = vec![0f64; 2 * k];
        for (i, p) in pairs.iter().enumerate() {
            let pl = objective.pair(PairLogps {
                chosen: logp[i] * per_token(i),
                rejected: logp[k + i] * per_token(k + i),
                ref_chosen: p.ref_chosen,
                ref_rejected: p.ref_rejected,
            });
            if !pl.loss.is_finite() {
                return Err(TrainError::Input(format!(
                    "a preference pair's loss is not finite ({}); check the data and beta",
                    pl.loss
                )));
            }
            d_row[i] = scale * pl.d_chosen * per_token(i);
            d_row[k + i] = scale * pl.d_rejected * per_token(k + i);
            sums.loss += pl.loss;
            sums.chosen += pl.chosen_reward;
            sums.rejected += pl.rejected_reward;
            sums.correct += usize::from(pl.chosen_reward > pl.rejected_reward);
        }
        sums.tokens += batch.target_count();
        let coeff: Vec<f32> = batch
            .positions
            .iter()
            .map(|&p| -d_row[p as usize / batch.len.max(1)] as f32)
            .collect();
        let coeff = Tensor::from_vec(coeff, batch.target_count(), nll.device())?;
        let surrogate = (nll * coeff)?.sum_all()?;
        let grads = surrogate.backward()?;
        add_grads(&mut sums.grads, &grads, &self.lora.vars())
    }

    /// The mean preference loss of `micro` (micro-batches of pairs) and its gradient, without
    /// an update: `(loss, gradient per LoRA variable)`.
    pub fn preference_gradient(
        &mut self,
        micro: &[Vec<&PreferencePair>],
        objective: &PreferenceObjective,
        dropout_seed: u64,
        pad: u32,
    ) -> Result<(f64, Vec<Vec<f32>>, PreferenceStepOutcome)> {
        objective.validate()?;
        let n: usize = micro.iter().map(Vec::len).sum();
        if n == 0 {
            return Err(TrainError::Input(
                "a preference step has no pairs to train on".into(),
            ));
        }
        let mut sums = Sums {
            grads: self.values.iter().map(|v| vec![0f32; v.len()]).collect(),
            ..Sums::default()
        };
        for (j, pairs) in micro.iter().enumerate() {
            self.preference_micro(
                pairs,
                objective,
                1.0 / n as f64,
                mix(dropout_seed, j as u64),
                pad,
                &mut sums,
            )?;
        }
        let nf = n as f64;
        let out = PreferenceStepOutcome {
            loss: sums.loss / nf,
            chosen_reward: sums.chosen / nf,
            rejected_reward: sums.rejected / nf,
            margin: (sums.chosen - sums.rejected) / nf,
            accuracy: sums.correct as f64 / nf,
            grad_norm: 0.0,
            pairs: n as u64,
            tokens: sums.tokens as u64,
        };
        Ok((out.loss, sums.grads, out))
    }

    /// One optimizer step over `micro` with learning rate `lr`; `step` (0-based) names the
    /// step in errors.
    pub fn preference_step(
        &mut self,
        micro: &[Vec<&PreferencePair>],
        objective: &PreferenceObjective,
        lr: f64,
        dropout_seed: u64,
        pad: u32,
        step: u64,
    ) -> Result<PreferenceStepOutcome> {
        let (loss, mut acc, mut out) =
            self.preference_gradient(micro, objective, dropout_seed, pad)?;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                what: "the preference loss",
                value: loss,
                hint: "lower the learning rate or beta".into(),
            });
        }
        out.grad_norm = self.apply_gradient(&mut acc, lr, step)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(loss: PreferenceLoss, beta: f64, eps: f64) -> PreferenceObjective {
        PreferenceObjective {
            beta,
            loss,
            label_smoothing: eps,
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let lp = PairLogps {
            chosen: -12.5,
            rejected: -14.0,
            ref_chosen: -13.0,
            ref_rejected: -13.25,
        };
        for o in [
            obj(PreferenceLoss::Sigmoid, 0.1, 0.0),
            obj(PreferenceLoss::Sigmoid, 0.5, 0.2),
            obj(PreferenceLoss::Hinge, 0.3, 0.0),
            obj(PreferenceLoss::Ipo, 0.1, 0.0),
        ] {
            let at = |c: f64, r: f64| {
                o.pair(PairLogps {
                    chosen: c,
                    rejected: r,
                    ..lp
                })
                .loss
            };
            let e = 1e-6;
            let dc = (at(lp.chosen + e, lp.rejected) - at(lp.chosen - e, lp.rejected)) / (2.0 * e);
            let dr = (at(lp.chosen, lp.rejected + e) - at(lp.chosen, lp.rejected - e)) / (2.0 * e);
            let pl = o.pair(lp);
            assert!(
                (dc - pl.d_chosen).abs() < 1e-6,
                "{o:?}: {dc} vs {}",
                pl.d_chosen
            );
            assert!(
                (dr - pl.d_rejected).abs() < 1e-6,
                "{o:?}: {dr} vs {}",
                pl.d_rejected
            );
        }
    }

    #[test]
    fn sigmoid_loss_is_ln2_at_the_reference_and_stable_far_from_it() {
        let o = obj(PreferenceLoss::Sigmoid, 0.1, 0.0);
        let same = PairLogps {
            chosen: -3.0,
            rejected: -5.0,
            ref_chosen: -3.0,
            ref_rejected: -5.0,
        };
        let pl = o.pair(same);
        assert!((pl.loss - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((pl.d_chosen + 0.05).abs() < 1e-12 && pl.chosen_reward == 0.0);
        let far = o.pair(PairLogps {
            chosen: 0.0,
            rejected: -1e5,
            ..same
        });
        assert!(far.loss.is_finite() && far.loss >= 0.0 && far.loss < 1e-100);
        let wrong = o.pair(PairLogps {
            chosen: -1e5,
            rejected: 0.0,
            ..same
        });
        assert!((wrong.loss - 0.1 * (1e5 + 2.0)).abs() < 1e-6);
        assert!(obj(PreferenceLoss::Ipo, 0.1, 0.1).validate().is_err());
        assert!(obj(PreferenceLoss::Sigmoid, 0.0, 0.0).validate().is_err());
    }
}
