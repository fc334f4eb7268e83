//! Token id rows `[N, L]`, right-padded: the calibration set of `score`, the held-out set of
//! `pruneforge ppl`. Read from safetensors files (`input_ids`, optional `attention_mask`) or
//! built from tokenized text.

use crate::data::token_ids::read_token_ids;
use crate::stages::{Result, StageError};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::path::Path;

/// `rows × width` token ids; row `r` holds `lengths[r]` real tokens followed by padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRows {
    ids: Vec<u32>,
    width: usize,
    lengths: Vec<usize>,
}

impl TokenRows {
    /// Rows of equal length without padding; `ids.len()` must be a multiple of `width`.
    pub fn from_matrix(ids: Vec<u32>, width: usize) -> Result<Self> {
        if width == 0 || ids.is_empty() || !ids.len().is_multiple_of(width) {
            return Err(StageError::Input(format!(
                "{} token ids cannot be cut into rows of {width}",
                ids.len()
            )));
        }
        let rows = ids.len() / width;
        Ok(Self {
            ids,
            width,
            lengths: vec![width; rows],
        })
    }

    /// Right-pads each row to the longest one with `pad_id`. Empty rows are an error (drop
    /// them first); at least one row is required.
    pub fn from_rows(rows: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        if width == 0 {
            return Err(StageError::Input(
                "no token rows (every row is empty)".into(),
            ));
        }
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(StageError::Input(format!("token row {i} is empty")));
        }
        let mut ids = Vec::with_capacity(rows.len() * width);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad_id, width - r.len()));
        }
        Ok(Self {
            ids,
            width,
            lengths: rows.iter().map(Vec::len).collect(),
        })
    }

    /// Reads the integer tensor `tensor` (`[N, L]`, I64/I32/U32) of a safetensors file, with
    /// its right-padding mask from `attention_mask` when the file has one. Rows whose mask is
    /// all zero (padding only) are dropped with a warning.
    pub fn from_safetensors(path: &Path, tensor: &str) -> Result<Self> {
        let m = read_token_ids(path, tensor)?;
        let (rows, ids, width, lengths) = (m.rows, m.ids, m.width, m.lengths);
        let bad = |reason: String| StageError::Input(format!("{}: {reason}", path.display()));
        let all = Self {
            ids,
            width,
            lengths,
        };
        let empty = all.lengths.iter().filter(|&&l| l == 0).count();
        if empty > 0 {
            tracing::warn!(
                file = %path.display(),
                rows = empty,
                "dropping rows that hold only padding"
            );
        }
        let kept: Vec<usize> = (0..rows).filter(|&r| all.lengths[r] > 0).collect();
        if kept.is_empty() {
            return Err(bad(format!(
                "no usable rows: `{tensor}` has {rows} rows and every one is padding only"
            )));
        }
        Ok(all.select(&kept))
    }

    fn select(&self, rows: &[usize]) -> Self {
        let mut ids = Vec::with_capacity(rows.len() * self.width);
        for &r in rows {
            ids.extend_from_slice(&self.ids[r * self.width..(r + 1) * self.width]);
        }
        Self {
            ids,
            width: self.width,
            lengths: rows.iter().map(|&r| self.lengths[r]).collect(),
        }
    }

    /// Keeps the first `rows` rows.
    pub fn truncate_rows(&mut self, rows: usize) {
        self.lengths.truncate(rows);
        self.ids.truncate(self.lengths.len() * self.width);
    }

    /// Cuts every row to at most `width` tokens.
    pub fn truncate_width(&mut self, width: usize) {
        if width >= self.width || width == 0 {
            return;
        }
        let kept: Vec<usize> = (0..self.rows()).collect();
        let mut ids = Vec::with_capacity(kept.len() * width);
        for r in kept {
            ids.extend_from_slice(&self.ids[r * self.width..r * self.width + width]);
        }
        self.ids = ids;
        self.width = width;
        for l in &mut self.lengths {
            *l = (*l).min(width);
        }
    }

    pub fn rows(&self) -> usize {
        self.lengths.len()
    }

    /// Row width (the longest row).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Real (non-pad) tokens in all rows.
    pub fn tokens(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Rows with padding.
    pub fn padded_rows(&self) -> usize {
        self.lengths.iter().filter(|&&l| l < self.width).count()
    }

    pub fn max_id(&self) -> Option<u32> {
        self.ids.iter().copied().max()
    }

    /// The real tokens of row `r`.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.width..r * self.width + self.lengths[r]]
    }

    /// All ids, row-major `[rows, width]`, padding included.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Rows `range` as a `[b, t]` u32 tensor (t = the longest of these rows, right-padded) and
    /// their lengths.
    pub fn batch(
        &self,
        range: std::ops::Range<usize>,
        device: &Device,
    ) -> Result<(Tensor, Vec<usize>)> {
        let lengths = self.lengths[range.clone()].to_vec();
        let t = lengths.iter().copied().max().unwrap_or(0);
        let mut ids = Vec::with_capacity(lengths.len() * t);
        for r in range {
            ids.extend_from_slice(&self.ids[r * self.width..r * self.width + t]);
        }
        let b = lengths.len();
        Ok((Tensor::from_vec(ids, (b, t), device)?, lengths))
    }

    /// sha256 (hex) of the ids as int64 little-endian bytes, row-major `[rows, width]` (the
    /// reference's `ids_int64_le_sha256`). When rows are padded, the row lengths follow as
    /// int64 LE, so the digest also pins the padding.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for &id in &self.ids {
            h.update((id as i64).to_le_bytes());
        }
        if self.padded_rows() > 0 {
            for &l in &self.lengths {
                h.update((l as i64).to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_batch_and_digest() {
        let rows = TokenRows::from_rows(&[vec![5, 6, 7], vec![8]], 2).unwrap();
        assert_eq!(rows.width(), 3);
        assert_eq!(rows.lengths(), &[3, 1]);
        assert_eq!(rows.row(1), &[8]);
        assert_eq!(rows.tokens(), 4);
        let (t, l) = rows.batch(1..2, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 1]);
        assert_eq!(l, vec![1]);
        let plain = TokenRows::from_matrix(vec![5, 6, 7, 8, 2, 2], 3).unwrap();
        assert_ne!(
            plain.sha256(),
            rows.sha256(),
            "padding is part of the digest"
        );
        assert!(TokenRows::from_rows(&[vec![], vec![1]], 0).is_err());
        assert!(TokenRows::from_matrix(vec![1, 2, 3], 2).is_err());
    }
}
