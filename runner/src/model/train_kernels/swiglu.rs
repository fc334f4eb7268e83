//! SwiGLU on a fused gate|up projection: `y = silu(g) * u` with `[g | u]` the two halves of
//! each row. Backward: `dg = dy * u * s * (1 + g * (1 - s))`, `du = dy * silu(g)`,
//! `s = sigmoid(g)`.

use super::fast_exp;
use crate::model::kernels::widest::widest_fn;
use rayon::prelude::*;

/// `gu`: rows of `2 * inter` values; `out`: rows of `inter`.
pub fn forward(gu: &[f32], inter: usize, out: &mut [f32]) {
    out.par_chunks_mut(inter)
        .zip(gu.par_chunks(2 * inter))
        .with_min_len(4)
        .for_each(|(o, row)| {
            let (g, u) = row.split_at(inter);
            silu_mul_row(g, u, o);
        });
}

/// Gradient with respect to `gu` (overwritten into `dgu`).
pub fn backward(gu: &[f32], inter: usize, dy: &[f32], dgu: &mut [f32]) {
    dgu.par_chunks_mut(2 * inter)
        .zip(gu.par_chunks(2 * inter).zip(dy.par_chunks(inter)))
        .with_min_len(4)
        .for_each(|(d, (row, gy))| {
            let (g, u) = row.split_at(inter);
            let (dg, du) = d.split_at_mut(inter);
            silu_mul_backward_row(g, u, gy, dg, du);
        });
}

widest_fn! {
    /// `o = silu(g) * u` for one row.
    fn silu_mul_row(g: &[f32], u: &[f32], o: &mut [f32]) {
        for ((o, &x), &u) in o.iter_mut().zip(g).zip(u) {
            *o = x / (1.0 + fast_exp(-x)) * u;
        }
    }
}

widest_fn! {
    /// The gradients of [`silu_mul_row`] with respect to `g` and `u`, given `dy`.
    fn silu_mul_backward_row(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..g.len() {
            let x = g[i];
            let s = 1.0 / (1.0 + fast_exp(-x));
            du[i] = dy[i] * x * s;
            dg[i] = dy[i] * u[i] * s * (1.0 + x * (1.0 - s));
        }
    }
}
