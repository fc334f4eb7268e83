//! Deterministic (counter-based) dropout masks for LoRA inputs. Element `i` of a dropout
//! input is kept when a hash of `(seed, i)` is at least `p`; kept values are scaled by
//! `1 / (1 - p)` (inverted dropout, as torch's `nn.Dropout`). Being a pure function of the
//! seed, the mask is the same on every thread layout, can be regenerated in the backward pass
//! instead of stored, and makes training resumable step for step.

use candle_core::{Device, Result, Tensor};

/// SplitMix64 finaliser of `seed + (i + 1) * golden`: a well-mixed 64-bit hash.
#[inline]
pub fn hash(seed: u64, i: u64) -> u64 {
    use crate::util::rng::{finalize, GOLDEN};
    finalize(seed.wrapping_add((i.wrapping_add(1)).wrapping_mul(GOLDEN)))
}

/// The multiplier of element `i`: `0` (dropped) or `1 / (1 - p)` (kept).
#[inline]
pub fn factor(seed: u64, i: u64, p: f32) -> f32 {
    let u = (hash(seed, i) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
    if u < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// `out[i] = x[i] * factor(seed, i, p)`.
pub fn apply(x: &[f32], seed: u64, p: f32, out: &mut [f32]) {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 14;
    out.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK))
        .enumerate()
        .for_each(|(b, (o, xs))| {
            let base = (b * BLOCK) as u64;
            for (j, (o, &v)) in o.iter_mut().zip(xs).enumerate() {
                *o = v * factor(seed, base + j as u64, p);
            }
        });
}

/// The mask as a tensor of the given shape (for the composable path).
pub fn mask_tensor(shape: &[usize], seed: u64, p: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n as u64).map(|i| factor(seed, i, p)).collect();
    Tensor::from_vec(data, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_scales() {
        let n = 100_000u64;
        let kept = (0..n).filter(|&i| factor(7, i, 0.25) > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");
        assert_eq!(factor(7, 3, 0.0), 1.0);
        assert!((factor(7, 0, 0.25) == 0.0) || (factor(7, 0, 0.25) - 1.0 / 0.75).abs() < 1e-7);
        let x = vec![1f32; 40_000];
        let mut a = vec![0f32; x.len()];
        let mut b = vec![0f32; x.len()];
        apply(&x, 11, 0.5, &mut a);
        apply(&x, 11, 0.5, &mut b);
        assert_eq!(a, b);
        apply(&x, 12, 0.5, &mut b);
        assert_ne!(a, b);
    }
}
