//! Causal attention over a KV buffer: one GEMM for the scores and one for the weighted sum per
//! (batch row, KV head, query chunk); GQA query heads of one KV head are stacked as rows.

use super::rope::AttnShape;
use super::skinny;
use super::softmax::causal_softmax_rows;
use super::widest::widest_fn;
use super::SendPtr;
use crate::model::kv_buffer::KvBuffer;
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

const QUERY_CHUNK: usize = 32;

/// `q`: the queries of [`super::rope::rope_qkv_into`] (per batch row
/// `[kv_heads, lens[b], groups, head_dim]`). Query `t` of batch row `b` sits at absolute
/// position `starts[b] + t` and attends to positions `0..=starts[b] + t` of KV row `rows[b]`.
/// Returns `[Σ lens, q_heads * head_dim]`, the rows one after another.
pub fn causal_attention(
    q: &[f32],
    s: &AttnShape,
    rows: &[usize],
    starts: &[usize],
    kv: &KvBuffer,
) -> Vec<f32> {
    let d = s.head_dim;
    let g = s.groups();
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0f32; s.total() * s.q_heads * d];
    let out_ptr = SendPtr(out.as_mut_ptr());
    // (batch row, KV head, first query) of every task.
    let tasks: Vec<(usize, usize, usize)> = (0..s.batch())
        .flat_map(|b| {
            (0..s.kv_heads).flat_map(move |h| {
                (0..s.lens[b])
                    .step_by(QUERY_CHUNK)
                    .map(move |t0| (b, h, t0))
            })
        })
        .collect();
    tasks.into_par_iter().for_each(|(b, h, t0)| {
        let t1 = (t0 + QUERY_CHUNK).min(s.lens[b]);
        let m = (t1 - t0) * g;
        let kmax = starts[b] + t1;
        let q_off = s.q_offset(b, h, t0, 0);
        let q_blk = &q[q_off..q_off + m * d];
        let kv_off = (rows[b] * kv.heads + h) * kv.cap * kv.dim;
        let k_blk = &kv.k[kv_off..kv_off + kmax * d];
        let v_blk = &kv.v[kv_off..kv_off + kmax * d];
        let mut scores = vec![0f32; m * kmax];
        if m <= skinny::MAX_ROWS {
            // Decoding (a few query rows): the few-row kernel, no packing.
            skinny::matmul_t_serial(q_blk, m, d, k_blk, kmax, scale, &mut scores);
        } else {
            // SAFETY: all pointers cover the ranges described by (m, n, k) and the strides.
            unsafe {
                gemm(
                    m,
                    kmax,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    kmax as isize,
                    false,
                    q_blk.as_ptr(),
                    1,
                    d as isize,
                    k_blk.as_ptr(),
                    d as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        causal_softmax_rows(&mut scores, kmax, starts[b] + t0, g);
        let mut o = vec![0f32; m * d];
        if m <= skinny::MAX_ROWS {
            weighted_sum(&scores, kmax, v_blk, d, &mut o);
        } else {
            // SAFETY: all pointers cover the ranges described by (m, n, k) and the strides.
            unsafe {
                gemm(
                    m,
                    d,
                    kmax,
                    o.as_mut_ptr(),
                    1,
                    d as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    kmax as isize,
                    v_blk.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
        }
        for i in 0..m {
            let t = t0 + i / g;
            let hq = h * g + i % g;
            let off = ((s.offsets[b] + t) * s.q_heads + hq) * d;
            // SAFETY: (b, t, hq) is written by this task only.
            unsafe { out_ptr.slice(off, d) }.copy_from_slice(&o[i * d..(i + 1) * d]);
        }
    });
    out
}

widest_fn! {
    /// `o[r] = Σ_j p[r, j] · v[j]` for rows `r` of `p` (`[rows, keys]`, `v`: `[keys, d]`),
    /// skipping the zeros of the masked future.
    fn weighted_sum(p: &[f32], keys: usize, v: &[f32], d: usize, o: &mut [f32]) {
        for (pr, or) in p.chunks(keys).zip(o.chunks_mut(d)) {
            for (&pj, vj) in pr.iter().zip(v.chunks(d)) {
                if pj != 0.0 {
                    or.iter_mut().zip(vj).for_each(|(a, &b)| *a += pj * b);
                }
            }
        }
    }
}
