//! Per-layer key/value cache for incremental decoding.
//!
//! On CPU (f32) the cache is a set of [`KvBuffer`]s with an independent length per row, which
//! lets the generator refill finished rows with new prompts. On other devices the cache holds
//! candle tensors `[rows, kv_heads, len, head_dim]` and all rows advance together.

use super::kv_buffer::KvBuffer;
use candle_core::Tensor;

pub enum KvCache {
    Ragged(RaggedCache),
    Tensors(TensorCache),
}

pub struct RaggedCache {
    pub layers: Vec<KvBuffer>,
    /// Valid positions per row.
    pub lens: Vec<usize>,
}

pub struct TensorCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
    pub rows: usize,
    pub len: usize,
}

impl KvCache {
    pub fn ragged(
        layers: usize,
        rows: usize,
        kv_heads: usize,
        cap: usize,
        head_dim: usize,
    ) -> Self {
        Self::Ragged(RaggedCache {
            layers: (0..layers)
                .map(|_| KvBuffer::new(rows, kv_heads, cap, head_dim))
                .collect(),
            lens: vec![0; rows],
        })
    }

    pub fn tensors(layers: usize, rows: usize) -> Self {
        Self::Tensors(TensorCache {
            layers: vec![None; layers],
            rows,
            len: 0,
        })
    }

    pub fn rows(&self) -> usize {
        match self {
            Self::Ragged(r) => r.lens.len(),
            Self::Tensors(t) => t.rows,
        }
    }

    /// Number of valid positions of `row`.
    pub fn len(&self, row: usize) -> usize {
        match self {
            Self::Ragged(r) => r.lens[row],
            Self::Tensors(t) => t.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        (0..self.rows()).all(|r| self.len(r) == 0)
    }

    /// Whether rows can have different lengths and be reset one by one.
    pub fn is_ragged(&self) -> bool {
        matches!(self, Self::Ragged(_))
    }

    /// Forgets the contents of `row` (ragged caches only; a tensor cache is reset as a whole).
    pub fn reset_row(&mut self, row: usize) {
        match self {
            Self::Ragged(r) => r.lens[row] = 0,
            Self::Tensors(t) => {
                t.layers.iter_mut().for_each(|l| *l = None);
                t.len = 0;
            }
        }
    }

    /// Drops positions `len..` of `row` (used by speculative decoding to reject drafts).
    pub fn truncate(&mut self, row: usize, len: usize) -> candle_core::Result<()> {
        match self {
            Self::Ragged(r) => {
                r.lens[row] = r.lens[row].min(len);
                Ok(())
            }
            Self::Tensors(t) => {
                if len < t.len {
                    for (k, v) in t.layers.iter_mut().flatten() {
                        *k = k.narrow(2, 0, len)?;
                        *v = v.narrow(2, 0, len)?;
                    }
                    t.len = len;
                }
                Ok(())
            }
        }
    }
}
