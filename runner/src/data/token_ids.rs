//! Pre-tokenized ids in a safetensors file: an integer tensor `[rows, len]` (or `[len]`, one
//! row) with an optional right-padding `attention_mask` of the same shape. The one reader
//! behind the calibration ids of `score` and the token-id source of the perplexity task.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::error::{DataError, Location, Result};

/// The mask tensor read beside the ids when present.
pub const ATTENTION_MASK: &str = "attention_mask";

/// `rows × width` ids; row `r` holds `lengths[r]` real tokens, then padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdMatrix {
    pub ids: Vec<u32>,
    pub rows: usize,
    pub width: usize,
    /// Real tokens per row: `width` without a mask, else the mask's leading ones.
    pub lengths: Vec<usize>,
}

impl TokenIdMatrix {
    /// Row `r` without its padding.
    pub fn row(&self, r: usize) -> &[u32] {
        &self.ids[r * self.width..r * self.width + self.lengths[r]]
    }
}

/// Reads tensor `tensor` of the safetensors file at `path` (I64, I32 or U32 token ids) and
/// its `attention_mask` when the file has one (right padding only: 1…1 then 0…0).
pub fn read_token_ids(path: &Path, tensor: &str) -> Result<TokenIdMatrix> {
    let bytes = std::fs::read(path).map_err(|e| DataError::read(path, e))?;
    let bad = |why: String| DataError::invalid(path, Location::File, why);
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
    let view = st.tensor(tensor).map_err(|_| {
        bad(format!(
            "no tensor `{tensor}` (token ids, [rows, len]); it has: {}",
            st.names().join(", ")
        ))
    })?;
    let (rows, width) = match *view.shape() {
        [len] => (1, len),
        [rows, len] => (rows, len),
        _ => {
            return Err(bad(format!(
                "`{tensor}` has shape {:?}; expected [rows, len] or [len]",
                view.shape()
            )))
        }
    };
    // [rows, 0] holds no data whatever `rows` says: refuse it before sizing anything by it.
    if width == 0 {
        return Err(bad(format!(
            "`{tensor}` has shape {:?}: rows without tokens",
            view.shape()
        )));
    }
    let values = integers(view.dtype(), view.data()).ok_or_else(|| {
        bad(format!(
            "`{tensor}` has dtype {:?}; token ids must be I64, I32 or U32",
            view.dtype()
        ))
    })?;
    let mut ids = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        ids.push(u32::try_from(*v).map_err(|_| {
            bad(format!(
                "`{tensor}`[{}, {}] = {v} is not a token id",
                i / width.max(1),
                i % width.max(1)
            ))
        })?);
    }
    let mut lengths = vec![width; rows];
    if let Ok(mask) = st.tensor(ATTENTION_MASK) {
        if mask.shape() != view.shape() {
            return Err(bad(format!(
                "`{ATTENTION_MASK}` has shape {:?}, `{tensor}` {:?}",
                mask.shape(),
                view.shape()
            )));
        }
        let m = integers(mask.dtype(), mask.data())
            .ok_or_else(|| bad(format!("`{ATTENTION_MASK}` must be an integer tensor")))?;
        for (r, len) in lengths.iter_mut().enumerate() {
            let row = &m[r * width..(r + 1) * width];
            let n = row.iter().take_while(|&&v| v != 0).count();
            if row[n..].iter().any(|&v| v != 0) {
                return Err(bad(format!(
                    "row {r} of `{ATTENTION_MASK}` is not right-padded (1…1 then 0…0); left \
                     padding is not supported"
                )));
            }
            *len = n;
        }
    }
    Ok(TokenIdMatrix {
        ids,
        rows,
        width,
        lengths,
    })
}

fn integers(dtype: Dtype, data: &[u8]) -> Option<Vec<i64>> {
    Some(match dtype {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => return None,
    })
}
