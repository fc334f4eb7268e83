//! Log-sum-exp over a row of logits as wide as the vocabulary (49 152 for SmolLM2): the
//! normaliser of every log-probability that evaluation scores. Done with libm's scalar `exp`
//! in f64 it cost more than the LM head's share of some evaluations; here the exponentials
//! are [`fast_exp`] in f32 lanes of the widest vector unit, and the lane sums are added in
//! f64 every [`BLOCK`] elements. Each term's relative error is about 2e-7, so the log-sum-exp
//! is within about 3e-7 of the f64 definition (tested), below the f32 rounding of the logits
//! themselves.

use super::widest::widest_fn;
use crate::model::train_kernels::fast_exp;

/// Lanes of the f32 accumulators (a full AVX-512 register; two AVX2 registers).
const LANES: usize = 16;
/// Elements summed in f32 before the lane sums move to f64.
const BLOCK: usize = 1024;

widest_fn! {
    /// `out = max(row)` (NaN entries are skipped; −∞ for an empty row).
    fn row_max(row: &[f32], out: &mut f32) {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..LANES {
                acc[i] = acc[i].max(c[i]);
            }
        }
        *out = acc.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    }
}

widest_fn! {
    /// `out = Σ e^(row[i] − shift)` over the `i` where `skip` is false (`skip` empty: all).
    fn exp_sum(row: &[f32], shift: f32, skip: &[bool], out: &mut f64) {
        let mut total = 0f64;
        for (b, block) in row.chunks(BLOCK).enumerate() {
            let mut acc = [0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let rest = chunks.remainder();
            let full = block.len() - rest.len();
            if skip.is_empty() {
                for c in chunks {
                    for i in 0..LANES {
                        acc[i] += fast_exp(c[i] - shift);
                    }
                }
                for &v in rest {
                    acc[0] += fast_exp(v - shift);
                }
            } else {
                let skip = &skip[b * BLOCK..b * BLOCK + block.len()];
                for (c, s) in chunks.zip(skip.chunks_exact(LANES)) {
                    for i in 0..LANES {
                        let e = fast_exp(c[i] - shift);
                        acc[i] += if s[i] { 0.0 } else { e };
                    }
                }
                for (&v, &s) in rest.iter().zip(&skip[full..]) {
                    if !s {
                        acc[0] += fast_exp(v - shift);
                    }
                }
            }
            total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
        }
        *out = total;
    }
}

/// `(ln Σ e^row, argmax (first on ties))` of one row of logits; `(−∞, 0)` for an empty row.
/// A NaN anywhere makes the log-sum-exp NaN.
pub fn summary(row: &[f32]) -> (f64, u32) {
    let mut max = f32::NEG_INFINITY;
    row_max(row, &mut max);
    let argmax = row.iter().position(|&v| v == max).unwrap_or(0) as u32;
    if max.is_infinite() {
        // All −∞ (or empty), or a +∞ logit: no finite shift; the f64 definition says it.
        let sum: f64 = row.iter().map(|&v| f64::from(v).exp()).sum();
        return (sum.ln(), argmax);
    }
    // A NaN entry makes its term NaN (`fast_exp` propagates it), so the sum is NaN.
    let mut sum = 0f64;
    exp_sum(row, max, &[], &mut sum);
    (f64::from(max) + sum.ln(), argmax)
}

/// Probability mass `Σ e^(row[i] − lse)` of the entries whose `skip` flag is false, for a row
/// whose log-sum-exp is `lse` and maximum `max` (summed directly, not as one minus the rest).
pub fn mass_excluding(row: &[f32], max: f32, lse: f64, skip: &[bool]) -> f64 {
    assert_eq!(row.len(), skip.len(), "logsumexp: one skip flag per entry");
    if !max.is_finite() {
        return row
            .iter()
            .zip(skip)
            .filter(|(_, &s)| !s)
            .map(|(&v, _)| (f64::from(v) - lse).exp())
            .sum();
    }
    let mut sum = 0f64;
    exp_sum(row, max, skip, &mut sum);
    sum * (f64::from(max) - lse).exp()
}

/// The largest entry of `row` (NaN entries skipped).
pub fn max(row: &[f32]) -> f32 {
    let mut out = f32::NEG_INFINITY;
    row_max(row, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lse_f64(row: &[f32]) -> f64 {
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &v| a.max(f64::from(v)));
        m + row
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln()
    }

    /// Uniform in [−scale, scale) from a 64-bit LCG (Knuth's MMIX constants).
    fn random_row(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn log_sum_exp_is_within_3e7_of_the_f64_definition() {
        for (n, scale) in [
            (49_152, 12.0),
            (49_153, 30.0),
            (1, 3.0),
            (17, 100.0),
            (1024, 0.0),
        ] {
            let row = random_row(n, scale, n as u64);
            let (lse, arg) = summary(&row);
            let want = lse_f64(&row);
            assert!((lse - want).abs() < 3e-7, "n {n}: {lse} vs {want}");
            let m = max(&row);
            assert_eq!(row[arg as usize], m);
            assert_eq!(
                row.iter().position(|&v| v == m),
                Some(arg as usize),
                "first on ties"
            );
        }
    }

    #[test]
    fn masked_mass_matches_the_definition() {
        let row = random_row(5000, 15.0, 7);
        let (lse, _) = summary(&row);
        let skip: Vec<bool> = (0..row.len()).map(|i| i % 3 == 0 || i > 4990).collect();
        let got = mass_excluding(&row, max(&row), lse, &skip);
        let want: f64 = row
            .iter()
            .zip(&skip)
            .filter(|(_, &s)| !s)
            .map(|(&v, _)| (f64::from(v) - lse).exp())
            .sum();
        assert!(((got - want) / want).abs() < 3e-7, "{got} vs {want}");
        let all = vec![true; row.len()];
        assert_eq!(mass_excluding(&row, max(&row), lse, &all), 0.0);
    }

    #[test]
    fn infinities_and_nan_follow_the_definition() {
        let row = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        assert_eq!(summary(&row), (0.0, 1));
        assert_eq!(summary(&[f32::NEG_INFINITY; 3]).0, f64::NEG_INFINITY);
        assert_eq!(summary(&[1.0, f32::INFINITY]).0, f64::INFINITY);
        assert!(summary(&[1.0, f32::NAN, 2.0]).0.is_nan());
        let mut wide = vec![0.5f32; 100];
        wide[37] = f32::NAN;
        assert!(summary(&wide).0.is_nan(), "a NaN in a full vector lane");
        assert_eq!(summary(&[]).0, f64::NEG_INFINITY);
    }
}
