//! Weighted average of tensors with mergekit's `linear` semantics
//! (`mergekit/merge_methods/linear.py`, `LinearMergeTask.execute`): `Σ wᵢ·xᵢ`, divided by
//! `Σ wᵢ` when `normalize` is set (mergekit's default). Computed in f32 with the weights
//! rounded to f32, as mergekit does for float32 tensors.

use rayon::prelude::*;

const CHUNK: usize = 1 << 16;

/// `Σ wᵢ·xᵢ` (divided by `Σ wᵢ` when `normalize`), elementwise. The caller checks that
/// `weights` and `inputs` have the same length (at least one), that the tensors have equal
/// sizes, and that the weights do not sum to zero when normalising.
pub fn weighted_sum(weights: &[f64], inputs: &[&[f32]], normalize: bool) -> Vec<f32> {
    assert!(!inputs.is_empty() && weights.len() == inputs.len());
    let n = inputs[0].len();
    assert!(inputs.iter().all(|x| x.len() == n), "tensors of equal size");
    let w: Vec<f32> = weights.iter().map(|&w| w as f32).collect();
    let total: f32 = w.iter().sum();
    let mut out = vec![0f32; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let start = c * CHUNK;
        for (j, o) in o.iter_mut().enumerate() {
            let i = start + j;
            let mut acc = w[0] * inputs[0][i];
            for (wk, x) in w.iter().zip(inputs).skip(1) {
                acc += wk * x[i];
            }
            *o = if normalize { acc / total } else { acc };
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_average() {
        let a = [1.0f32, 2.0, -4.0];
        let b = [3.0f32, 0.0, 4.0];
        assert_eq!(weighted_sum(&[1.0, 3.0], &[&a, &b], true), [2.5, 0.5, 2.0]);
        assert_eq!(
            weighted_sum(&[1.0, 3.0], &[&a, &b], false),
            [10.0, 2.0, 8.0]
        );
        let c = [0.0f32, 1.0, 0.0];
        assert_eq!(
            weighted_sum(&[1.0, 1.0, 2.0], &[&a, &b, &c], true),
            [1.0, 1.0, 0.0]
        );
    }
}
