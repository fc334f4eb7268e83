//! The causal row softmax of attention, shared by the inference and training kernels.

use super::widest::widest_fn;
use crate::model::train_kernels::fast_exp;

widest_fn! {
    /// Softmax in place over each row of `scores` (rows of `cols`), where row `i` sees the
    /// first `first + i / groups + 1` columns (query `i / groups` of a block of queries whose
    /// first sees `first + 1` positions; `groups` query heads share a KV head and sit in
    /// consecutive rows); the rest of each row, the masked future, becomes 0.
    pub fn causal_softmax_rows(scores: &mut [f32], cols: usize, first: usize, groups: usize) {
        for (i, row) in scores.chunks_mut(cols).enumerate() {
            let (valid, masked) = row.split_at_mut((first + i / groups + 1).min(cols));
            let max = lanes(valid, f32::NEG_INFINITY, f32::max);
            valid.iter_mut().for_each(|v| *v = fast_exp(*v - max));
            let inv = 1.0 / lanes(valid, 0.0, |a, b| a + b);
            valid.iter_mut().for_each(|v| *v *= inv);
            masked.fill(0.0);
        }
    }
}

/// `xs` folded by `op` in 16 interleaved lanes, then across the lanes: a reduction the
/// compiler can vectorise (a single running value is a serial dependency chain).
#[inline(always)]
fn lanes(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = op(*a, v);
        }
    }
    let mut out = acc.into_iter().fold(init, &op);
    for &v in rest {
        out = op(out, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sum_to_one_over_what_they_see_and_zero_beyond() {
        // 2 query positions x 2 grouped heads, 37 columns (a vector tail), first sees 20.
        let cols = 37;
        let mut scores: Vec<f32> = (0..4 * cols)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
            .collect();
        let orig = scores.clone();
        causal_softmax_rows(&mut scores, cols, 19, 2);
        for (i, row) in scores.chunks(cols).enumerate() {
            let seen = 20 + i / 2;
            let o = &orig[i * cols..(i + 1) * cols];
            let max = o[..seen].iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = o[..seen].iter().map(|&v| (v as f64 - max).exp()).sum();
            for (j, &p) in row.iter().enumerate() {
                let want = if j < seen {
                    (o[j] as f64 - max).exp() / z
                } else {
                    0.0
                };
                assert!(
                    (p as f64 - want).abs() < 1e-6,
                    "row {i} col {j}: {p} vs {want}"
                );
            }
        }
    }
}
