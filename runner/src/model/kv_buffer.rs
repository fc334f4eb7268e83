//! A plain f32 key/value buffer `[rows, kv_heads, capacity, head_dim]` used by the fused CPU
//! attention. Each row has its own length, so rows can be refilled independently
//! (continuous batching) without touching the others.

#[derive(Debug, Clone)]
pub struct KvBuffer {
    pub rows: usize,
    pub heads: usize,
    pub cap: usize,
    pub dim: usize,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

impl KvBuffer {
    pub fn new(rows: usize, heads: usize, cap: usize, dim: usize) -> Self {
        let n = rows * heads * cap * dim;
        Self {
            rows,
            heads,
            cap,
            dim,
            k: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// Grows the capacity to at least `cap` positions, keeping the stored prefix of every row.
    pub fn reserve(&mut self, cap: usize) {
        if cap <= self.cap {
            return;
        }
        let new_cap = cap.next_power_of_two().max(self.cap * 2);
        let mut grown = Self::new(self.rows, self.heads, new_cap, self.dim);
        let block = self.cap * self.dim;
        for rh in 0..self.rows * self.heads {
            let src = rh * block;
            let dst = rh * new_cap * self.dim;
            grown.k[dst..dst + block].copy_from_slice(&self.k[src..src + block]);
            grown.v[dst..dst + block].copy_from_slice(&self.v[src..src + block]);
        }
        *self = grown;
    }

    /// Copies positions `0..len` of row `src_row` of `other` into row `dst_row` of `self`.
    pub fn copy_row_from(&mut self, dst_row: usize, other: &KvBuffer, src_row: usize, len: usize) {
        for h in 0..self.heads {
            let s = (src_row * other.heads + h) * other.cap * other.dim;
            let d = (dst_row * self.heads + h) * self.cap * self.dim;
            let n = len * self.dim;
            self.k[d..d + n].copy_from_slice(&other.k[s..s + n]);
            self.v[d..d + n].copy_from_slice(&other.v[s..s + n]);
        }
    }

    /// Copies positions `0..len` of row `src_row` into row `dst_row` of the same buffer.
    pub fn copy_row(&mut self, src_row: usize, dst_row: usize, len: usize) {
        if src_row == dst_row {
            return;
        }
        let n = len * self.dim;
        for h in 0..self.heads {
            let s = (src_row * self.heads + h) * self.cap * self.dim;
            let d = (dst_row * self.heads + h) * self.cap * self.dim;
            self.k.copy_within(s..s + n, d);
            self.v.copy_within(s..s + n, d);
        }
    }

    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }
}
