//! Per-layer key/value cache for incremental decoding.
//!
//! On CPU (f32) the cache is a set of [`KvBuffer`]s with an independent length per row, which
//! lets the generator refill finished rows with new prompts. On other devices the cache holds
//! candle tensors `[rows, kv_heads, len, head_dim]` and all rows advance together.

use super::error::ModelError;
use super::kv_buffer::KvBuffer;
use candle_core::Tensor;

#[derive(Clone)]
pub enum KvCache {
    Ragged(RaggedCache),
    Tensors(TensorCache),
}

#[derive(Clone)]
pub struct RaggedCache {
    pub layers: Vec<KvBuffer>,
    /// Valid positions per row.
    pub lens: Vec<usize>,
}

#[derive(Clone)]
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

    /// Makes `dst` a copy of the first `len` positions of `src` (a fork: both rows can then
    /// be continued independently). Ragged caches only; `len` must not exceed `src`'s length.
    pub fn fork_row(&mut self, src: usize, dst: usize, len: usize) -> Result<(), ModelError> {
        let Self::Ragged(r) = self else {
            return Err(ModelError::Input(
                "this device's KV cache advances all rows together and cannot fork a row".into(),
            ));
        };
        let rows = r.lens.len();
        if src >= rows || dst >= rows {
            return Err(ModelError::Input(format!(
                "cannot fork cache row {src} into {dst}: the cache has {rows} rows"
            )));
        }
        if len > r.lens[src] {
            return Err(ModelError::Input(format!(
                "cannot fork {len} positions of cache row {src}, which holds {}",
                r.lens[src]
            )));
        }
        for layer in &mut r.layers {
            layer.copy_row(src, dst, len);
        }
        r.lens[dst] = len;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_copies_the_prefix_and_sets_the_length() {
        let mut c = KvCache::ragged(2, 3, 1, 4, 2);
        if let KvCache::Ragged(r) = &mut c {
            for (l, layer) in r.layers.iter_mut().enumerate() {
                for (i, v) in layer.k.iter_mut().enumerate() {
                    *v = (l * 1000 + i) as f32;
                }
                layer.v.copy_from_slice(&layer.k);
            }
            r.lens[0] = 3;
        }
        c.fork_row(0, 2, 2).expect("fork");
        assert_eq!(c.len(2), 2);
        let KvCache::Ragged(r) = &c else {
            unreachable!()
        };
        for (l, layer) in r.layers.iter().enumerate() {
            // Row 2 starts at 2 * cap * dim = 16; its first 2 positions (4 values) are row 0's.
            let want: Vec<f32> = (0..4).map(|i| (l * 1000 + i) as f32).collect();
            assert_eq!(&layer.k[16..20], want.as_slice());
            assert_eq!(&layer.v[16..20], want.as_slice());
            assert_eq!(layer.k[20], (l * 1000 + 20) as f32, "beyond len untouched");
        }
        assert!(c.fork_row(0, 1, 4).is_err(), "longer than the source");
        assert!(c.fork_row(0, 3, 1).is_err(), "no such row");
        let mut t = KvCache::tensors(2, 2);
        assert!(t.fork_row(0, 1, 0).is_err());
    }
}
