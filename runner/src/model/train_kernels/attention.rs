//! RoPE + causal grouped-query attention: `qkv [b, t, q | k | v]` → `[b, t, q_heads *
//! head_dim]`, positions `0..t` in every row (right padding is harmless: attention is
//! causal). The softmax probabilities and the rotated queries and keys are kept for the
//! backward pass:
//!
//! `dV = P^T dO`, `dP = dO V^T`, `dS = P * (dP - rowsum(P * dP)) / sqrt(d)`, `dQ = dS K`,
//! `dK = dS^T Q`, then the inverse rotation of `dQ` and `dK`.

use super::gemm::{matmul, Threads, View, ViewMut};
use super::pool;
use crate::model::kernels::softmax::causal_softmax_rows;
use crate::model::kernels::SendPtr;
use candle_core::{bail, Result};
use rayon::prelude::*;
use std::sync::Arc;

const QUERY_CHUNK: usize = 32;

/// cos/sin of positions `0..t`, `[t, head_dim / 2]` each.
#[derive(Clone)]
pub struct RopeTables {
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    pub positions: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub batch: usize,
    pub tokens: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Dims {
    fn groups(&self) -> usize {
        self.q_heads / self.kv_heads
    }
    pub fn q_dim(&self) -> usize {
        self.q_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Width of a fused `q | k | v` row.
    pub fn width(&self) -> usize {
        self.q_dim() + 2 * self.kv_dim()
    }
    fn chunks(&self) -> usize {
        self.tokens.div_ceil(QUERY_CHUNK)
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Default)]
pub struct Saved {
    /// Rotated queries `[b, kv, t, g, d]`.
    q: Vec<f32>,
    /// Rotated keys and values `[b, kv, t, d]`.
    k: Vec<f32>,
    v: Vec<f32>,
    /// Probabilities per (b, kv head, query chunk): `[chunk rows * g, keys 0..chunk end]`.
    probs: Vec<Vec<f32>>,
}

impl Saved {
    /// Hands the buffers back to the pool.
    pub fn release(self) {
        pool::give(self.q);
        pool::give(self.k);
        pool::give(self.v);
        self.probs.into_iter().for_each(pool::give);
    }
}

fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    for j in 0..half {
        let (a, b) = (x[j], x[j + half]);
        out[j] = a * cos[j] - b * sin[j];
        out[j + half] = b * cos[j] + a * sin[j];
    }
}

/// The transpose of [`rotate`] (rotation by the negative angle), for gradients.
fn unrotate(dy: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    for j in 0..half {
        let (a, b) = (dy[j], dy[j + half]);
        out[j] = a * cos[j] + b * sin[j];
        out[j + half] = b * cos[j] - a * sin[j];
    }
}

impl RopeTables {
    fn at(&self, pos: usize, half: usize) -> (&[f32], &[f32]) {
        (
            &self.cos[pos * half..(pos + 1) * half],
            &self.sin[pos * half..(pos + 1) * half],
        )
    }
}

fn check(s: &Dims, rope: &RopeTables) -> Result<()> {
    if !s.head_dim.is_multiple_of(2) || s.kv_heads == 0 || !s.q_heads.is_multiple_of(s.kv_heads) {
        bail!("attention: unsupported head layout {s:?}")
    }
    if rope.positions < s.tokens || rope.cos.len() < s.tokens * s.head_dim / 2 {
        bail!(
            "attention: rope tables cover {} positions, need {}",
            rope.positions,
            s.tokens
        )
    }
    Ok(())
}

/// Attention over `qkv` (`[b, t, width]`) into `out` (`[b, t, q_dim]`).
pub fn forward(qkv: &[f32], s: Dims, rope: &RopeTables, out: &mut [f32]) -> Result<Saved> {
    check(&s, rope)?;
    let (d, g, kvh, tt) = (s.head_dim, s.groups(), s.kv_heads, s.tokens);
    let width = s.width();
    if qkv.len() != s.batch * tt * width {
        bail!(
            "attention: qkv has {} values, expected {}",
            qkv.len(),
            s.batch * tt * width
        )
    }
    // Rotate q and k into head-major layouts.
    let mut q = pool::take(s.batch * tt * s.q_dim());
    let mut k = pool::take(s.batch * tt * s.kv_dim());
    let mut v = pool::take(s.batch * tt * s.kv_dim());
    let (qp, kp, vp) = (
        SendPtr(q.as_mut_ptr()),
        SendPtr(k.as_mut_ptr()),
        SendPtr(v.as_mut_ptr()),
    );
    (0..s.batch * tt).into_par_iter().for_each(|bt| {
        let (b, t) = (bt / tt, bt % tt);
        let row = &qkv[bt * width..(bt + 1) * width];
        let (cos, sin) = rope.at(t, d / 2);
        for h in 0..kvh {
            for gi in 0..g {
                let hq = h * g + gi;
                let off = (((b * kvh + h) * tt + t) * g + gi) * d;
                // SAFETY: (b, h, t, gi) is written by this task only.
                rotate(&row[hq * d..(hq + 1) * d], cos, sin, unsafe {
                    qp.slice(off, d)
                });
            }
            let off = ((b * kvh + h) * tt + t) * d;
            let kc = s.q_dim() + h * d;
            let vc = s.q_dim() + s.kv_dim() + h * d;
            rotate(&row[kc..kc + d], cos, sin, unsafe { kp.slice(off, d) });
            unsafe { vp.slice(off, d) }.copy_from_slice(&row[vc..vc + d]);
        }
    });
    let scale = 1.0 / (d as f32).sqrt();
    let chunks = s.chunks();
    let tasks = s.batch * kvh * chunks;
    if out.len() != s.batch * tt * s.q_dim() {
        bail!("attention: output buffer has the wrong size")
    }
    let op = SendPtr(out.as_mut_ptr());
    let probs: Vec<Result<Vec<f32>>> = (0..tasks)
        .into_par_iter()
        .map(|task| -> Result<Vec<f32>> {
            let c = task % chunks;
            let h = (task / chunks) % kvh;
            let b = task / (chunks * kvh);
            let t0 = c * QUERY_CHUNK;
            let t1 = (t0 + QUERY_CHUNK).min(tt);
            let m = (t1 - t0) * g;
            let bh = (b * kvh + h) * tt;
            let q_blk = &q[(bh + t0) * g * d..(bh + t1) * g * d];
            let k_blk = &k[bh * d..(bh + t1) * d];
            let v_blk = &v[bh * d..(bh + t1) * d];
            let mut p = pool::take(m * t1);
            matmul(
                ViewMut::new(&mut p, m, t1),
                View::new(q_blk, m, d),
                View::new(k_blk, t1, d).t(),
                false,
                scale,
                Threads::One,
            )?;
            causal_softmax_rows(&mut p, t1, t0, g);
            let mut o = vec![0f32; m * d];
            matmul(
                ViewMut::new(&mut o, m, d),
                View::new(&p, m, t1),
                View::new(v_blk, t1, d),
                false,
                1.0,
                Threads::One,
            )?;
            for i in 0..m {
                let t = t0 + i / g;
                let hq = h * g + i % g;
                let off = ((b * tt + t) * s.q_heads + hq) * d;
                // SAFETY: (b, t, hq) is written by this task only.
                unsafe { op.slice(off, d) }.copy_from_slice(&o[i * d..(i + 1) * d]);
            }
            Ok(p)
        })
        .collect();
    let probs = probs.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(Saved { q, k, v, probs })
}

/// Gradient with respect to `qkv` (overwritten into `dqkv`) from the output gradient `dout`.
pub fn backward(
    saved: &Saved,
    s: Dims,
    rope: &RopeTables,
    dout: &[f32],
    dqkv: &mut [f32],
) -> Result<()> {
    check(&s, rope)?;
    let (d, g, kvh, tt) = (s.head_dim, s.groups(), s.kv_heads, s.tokens);
    if saved.probs.len() != s.batch * kvh * s.chunks() {
        bail!("attention backward: saved state does not match the shape")
    }
    let width = s.width();
    let qd = s.q_dim();
    let scale = 1.0 / (d as f32).sqrt();
    let chunks = s.chunks();
    if dqkv.len() != s.batch * tt * width || dout.len() != s.batch * tt * s.q_dim() {
        bail!("attention backward: buffer sizes do not match the shape")
    }
    let dp_ptr = SendPtr(dqkv.as_mut_ptr());
    let results: Vec<Result<()>> = (0..s.batch * kvh)
        .into_par_iter()
        .map(|task| -> Result<()> {
            let (b, h) = (task / kvh, task % kvh);
            let bh = (b * kvh + h) * tt;
            let k_all = &saved.k[bh * d..(bh + tt) * d];
            let v_all = &saved.v[bh * d..(bh + tt) * d];
            let mut dk = vec![0f32; tt * d];
            let mut dv = vec![0f32; tt * d];
            let mut rot = vec![0f32; d];
            for c in 0..chunks {
                let t0 = c * QUERY_CHUNK;
                let t1 = (t0 + QUERY_CHUNK).min(tt);
                let m = (t1 - t0) * g;
                let p = &saved.probs[task * chunks + c];
                let q_blk = &saved.q[(bh + t0) * g * d..(bh + t1) * g * d];
                let mut do_blk = vec![0f32; m * d];
                for i in 0..m {
                    let t = t0 + i / g;
                    let hq = h * g + i % g;
                    let off = (b * tt + t) * qd + hq * d;
                    do_blk[i * d..(i + 1) * d].copy_from_slice(&dout[off..off + d]);
                }
                matmul(
                    ViewMut::new(&mut dv, tt, d).rows(0, t1),
                    View::new(p, m, t1).t(),
                    View::new(&do_blk, m, d),
                    true,
                    1.0,
                    Threads::One,
                )?;
                let mut ds = vec![0f32; m * t1];
                matmul(
                    ViewMut::new(&mut ds, m, t1),
                    View::new(&do_blk, m, d),
                    View::new(v_all, tt, d).rows(0, t1).t(),
                    false,
                    1.0,
                    Threads::One,
                )?;
                for (dsr, pr) in ds.chunks_mut(t1).zip(p.chunks(t1)) {
                    let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (x, &pv) in dsr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot) * scale;
                    }
                }
                let mut dq = vec![0f32; m * d];
                matmul(
                    ViewMut::new(&mut dq, m, d),
                    View::new(&ds, m, t1),
                    View::new(k_all, tt, d).rows(0, t1),
                    false,
                    1.0,
                    Threads::One,
                )?;
                matmul(
                    ViewMut::new(&mut dk, tt, d).rows(0, t1),
                    View::new(&ds, m, t1).t(),
                    View::new(q_blk, m, d),
                    true,
                    1.0,
                    Threads::One,
                )?;
                for i in 0..m {
                    let t = t0 + i / g;
                    let hq = h * g + i % g;
                    let (cos, sin) = rope.at(t, d / 2);
                    unrotate(&dq[i * d..(i + 1) * d], cos, sin, &mut rot);
                    let off = (b * tt + t) * width + hq * d;
                    // SAFETY: the q columns of heads h*g.. of batch row b belong to this task.
                    unsafe { dp_ptr.slice(off, d) }.copy_from_slice(&rot);
                }
            }
            for t in 0..tt {
                let (cos, sin) = rope.at(t, d / 2);
                unrotate(&dk[t * d..(t + 1) * d], cos, sin, &mut rot);
                let koff = (b * tt + t) * width + qd + h * d;
                let voff = koff + s.kv_dim();
                // SAFETY: the k and v columns of head h of batch row b belong to this task.
                unsafe { dp_ptr.slice(koff, d) }.copy_from_slice(&rot);
                unsafe { dp_ptr.slice(voff, d) }.copy_from_slice(&dv[t * d..(t + 1) * d]);
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(())
}
