//! Task arithmetic and TIES with mergekit's semantics
//! (`mergekit/merge_methods/generalized_task_arithmetic.py`, `GTATask.execute`,
//! `get_task_vectors`, `get_mask`; the methods `task_arithmetic` and `ties` of
//! `mergekit/merge_methods/registry.py`).
//!
//! Per tensor, with `base` the base model (here the pruned model the fine-tunes started from):
//!
//! 1. task vectors `τᵢ = xᵢ - base`;
//! 2. TIES only: each `τᵢ` keeps its `int(density · numel)` largest-magnitude entries
//!    ([`super::sparsify::magnitude`], no rescaling: mergekit's `rescale` is false for ties);
//! 3. weighted `δᵢ = wᵢ·τᵢ`;
//! 4. task arithmetic: `mixed = Σ δᵢ`, `divisor = Σ wᵢ` (`|divisor| < 1e-8` counts as 1);
//!    TIES (consensus `sum`): the elected sign is `+1` where `Σ δᵢ >= 0` and `-1` elsewhere,
//!    `maskᵢ = (sign(δᵢ) == elected)` (a zero entry agrees with neither sign),
//!    `mixed = Σ maskᵢ·δᵢ`, `divisor = Σ maskᵢ·wᵢ` (a divisor of exactly 0 counts as 1);
//! 5. `mixed /= divisor` when normalising (mergekit's default: off for task arithmetic, on for
//!    TIES); `mixed *= λ` when `λ != 1`;
//! 6. the result is `base + mixed`.
//!
//! Precision: as mergekit on float32 tensors, every step is float32 arithmetic with the weights
//! and λ rounded to float32; sums over the models run in model order.

use super::sparsify::{self, SparsifyError};
use rayon::prelude::*;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 16;

/// The settings of one generalized task-arithmetic merge.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskArithmetic {
    /// One weight per fine-tuned model.
    pub weights: Vec<f64>,
    /// Scale of the merged task vector.
    pub lambda: f64,
    /// Divide by the (agreeing) weights.
    pub normalize: bool,
    /// TIES: sparsify to this density and elect signs; `None` is plain task arithmetic.
    pub ties: Option<Ties>,
}

/// TIES settings: mergekit `ties` = `magnitude` sparsification and `sum` sign consensus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ties {
    pub density: f64,
}

/// Why a tensor cannot be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskArithmeticError {
    #[error("{weights} weights for {models} models: give one weight per fine-tuned model")]
    WeightCount { weights: usize, models: usize },
    #[error("no fine-tuned model to merge")]
    NoModels,
    #[error("a model's tensor has {got} elements but the base's has {base}")]
    SizeMismatch { base: usize, got: usize },
    #[error(transparent)]
    Sparsify(#[from] SparsifyError),
}

/// One merged tensor and what happened on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub values: Vec<f32>,
    /// L2 norm of each task vector `τᵢ` (before sparsification).
    pub task_vector_norms: Vec<f64>,
    /// TIES: entries each sparsified task vector keeps.
    pub kept_per_model: Option<usize>,
    /// TIES: entries where at least one model's non-zero `δᵢ` disagrees with the elected sign
    /// (and is left out).
    pub sign_conflicts: Option<usize>,
}

/// Merges one tensor: `base` and one tensor per fine-tuned model, flattened, of equal length.
pub fn merge(
    settings: &TaskArithmetic,
    base: &[f32],
    models: &[&[f32]],
) -> Result<Merged, TaskArithmeticError> {
    if models.is_empty() {
        return Err(TaskArithmeticError::NoModels);
    }
    if settings.weights.len() != models.len() {
        return Err(TaskArithmeticError::WeightCount {
            weights: settings.weights.len(),
            models: models.len(),
        });
    }
    if let Some(m) = models.iter().find(|m| m.len() != base.len()) {
        return Err(TaskArithmeticError::SizeMismatch {
            base: base.len(),
            got: m.len(),
        });
    }
    let weights: Vec<f32> = settings.weights.iter().map(|&w| w as f32).collect();
    let mut task_vector_norms = Vec::with_capacity(models.len());
    let mut kept_per_model = None;
    // δᵢ = wᵢ·τᵢ (τᵢ sparsified for TIES).
    let mut weighted: Vec<Vec<f32>> = Vec::with_capacity(models.len());
    for (model, &w) in models.iter().zip(&weights) {
        let tau: Vec<f32> = model.iter().zip(base).map(|(&x, &b)| x - b).collect();
        task_vector_norms.push(l2_norm(&tau));
        let tau = match settings.ties {
            Some(ties) => {
                kept_per_model = Some(sparsify::kept_count(ties.density, tau.len())?);
                sparsify::magnitude(&tau, ties.density)?
            }
            None => tau,
        };
        weighted.push(tau.into_iter().map(|d| d * w).collect());
    }

    let lambda = settings.lambda as f32;
    let scale = |mixed: f32, divisor: f32| {
        let mut m = mixed;
        if settings.normalize {
            m /= divisor;
        }
        if settings.lambda != 1.0 {
            m *= lambda;
        }
        m
    };
    let total_weight = sum_in_order(weights.iter().copied());
    let sum_divisor = if total_weight.abs() < 1e-8 {
        1.0
    } else {
        total_weight
    };
    // Entry i: the merged value and whether a model's entry was left out for its sign.
    let entry = |i: usize| -> (f32, bool) {
        if settings.ties.is_none() {
            let mixed = sum_in_order(weighted.iter().map(|d| d[i]));
            return (base[i] + scale(mixed, sum_divisor), false);
        }
        let elected = if sum_in_order(weighted.iter().map(|d| d[i])) >= 0.0 {
            1.0
        } else {
            -1.0
        };
        let (mut mixed, mut divisor, mut conflict) = (0f32, 0f32, false);
        for (d, &w) in weighted.iter().zip(&weights) {
            let s = sign(d[i]);
            if s == elected {
                mixed += d[i];
                divisor += w;
            } else if s != 0.0 {
                conflict = true;
            }
        }
        if divisor == 0.0 {
            divisor = 1.0;
        }
        (base[i] + scale(mixed, divisor), conflict)
    };
    let mut values = vec![0f32; base.len()];
    let conflicts: usize = values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, out)| {
            let mut conflicts = 0;
            for (j, o) in out.iter_mut().enumerate() {
                let (v, conflict) = entry(c * CHUNK + j);
                *o = v;
                conflicts += usize::from(conflict);
            }
            conflicts
        })
        .sum();
    let sign_conflicts = settings.ties.map(|_| conflicts);
    Ok(Merged {
        values,
        task_vector_norms,
        kept_per_model,
        sign_conflicts,
    })
}

/// torch's `sign`: -1, 0 or 1.
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// A float32 sum from 0, in iteration order.
fn sum_in_order(values: impl Iterator<Item = f32>) -> f32 {
    values.fold(0.0, |acc, v| acc + v)
}

fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(
        weights: &[f64],
        lambda: f64,
        normalize: bool,
        ties: Option<f64>,
    ) -> TaskArithmetic {
        TaskArithmetic {
            weights: weights.to_vec(),
            lambda,
            normalize,
            ties: ties.map(|density| Ties { density }),
        }
    }

    // base = (1, 1, 1, 1), τ_a = (1, -2, 0, 4), τ_b = (3, 1, -1, -0.5); weights (1, 0.5), λ = 2:
    // Σ wτ = (1 + 1.5, -2 + 0.5, 0 - 0.5, 4 - 0.25) = (2.5, -1.5, -0.5, 3.75);
    // not normalised: base + 2·Σ = (6, -2, 0, 8.5);
    // normalised by 1.5: base + 2·Σ/1.5 = (4.333.., -1, 0.333.., 6).
    #[test]
    fn task_arithmetic_by_hand() {
        let base = [1.0f32, 1.0, 1.0, 1.0];
        let a = [2.0f32, -1.0, 1.0, 5.0];
        let b = [4.0f32, 2.0, 0.0, 0.5];
        let m = merge(&settings(&[1.0, 0.5], 2.0, false, None), &base, &[&a, &b]).unwrap();
        assert_eq!(m.values, [6.0, -2.0, 0.0, 8.5]);
        assert_eq!(m.sign_conflicts, None);
        assert_eq!(m.kept_per_model, None);
        assert!((m.task_vector_norms[0] - 21f64.sqrt()).abs() < 1e-12);
        let m = merge(&settings(&[1.0, 0.5], 2.0, true, None), &base, &[&a, &b]).unwrap();
        let want = [1.0 + 5.0 / 1.5, -1.0, 1.0 - 1.0 / 1.5, 6.0];
        for (g, w) in m.values.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{:?}", m.values);
        }
        // Weights summing to 0: mergekit's divisor counts as 1.
        let m = merge(&settings(&[1.0, -1.0], 1.0, true, None), &base, &[&a, &b]).unwrap();
        assert_eq!(m.values, [1.0 - 2.0, 1.0 - 3.0, 1.0 + 1.0, 1.0 + 4.5]);
    }

    // TIES on 4 elements, base 0, three models, weights (1, 1, 2), density 0.5 (k = 2):
    //   τ_a = ( 3, -1,  2, 0.5) → keeps 3, 2    → ( 3,  0,  2,  0)
    //   τ_b = (-4,  1, -1, 2  ) → keeps -4, 2   → (-4,  0,  0,  2)
    //   τ_c = ( 1, -3,  0.5,-2) → keeps -3, -2  → ( 0, -3,  0, -2); δ_c = 2·τ_c = (0, -6, 0, -4)
    // Σ δ = (-1, -6, 2, -2) → elected (-, -, +, -).
    // entry 0: only b agrees (-4; w 1) → -4 / 1 = -4 (a's +3 is a conflict)
    // entry 1: only c (-6; w 2) → -6 / 2 = -3
    // entry 2: only a (2; w 1) → 2
    // entry 3: only c (-4; w 2) → -2 (b's +2 is a conflict)
    // normalised: (-4, -3, 2, -2); not normalised: (-4, -6, 2, -4); conflicts: entries 0 and 3.
    #[test]
    fn ties_by_hand() {
        let base = [0.0f32; 4];
        let a = [3.0f32, -1.0, 2.0, 0.5];
        let b = [-4.0f32, 1.0, -1.0, 2.0];
        let c = [1.0f32, -3.0, 0.5, -2.0];
        let m = merge(
            &settings(&[1.0, 1.0, 2.0], 1.0, true, Some(0.5)),
            &base,
            &[&a, &b, &c],
        )
        .unwrap();
        assert_eq!(m.values, [-4.0, -3.0, 2.0, -2.0]);
        assert_eq!(m.kept_per_model, Some(2));
        assert_eq!(m.sign_conflicts, Some(2));
        let m = merge(
            &settings(&[1.0, 1.0, 2.0], 1.0, false, Some(0.5)),
            &base,
            &[&a, &b, &c],
        )
        .unwrap();
        assert_eq!(m.values, [-4.0, -6.0, 2.0, -4.0]);
        // λ = 0.5 on a base of 1: 1 + 0.5·(-4, -3, 2, -2).
        let m = merge(
            &settings(&[1.0, 1.0, 2.0], 0.5, true, Some(0.5)),
            &[1.0; 4],
            &[
                &a.map(|x| x + 1.0),
                &b.map(|x| x + 1.0),
                &c.map(|x| x + 1.0),
            ],
        )
        .unwrap();
        assert_eq!(m.values, [-1.0, -0.5, 2.0, 0.0]);
    }

    // Density 1 keeps everything; a tie of the sum at 0 elects +; entries where every task
    // vector is 0 leave the base unchanged (divisor 0 counts as 1).
    #[test]
    fn ties_sign_election_edge_cases() {
        let base = [0.5f32, 0.5, 0.5];
        let a = [1.5f32, 0.5, 1.0]; // τ = (1, 0, 0.5)
        let b = [-0.5f32, 0.5, 0.0]; // τ = (-1, 0, -0.5)
        let m = merge(
            &settings(&[1.0, 1.0], 1.0, true, Some(1.0)),
            &base,
            &[&a, &b],
        )
        .unwrap();
        // Entry 0: Σ = 0 → + elected → a's +1 alone, / 1 → 1.5. Entry 1: all 0 → base.
        // Entry 2: Σ = 0 → + → 0.5 / 1 → 1.0.
        assert_eq!(m.values, [1.5, 0.5, 1.0]);
        assert_eq!(m.sign_conflicts, Some(2));
        assert_eq!(m.kept_per_model, Some(3));
    }

    // A negative weight flips the sign that takes part in the election.
    #[test]
    fn ties_with_a_negative_weight() {
        let base = [0.0f32];
        let a = [1.0f32];
        let b = [1.0f32];
        // Task arithmetic: Σ δ / Σ w = (1 - 2) / (1 - 2) = 1.
        let m = merge(&settings(&[1.0, -2.0], 1.0, true, None), &base, &[&a, &b]).unwrap();
        assert_eq!(m.values, [1.0]);
        // TIES: δ = (1, -2), Σ = -1 → - elected: only b: -2 / -2 = 1 (normalised), -2 otherwise.
        let m = merge(
            &settings(&[1.0, -2.0], 1.0, true, Some(1.0)),
            &base,
            &[&a, &b],
        )
        .unwrap();
        assert_eq!(m.values, [1.0]);
        let m = merge(
            &settings(&[1.0, -2.0], 1.0, false, Some(1.0)),
            &base,
            &[&a, &b],
        )
        .unwrap();
        assert_eq!(m.values, [-2.0]);
    }

    #[test]
    fn errors() {
        let s = settings(&[1.0], 1.0, false, None);
        assert_eq!(
            merge(&s, &[0.0], &[]).unwrap_err(),
            TaskArithmeticError::NoModels
        );
        assert_eq!(
            merge(&s, &[0.0], &[&[1.0], &[2.0]]).unwrap_err(),
            TaskArithmeticError::WeightCount {
                weights: 1,
                models: 2
            }
        );
        assert_eq!(
            merge(&s, &[0.0], &[&[1.0, 2.0]]).unwrap_err(),
            TaskArithmeticError::SizeMismatch { base: 1, got: 2 }
        );
        let s = settings(&[1.0], 1.0, false, Some(0.4));
        assert!(matches!(
            merge(&s, &[0.0, 0.0], &[&[1.0, 2.0]]).unwrap_err(),
            TaskArithmeticError::Sparsify(SparsifyError::NothingKept { .. })
        ));
    }
}
