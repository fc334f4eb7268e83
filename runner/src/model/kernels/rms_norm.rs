//! RMSNorm as transformers computes it: `x * rsqrt(mean(x^2) + eps) * w`, in f32.

use super::widest::widest_fn;
use super::{from_vec, with_f32};
use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

widest_fn! {
    /// `out = x * rsqrt(mean(x^2) + eps) * w` for one row.
    pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let mut acc = [0f32; 8];
        let chunks = x.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                acc[i] += c[i] * c[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for v in rest {
            sum += v * v;
        }
        let inv = 1.0 / (sum / x.len() as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
            *o = g * (v * inv);
        }
    }
}

/// `x`: `[.., hidden]`, `w`: `[hidden]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let hidden = w.dim(0)?;
    if x.dim(candle_core::D::Minus1)? != hidden {
        bail!("rms_norm: hidden size mismatch {:?} vs {hidden}", x.shape())
    }
    let x = x.contiguous()?;
    let rows = x.elem_count() / hidden;
    let out = with_f32(&x, |xs| {
        with_f32(w, |ws| {
            let mut out = vec![0f32; xs.len()];
            let min_rows = (4096 / hidden).max(1);
            out.par_chunks_mut(hidden)
                .zip(xs.par_chunks(hidden))
                .with_min_len(min_rows)
                .for_each(|(o, xr)| rms_norm_row(xr, ws, eps, o));
            out
        })
    })??;
    let _ = rows;
    from_vec(out, x.dims())
}
