//! Held-out negative log-likelihood with the inference path (no autograd): answer tokens of
//! SFT examples, or every next token of plain token windows.

use super::batching::{Batch, Example};
use super::error::Result;
use crate::model::{ForwardOptions, Llama};
use candle_core::{DType, Tensor, D};

/// Sum of `-log p(target)` over a batch's target positions, and their count.
pub fn batch_nll(model: &Llama, batch: &Batch) -> Result<(f64, usize)> {
    if batch.targets.is_empty() {
        return Ok((0.0, 0));
    }
    let device = model.device();
    let tokens = Tensor::from_slice(&batch.tokens, (batch.rows, batch.len), device)?;
    let h = model
        .forward(&tokens, ForwardOptions::default())?
        .last_hidden;
    let hidden = model.config.hidden_size;
    let h = h.reshape((batch.rows * batch.len, hidden))?;
    let mut total = 0f64;
    let chunk = 256;
    for c0 in (0..batch.positions.len()).step_by(chunk) {
        let c1 = (c0 + chunk).min(batch.positions.len());
        let pos = Tensor::from_slice(&batch.positions[c0..c1], c1 - c0, device)?;
        let logits = model
            .logits(&h.index_select(&pos, 0)?)?
            .to_dtype(DType::F32)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let tgt = Tensor::from_slice(&batch.targets[c0..c1], (c1 - c0, 1), device)?;
        total -= lsm.gather(&tgt, 1)?.sum_all()?.to_scalar::<f32>()? as f64;
    }
    Ok((total, batch.targets.len()))
}

/// Mean NLL per answer token over `examples`, `batch_size` examples at a time.
pub fn mean_nll(model: &Llama, examples: &[Example], batch_size: usize, pad: u32) -> Result<f64> {
    let (mut sum, mut count) = (0f64, 0usize);
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by_key(|e| e.tokens.len());
    for group in order.chunks(batch_size.max(1)) {
        let (s, c) = batch_nll(model, &Batch::from_examples(group, pad))?;
        sum += s;
        count += c;
    }
    Ok(if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    })
}

/// Mean NLL of every next token of `rows` (token windows scored alone, no BOS): the
/// reference perplexity protocol of ../shared/reference (ppl = exp of this).
pub fn windows_nll(model: &Llama, rows: &[Vec<u32>], batch_size: usize) -> Result<f64> {
    let examples: Vec<Example> = rows
        .iter()
        .map(|r| Example {
            tokens: r.clone(),
            prompt_len: 1,
        })
        .collect();
    mean_nll(model, &examples, batch_size, 0)
}

/// Rows of an integer token tensor (`input_ids` [rows, len], I64/I32/U32) in a safetensors
/// file, e.g. ../shared/reference/heldout_ids.safetensors.
pub fn read_token_windows(path: &std::path::Path, name: &str) -> Result<Vec<Vec<u32>>> {
    use super::error::TrainError;
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
    let view = st
        .tensor(name)
        .map_err(|_| TrainError::checkpoint(path, format!("no tensor `{name}`")))?;
    let shape = view.shape().to_vec();
    if shape.len() != 2 {
        return Err(TrainError::checkpoint(
            path,
            format!("`{name}` must be 2-D, is {shape:?}"),
        ));
    }
    let data = view.data();
    let ids: Vec<u32> = match view.dtype() {
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()) as u32)
            .collect(),
        safetensors::Dtype::I32 | safetensors::Dtype::U32 => data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
        other => {
            return Err(TrainError::checkpoint(
                path,
                format!("`{name}` has dtype {other:?}, expected an integer type"),
            ))
        }
    };
    Ok(ids.chunks(shape[1].max(1)).map(<[u32]>::to_vec).collect())
}
