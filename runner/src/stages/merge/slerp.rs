//! Spherical linear interpolation of two tensors with mergekit's semantics
//! (`mergekit/merge_methods/slerp.py`, functions `slerp`, `lerp`, `normalize`).
//!
//! Per tensor, both flattened tensors are normalised (a tensor whose L2 norm is not above
//! [`NORM_EPS`] is left as it is) and their dot product taken. When `|dot| > DOT_THRESHOLD`
//! the tensors are nearly colinear and mergekit falls back to linear interpolation
//! `(1 - t)·v0 + t·v1` of the original tensors. Otherwise, with `theta_0 = acos(dot)`,
//! `s0 = sin(theta_0 - t·theta_0) / sin(theta_0)`, `s1 = sin(t·theta_0) / sin(theta_0)` and the
//! result is `s0·v0 + s1·v1`, again on the original (unnormalised) tensors.
//!
//! Precision: mergekit converts both tensors to float32 numpy arrays, so the final
//! combination is float32 arithmetic with the coefficients rounded to float32; we do the same
//! (two float32 products and a float32 sum per element, no fused multiply-add). The norms and
//! the dot product are accumulated in f64 here (numpy sums float32 pairwise), and the
//! coefficients are computed in f64: the result differs from mergekit's by float32 rounding of
//! the coefficients only, far below the bf16 resolution models are usually stored in.

use rayon::prelude::*;

/// mergekit's `DOT_THRESHOLD`: above this |cosine| the tensors count as colinear.
pub const DOT_THRESHOLD: f64 = 0.9995;
/// mergekit's `eps`: tensors with an L2 norm at or below it are not normalised.
pub const NORM_EPS: f64 = 1e-8;

/// Elements per parallel work item (fixed, so that reductions are deterministic).
const CHUNK: usize = 1 << 16;

/// How two tensors are combined: `c0·v0 + c1·v1`, elementwise in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blend {
    pub c0: f32,
    pub c1: f32,
    /// The tensors were nearly colinear and linear interpolation was used.
    pub lerp_fallback: bool,
    /// The dot product of the normalised tensors (their cosine similarity when both norms
    /// are above [`NORM_EPS`]).
    pub dot: f64,
}

/// The mergekit `lerp` coefficients `(1 - t, t)`.
pub fn lerp_blend(t: f64, dot: f64) -> Blend {
    Blend {
        c0: (1.0 - t) as f32,
        c1: t as f32,
        lerp_fallback: true,
        dot,
    }
}

/// Decides between slerp and the lerp fallback and computes the coefficients.
pub fn blend(t: f64, v0: &[f32], v1: &[f32]) -> Blend {
    assert_eq!(v0.len(), v1.len(), "slerp needs tensors of equal size");
    let (sq0, sq1, d) = sums(v0, v1);
    let scale = |sq: f64| {
        let n = sq.sqrt();
        if n > NORM_EPS {
            n
        } else {
            1.0
        }
    };
    let dot = d / (scale(sq0) * scale(sq1));
    if dot.abs() > DOT_THRESHOLD {
        return lerp_blend(t, dot);
    }
    let theta_0 = dot.acos();
    let sin_theta_0 = theta_0.sin();
    let theta_t = theta_0 * t;
    let s0 = (theta_0 - theta_t).sin() / sin_theta_0;
    let s1 = theta_t.sin() / sin_theta_0;
    Blend {
        c0: s0 as f32,
        c1: s1 as f32,
        lerp_fallback: false,
        dot,
    }
}

/// `c0·v0 + c1·v1` elementwise in f32.
pub fn apply(b: &Blend, v0: &[f32], v1: &[f32]) -> Vec<f32> {
    assert_eq!(v0.len(), v1.len(), "slerp needs tensors of equal size");
    let mut out = vec![0f32; v0.len()];
    out.par_chunks_mut(CHUNK)
        .zip(v0.par_chunks(CHUNK).zip(v1.par_chunks(CHUNK)))
        .for_each(|(o, (a, c))| {
            for ((o, &a), &c) in o.iter_mut().zip(a).zip(c) {
                *o = b.c0 * a + b.c1 * c;
            }
        });
    out
}

/// Slerp of two tensors (flattened, equal length) at `t`; returns the values and the blend used.
pub fn slerp(t: f64, v0: &[f32], v1: &[f32]) -> (Vec<f32>, Blend) {
    let b = blend(t, v0, v1);
    (apply(&b, v0, v1), b)
}

/// (Σ v0², Σ v1², Σ v0·v1) in f64, over fixed chunks summed in order (also used by
/// [`super::nuslerp`]).
pub(super) fn sums(v0: &[f32], v1: &[f32]) -> (f64, f64, f64) {
    let parts: Vec<(f64, f64, f64)> = v0
        .par_chunks(CHUNK)
        .zip(v1.par_chunks(CHUNK))
        .map(|(a, b)| {
            let mut s = (0f64, 0f64, 0f64);
            for (&x, &y) in a.iter().zip(b) {
                let (x, y) = (x as f64, y as f64);
                s.0 += x * x;
                s.1 += y * y;
                s.2 += x * y;
            }
            s
        })
        .collect();
    parts.iter().fold((0.0, 0.0, 0.0), |acc, p| {
        (acc.0 + p.0, acc.1 + p.1, acc.2 + p.2)
    })
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

    // Hand computation: v0 = (1, 0), v1 = (1, 1) are 45° apart: dot = 1/√2, theta_0 = π/4.
    // t = 0.5: theta_t = π/8, s0 = s1 = sin(π/8)/sin(π/4) = 0.38268343/0.70710678 = 0.54119610,
    // result = s0·(1, 0) + s1·(1, 1) = (1.08239220, 0.54119610).
    #[test]
    fn slerp_45_degrees_midpoint() {
        let (out, b) = slerp(0.5, &[1.0, 0.0], &[1.0, 1.0]);
        assert!(!b.lerp_fallback);
        assert!((b.dot - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        close(&out, &[1.082_392_20, 0.541_196_10], 1e-6);
    }

    // t = 0.25: theta_t = π/16, s0 = sin(3π/16)/sin(π/4) = 0.55557023/0.70710678 = 0.78569496,
    // s1 = sin(π/16)/sin(π/4) = 0.19509032/0.70710678 = 0.27589938. The tensors are not
    // normalised for the combination: v0 = (3, 0), v1 = (2, 2) give
    // (3·0.78569496 + 2·0.27589938, 2·0.27589938) = (2.90888363, 0.55179876).
    #[test]
    fn slerp_uses_unnormalised_tensors() {
        let (out, b) = slerp(0.25, &[3.0, 0.0], &[2.0, 2.0]);
        assert!(!b.lerp_fallback);
        assert!((b.c0 as f64 - 0.785_694_96).abs() < 1e-7);
        assert!((b.c1 as f64 - 0.275_899_38).abs() < 1e-7);
        close(&out, &[2.908_883_63, 0.551_798_76], 1e-6);
    }

    // Unit vectors 120° apart: theta_0 = 2π/3, t = 0.5: s0 = s1 = sin(π/3)/sin(2π/3) = 1,
    // the result (1, 0) + (-1/2, √3/2) = (1/2, √3/2) is the unit vector at 60°.
    #[test]
    fn slerp_120_degrees_stays_on_the_sphere() {
        let v1 = [-0.5f32, 3f32.sqrt() / 2.0];
        let (out, b) = slerp(0.5, &[1.0, 0.0], &v1);
        assert!(!b.lerp_fallback);
        close(&out, &[0.5, 3f64.sqrt() / 2.0], 1e-6);
    }

    // Orthogonal tensors: s0 = cos(πt/2), s1 = sin(πt/2).
    #[test]
    fn slerp_orthogonal_is_cos_sin() {
        for t in [0.0, 0.1, 0.3, 0.5, 0.9, 1.0] {
            let (out, b) = slerp(t, &[2.0, 0.0, 0.0], &[0.0, 0.0, -4.0]);
            let h = std::f64::consts::FRAC_PI_2 * t;
            assert_eq!(b.dot, 0.0);
            close(&out, &[2.0 * h.cos(), 0.0, -4.0 * h.sin()], 1e-6);
        }
    }

    #[test]
    fn endpoints_are_exact() {
        let v0 = [0.3f32, -1.7, 2.5e-3, 11.0];
        let v1 = [-0.9f32, 0.2, 7.0, -3.0];
        assert_eq!(slerp(0.0, &v0, &v1).0, v0);
        assert_eq!(slerp(1.0, &v0, &v1).0, v1);
        // Colinear: lerp endpoints are exact too.
        let v2 = v0.map(|x| 2.0 * x);
        assert_eq!(slerp(0.0, &v0, &v2).0, v0);
        assert_eq!(slerp(1.0, &v0, &v2).0, v2);
    }

    // |dot| > 0.9995 falls back to lerp on the original tensors, also for opposite directions.
    #[test]
    fn colinear_falls_back_to_lerp() {
        let (out, b) = slerp(0.25, &[1.0, 2.0], &[3.0, 6.0]);
        assert!(b.lerp_fallback);
        close(&out, &[1.5, 3.0], 1e-6);
        let (out, b) = slerp(0.5, &[1.0, 0.0], &[-1.0, 0.01]);
        assert!(b.lerp_fallback && b.dot < -0.9995);
        close(&out, &[0.0, 0.005], 1e-7);
        // Just below the threshold slerp is used: cos(1.8°) ≈ 0.99951 > 0.9995 > cos(1.9°).
        let a = 1.9f64.to_radians();
        let (_, b) = slerp(0.5, &[1.0, 0.0], &[a.cos() as f32, a.sin() as f32]);
        assert!(!b.lerp_fallback);
        let a = 1.8f64.to_radians();
        let (_, b) = slerp(0.5, &[1.0, 0.0], &[a.cos() as f32, a.sin() as f32]);
        assert!(b.lerp_fallback);
    }

    // A zero tensor is not normalised (norm <= eps): dot = 0, theta_0 = π/2, as in mergekit.
    #[test]
    fn zero_tensor_is_not_normalised() {
        let (out, b) = slerp(0.5, &[0.0, 0.0], &[0.0, 2.0]);
        assert!(!b.lerp_fallback);
        assert_eq!(b.dot, 0.0);
        close(&out, &[0.0, 2.0 * std::f64::consts::FRAC_PI_4.sin()], 1e-6);
    }

    #[test]
    fn chunked_reduction_matches_direct_sum() {
        let n = 3 * CHUNK + 17;
        let v0: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let v1: Vec<f32> = (0..n)
            .map(|i| ((i * 104729) % 997) as f32 / 498.5 - 1.0)
            .collect();
        let (a, b, d) = sums(&v0, &v1);
        let direct = v0.iter().zip(&v1).fold((0.0, 0.0, 0.0), |s, (&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            (s.0 + x * x, s.1 + y * y, s.2 + x * y)
        });
        assert!((a - direct.0).abs() < 1e-6 * direct.0);
        assert!((b - direct.1).abs() < 1e-6 * direct.1);
        assert!((d - direct.2).abs() < 1e-6 * direct.0.max(direct.1));
    }
}
