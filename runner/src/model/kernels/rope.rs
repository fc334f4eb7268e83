//! RoPE on a fused q|k|v projection, writing rotated keys and values into a KV buffer and
//! rotated queries grouped by KV head (`[batch, kv_heads, tokens, groups, head_dim]`) so that
//! attention can run one matrix product per (row, KV head).

use super::SendPtr;
use crate::model::kv_buffer::KvBuffer;
use rayon::prelude::*;

/// Geometry of one attention call over a packed batch: row `b` has `lens[b]` tokens, stored
/// from token `offsets[b]` of the flat `[Σ lens, width]` input. A right-padded `[batch, tokens]`
/// block is the case of equal lengths.
#[derive(Debug, Clone)]
pub struct AttnShape {
    /// Tokens of each batch row.
    pub lens: Vec<usize>,
    /// First flat token of each batch row (the running sum of `lens`).
    pub offsets: Vec<usize>,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Rows of `lens[b]` tokens each, packed one after another.
    pub fn packed(lens: &[usize], q_heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        let offsets = lens
            .iter()
            .scan(0usize, |next, &len| {
                let at = *next;
                *next += len;
                Some(at)
            })
            .collect();
        AttnShape {
            lens: lens.to_vec(),
            offsets,
            q_heads,
            kv_heads,
            head_dim,
        }
    }

    pub fn batch(&self) -> usize {
        self.lens.len()
    }
    /// Tokens of all rows.
    pub fn total(&self) -> usize {
        self.lens.iter().sum()
    }
    pub fn groups(&self) -> usize {
        self.q_heads / self.kv_heads
    }
    pub fn qkv_width(&self) -> usize {
        (self.q_heads + 2 * self.kv_heads) * self.head_dim
    }
    /// Batch row of flat token `n` (`n < total()`).
    pub fn row_of(&self, n: usize) -> usize {
        self.offsets.partition_point(|&o| o <= n) - 1
    }
    /// Offset of query `(b, kv head h, token t, group gi)` in the queries that
    /// [`rope_qkv_into`] returns: row `b`'s block is `[kv_heads, lens[b], groups, head_dim]`.
    pub fn q_offset(&self, b: usize, h: usize, t: usize, gi: usize) -> usize {
        let row = self.offsets[b] * self.q_heads * self.head_dim;
        row + ((h * self.lens[b] + t) * self.groups() + gi) * self.head_dim
    }
}

#[inline]
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = cos.len();
    for i in 0..half {
        let a = x[i];
        let b = x[i + half];
        out[i] = a * cos[i] - b * sin[i];
        out[i + half] = b * cos[i] + a * sin[i];
    }
}

/// Rotates q and k of `qkv` (`[Σ lens, qkv_width]`, the rows of `s` one after another) and
/// writes:
/// - the returned queries, per batch row `[kv_heads, lens[b], groups, head_dim]` (see
///   [`AttnShape::q_offset`]);
/// - keys and values into `kv` at row `rows[b]`, positions `starts[b] + t`.
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv_into(
    qkv: &[f32],
    s: &AttnShape,
    rows: &[usize],
    starts: &[usize],
    cos: &[f32],
    sin: &[f32],
    kv: &mut KvBuffer,
) -> Vec<f32> {
    let d = s.head_dim;
    let half = d / 2;
    let g = s.groups();
    let width = s.qkv_width();
    let mut q_out = vec![0f32; s.total() * s.q_heads * d];
    let q_ptr = SendPtr(q_out.as_mut_ptr());
    let k_ptr = SendPtr(kv.k.as_mut_ptr());
    let v_ptr = SendPtr(kv.v.as_mut_ptr());
    let kv_geom = (kv.heads, kv.cap, kv.dim);
    (0..s.total())
        .into_par_iter()
        .with_min_len(8)
        .for_each(|n| {
            let b = s.row_of(n);
            let t = n - s.offsets[b];
            let pos = starts[b] + t;
            let row = rows[b];
            let c = &cos[pos * half..(pos + 1) * half];
            let sn = &sin[pos * half..(pos + 1) * half];
            let src = &qkv[n * width..(n + 1) * width];
            for hq in 0..s.q_heads {
                let kvh = hq / g;
                let gi = hq % g;
                let off = s.q_offset(b, kvh, t, gi);
                // SAFETY: (b, kvh, t, gi) is unique to this task and head.
                let dst = unsafe { q_ptr.slice(off, d) };
                rotate(&src[hq * d..(hq + 1) * d], c, sn, dst);
            }
            let (heads, cap, dim) = kv_geom;
            for h in 0..s.kv_heads {
                let off = ((row * heads + h) * cap + pos) * dim;
                let k_src = &src[(s.q_heads + h) * d..(s.q_heads + h + 1) * d];
                let v_src =
                    &src[(s.q_heads + s.kv_heads + h) * d..(s.q_heads + s.kv_heads + h + 1) * d];
                // SAFETY: rows[b] are distinct, so (row, h, pos) is unique to this task.
                unsafe {
                    rotate(k_src, c, sn, k_ptr.slice(off, d));
                    v_ptr.slice(off, d).copy_from_slice(v_src);
                }
            }
        });
    q_out
}
