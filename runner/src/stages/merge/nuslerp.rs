//! NuSLERP with a base model, with mergekit's semantics (`mergekit/merge_methods/nuslerp.py`,
//! `NuSlerpTask.execute` and `nuslerp`, with its defaults `nuslerp_flatten: true`,
//! `nuslerp_row_wise: false`).
//!
//! The two task vectors `τ₀ = x₀ - base`, `τ₁ = x₁ - base` are flattened and SLERPed at `t`,
//! and the result is added to the base: `base + nuslerp(t, τ₀, τ₁)`. mergekit derives `t` from
//! the two models' weights as `w₁ / (w₀ + w₁)` (0.5 when the sum is below 1e-6); here `t` is
//! given directly (weights `(1 - t, t)`), resolved per tensor like slerp's (see
//! [`super::schedule`]).
//!
//! `nuslerp(t, v0, v1)`: each vector is divided by its L2 norm clamped to at least
//! [`NORM_EPS`] (a zero vector stays zero), `cos θ` is the dot product of the two, clamped to
//! `[-1, 1]`, and `θ = acos(cos θ)`. When `|sin θ| <` [`COLINEAR_EPS`] the vectors are colinear
//! and the result is the linear interpolation `(1 - t)·v0 + t·v1`; otherwise
//! `(sin((1 - t)·θ)·v0 + sin(t·θ)·v1) / sin θ`. Unlike mergekit's `slerp` there is no
//! 0.9995 cosine threshold: only (numerically) exactly colinear task vectors fall back. A zero
//! task vector (a tensor the fine-tune did not change) gives `cos θ = 0`, `θ = π/2`.
//!
//! Precision: mergekit computes in float32. Here the norms and the dot product are accumulated
//! in f64 and the cosine is rounded to float32, as mergekit's float32 dot product is, so that
//! the colinear test falls the same way (a cosine that rounds to ±1 is colinear); the angle and
//! coefficients are computed in f64 from it and the combination is float32 arithmetic
//! (`c0·τ₀ + c1·τ₁`, then `+ base`) with the coefficients rounded to float32. At an exactly
//! opposite pair mergekit's float32 `sin(acos(-1))` is about -8.7e-8, above the threshold, and
//! its division blows up; in f64 `sin(π)` is below it, so the fallback applies instead.

use super::slerp::{self, Blend};
use rayon::prelude::*;

/// mergekit's `_normalize` clamp: norms below it are replaced by it.
pub const NORM_EPS: f64 = 1e-7;
/// mergekit's `eps` of `nuslerp`: `|sin θ|` below it counts as colinear.
pub const COLINEAR_EPS: f64 = 1e-8;

const CHUNK: usize = 1 << 16;

/// The coefficients of `nuslerp(t, v0, v1)`; `dot` is `cos θ` and `lerp_fallback` says the
/// vectors were colinear.
pub fn blend(t: f64, v0: &[f32], v1: &[f32]) -> Blend {
    let (sq0, sq1, dot) = slerp::sums(v0, v1);
    let norm = |sq: f64| sq.sqrt().max(NORM_EPS);
    let cos_theta = ((dot / (norm(sq0) * norm(sq1))) as f32).clamp(-1.0, 1.0);
    let theta = f64::from(cos_theta).acos();
    let sin_theta = theta.sin();
    if sin_theta.abs() < COLINEAR_EPS {
        return slerp::lerp_blend(t, f64::from(cos_theta));
    }
    Blend {
        c0: (((1.0 - t) * theta).sin() / sin_theta) as f32,
        c1: ((t * theta).sin() / sin_theta) as f32,
        lerp_fallback: false,
        dot: f64::from(cos_theta),
    }
}

/// `base + nuslerp(t, x0 - base, x1 - base)` on flattened tensors of equal length; returns the
/// values and the blend of the task vectors.
pub fn merge(t: f64, base: &[f32], x0: &[f32], x1: &[f32]) -> (Vec<f32>, Blend) {
    assert!(
        x0.len() == base.len() && x1.len() == base.len(),
        "nuslerp needs tensors of equal size"
    );
    let task_vector =
        |x: &[f32]| -> Vec<f32> { x.iter().zip(base).map(|(&a, &b)| a - b).collect() };
    let (tau0, tau1) = (task_vector(x0), task_vector(x1));
    let b = blend(t, &tau0, &tau1);
    let mut out = slerp::apply(&b, &tau0, &tau1);
    out.par_chunks_mut(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .for_each(|(o, base)| {
            for (o, &b) in o.iter_mut().zip(base) {
                *o += b;
            }
        });
    (out, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    // base (1, 1); τ₀ = (2, 0), τ₁ = (0, 3) are orthogonal: θ = π/2, sin θ = 1, at t = 0.5
    // both coefficients are sin(π/4) = 0.70710678: base + (1.41421356, 2.12132034).
    #[test]
    fn orthogonal_task_vectors_at_the_midpoint() {
        let (out, b) = merge(0.5, &[1.0, 1.0], &[3.0, 1.0], &[1.0, 4.0]);
        assert!(!b.lerp_fallback);
        assert_eq!(b.dot, 0.0);
        close(&out, &[2.414_213_56, 3.121_320_34], 1e-6);
    }

    // τ₀ = (1, 0), τ₁ = (1, 1): θ = π/4; t = 0.25: c0 = sin(3π/16)/sin(π/4) = 0.78569496,
    // c1 = sin(π/16)/sin(π/4) = 0.27589938 → (1.06159434, 0.27589938) on a zero base.
    #[test]
    fn forty_five_degrees() {
        let (out, b) = merge(0.25, &[0.0, 0.0], &[1.0, 0.0], &[1.0, 1.0]);
        assert!(!b.lerp_fallback);
        close(&out, &[1.061_594_34, 0.275_899_38], 1e-6);
    }

    // Nearly colinear task vectors (cos θ ≈ 0.9998, which slerp's 0.9995 threshold would send to
    // lerp) still take the spherical formula; exactly colinear ones fall back to lerp.
    #[test]
    fn only_exactly_colinear_vectors_fall_back() {
        let a = 1.2f64.to_radians();
        let b = blend(0.5, &[1.0, 0.0], &[a.cos() as f32, a.sin() as f32]);
        assert!(!b.lerp_fallback, "{b:?}");
        assert!(b.dot > 0.9995);
        let (out, b) = merge(0.25, &[1.0, -1.0], &[2.0, 1.0], &[4.0, 5.0]);
        // τ₀ = (1, 2), τ₁ = (3, 6): lerp 0.75·τ₀ + 0.25·τ₁ = (1.5, 3) on base (1, -1).
        assert!(b.lerp_fallback);
        close(&out, &[2.5, 2.0], 1e-6);
        // Opposite task vectors are colinear too.
        let b = blend(0.5, &[1.0, 2.0], &[-2.0, -4.0]);
        assert!(b.lerp_fallback);
        assert_eq!(b.dot, -1.0);
    }

    // A tensor the fine-tunes did not change: both task vectors 0, the base comes back; one
    // zero task vector: θ = π/2, the result is sin(t·π/2)·τ₁.
    #[test]
    fn zero_task_vectors() {
        let base = [0.25f32, -0.5];
        let (out, b) = merge(0.3, &base, &base, &base);
        assert_eq!(out, base);
        assert!(!b.lerp_fallback);
        let (out, _) = merge(0.3, &[0.0, 0.0], &[0.0, 0.0], &[2.0, -2.0]);
        let s = (0.3 * std::f64::consts::FRAC_PI_2).sin();
        close(&out, &[2.0 * s, -2.0 * s], 1e-6);
    }

    #[test]
    fn endpoints_are_the_models() {
        let base = [0.1f32, 0.2, 0.3];
        let x0 = [1.0f32, -2.0, 0.5];
        let x1 = [-0.5f32, 0.25, 2.0];
        close(&merge(0.0, &base, &x0, &x1).0, &x0.map(f64::from), 1e-6);
        close(&merge(1.0, &base, &x0, &x1).0, &x1.map(f64::from), 1e-6);
    }
}
