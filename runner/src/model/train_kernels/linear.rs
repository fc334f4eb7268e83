//! A frozen (possibly fused) projection with LoRA adapters on some of its parts:
//!
//! `y = x W^T + b`, and for every adapter `i` (output rows `rows_i`):
//! `y[:, rows_i] += s_i * (drop_i(x) A_i^T) B_i^T`.
//!
//! Backward computes `dx`, `dA` and `dB` only (the base weight and bias are frozen):
//! `dx = dy W + sum_i drop_i((s_i dy_i B_i) A_i)`, `dB_i = s_i dy_i^T (drop_i(x) A_i^T)`,
//! `dA_i = (s_i dy_i B_i)^T drop_i(x)`. The low-rank activations `drop_i(x) A_i^T` are kept
//! from the forward pass; dropout masks are regenerated from their seeds. Adapter values
//! live in a flat parameter vector (`A_i` row-major `[r, in]` at `a_off`, `B_i` `[out_i, r]`
//! at `b_off`).

use super::dropout;
use super::gemm::{matmul, Threads, View, ViewMut};
use super::pool;
use candle_core::Result;
use std::ops::Range;

/// One adapter of a projection and where its values sit in the flat parameter vector.
#[derive(Clone, Debug)]
pub struct AdapterSlot {
    /// Output rows of the adapted part in the (fused) projection.
    pub rows: Range<usize>,
    pub rank: usize,
    pub scale: f32,
    pub dropout: f32,
    pub seed: u64,
    pub a_off: usize,
    pub b_off: usize,
}

/// A projection's frozen weights and its adapters.
pub struct Proj<'a> {
    /// `[out, in]` row-major.
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub in_dim: usize,
    pub out_dim: usize,
    pub adapters: &'a [AdapterSlot],
}

impl Proj<'_> {
    /// Columns of the low-rank activations (sum of ranks).
    pub fn low_width(&self) -> usize {
        self.adapters.iter().map(|a| a.rank).sum()
    }
}

/// The input the adapter sees: `x`, or `x` with its dropout mask applied (into `buf`).
fn adapter_input<'b>(x: &'b [f32], a: &AdapterSlot, buf: &'b mut Vec<f32>) -> &'b [f32] {
    if a.dropout > 0.0 {
        buf.resize(x.len(), 0.0);
        dropout::apply(x, a.seed, a.dropout, buf);
        buf
    } else {
        x
    }
}

/// `y = projection(x)` for `n` rows; returns the low-rank activations `[n, low_width]`.
pub fn forward(
    p: &Proj<'_>,
    params: &[f32],
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<Vec<f32>> {
    let (i, o) = (p.in_dim, p.out_dim);
    matmul(
        ViewMut::new(y, n, o),
        View::new(x, n, i),
        View::new(p.w, o, i).t(),
        false,
        1.0,
        Threads::ColumnBlocks,
    )?;
    if let Some(b) = p.bias {
        for row in y.chunks_mut(o) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
    let lw = p.low_width();
    let mut lows = pool::take(n * lw);
    let mut buf = Vec::new();
    let mut col = 0;
    for a in p.adapters {
        let (r, len) = (a.rank, a.rows.len());
        let src = adapter_input(x, a, &mut buf);
        matmul(
            ViewMut::new(&mut lows, n, lw).cols(col, r),
            View::new(src, n, i),
            View::new(&params[a.a_off..a.a_off + r * i], r, i).t(),
            false,
            1.0,
            Threads::All,
        )?;
        matmul(
            ViewMut::new(y, n, o).cols(a.rows.start, len),
            View::new(&lows, n, lw).cols(col, r),
            View::new(&params[a.b_off..a.b_off + len * r], len, r).t(),
            true,
            a.scale,
            Threads::All,
        )?;
        col += r;
    }
    pool::give(buf);
    Ok(lows)
}

/// Gradients of a projection: `dx` (overwritten, when given) and the adapters' `dA`, `dB`
/// (overwritten at their offsets in `dparams`).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    p: &Proj<'_>,
    params: &[f32],
    x: &[f32],
    lows: &[f32],
    dy: &[f32],
    n: usize,
    mut dx: Option<&mut [f32]>,
    dparams: &mut [f32],
) -> Result<()> {
    let (i, o) = (p.in_dim, p.out_dim);
    if let Some(dx) = dx.as_deref_mut() {
        matmul(
            ViewMut::new(dx, n, i),
            View::new(dy, n, o),
            View::new(p.w, o, i),
            false,
            1.0,
            Threads::ColumnBlocks,
        )?;
    }
    let lw = p.low_width();
    let mut g = Vec::new();
    let mut buf = Vec::new();
    let mut tmp = Vec::new();
    let mut col = 0;
    for a in p.adapters {
        let (r, len) = (a.rank, a.rows.len());
        let dy_i = View::new(dy, n, o).cols(a.rows.start, len);
        // dB = s dy_i^T lows_i
        matmul(
            ViewMut::new(&mut dparams[a.b_off..a.b_off + len * r], len, r),
            dy_i.t(),
            View::new(lows, n, lw).cols(col, r),
            false,
            a.scale,
            Threads::All,
        )?;
        // g = s dy_i B
        g.resize(n * r, 0.0);
        let b_i = View::new(&params[a.b_off..a.b_off + len * r], len, r);
        matmul(
            ViewMut::new(&mut g, n, r),
            dy_i,
            b_i,
            false,
            a.scale,
            Threads::All,
        )?;
        // dA = g^T drop(x)
        let src = adapter_input(x, a, &mut buf);
        matmul(
            ViewMut::new(&mut dparams[a.a_off..a.a_off + r * i], r, i),
            View::new(&g, n, r).t(),
            View::new(src, n, i),
            false,
            1.0,
            Threads::All,
        )?;
        // dx += drop(g A)
        if let Some(dx) = dx.as_deref_mut() {
            let a_i = View::new(&params[a.a_off..a.a_off + r * i], r, i);
            if a.dropout > 0.0 {
                tmp.resize(n * i, 0.0);
                matmul(
                    ViewMut::new(&mut tmp, n, i),
                    View::new(&g, n, r),
                    a_i,
                    false,
                    1.0,
                    Threads::All,
                )?;
                buf.resize(n * i, 0.0);
                dropout::apply(&tmp, a.seed, a.dropout, &mut buf);
                dx.iter_mut().zip(&buf).for_each(|(d, v)| *d += v);
            } else {
                matmul(
                    ViewMut::new(dx, n, i),
                    View::new(&g, n, r),
                    a_i,
                    true,
                    1.0,
                    Threads::All,
                )?;
            }
        }
        col += r;
    }
    pool::give(buf);
    pool::give(tmp);
    Ok(())
}
