//! Perplexity: of a model on token rows (`pruneforge ppl`), and of the model with a block of
//! layers removed, computed from cached hidden states so only the layers after the block run.
//!
//! Each row is scored alone: tokens `1..len` given the earlier tokens of the row, no BOS;
//! logits in f32, log-softmax and sums in f64; `ppl = exp(total NLL / tokens scored)`.

use super::token_rows::TokenRows;
use crate::model::{ForwardOptions, Llama};
use crate::stages::{Result, StageError};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The perplexity of a model on a set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    pub ppl: f64,
    pub nll_per_token: f64,
    pub tokens_scored: u64,
    pub rows: usize,
    /// NLL sum of every row, in order.
    pub row_nll_sums: Vec<f64>,
}

impl PerplexityReport {
    fn from_rows(row_nll_sums: Vec<f64>, tokens_scored: u64) -> Result<Self> {
        if tokens_scored == 0 {
            return Err(StageError::Input(
                "no token to score: every row has fewer than 2 tokens".into(),
            ));
        }
        let total: f64 = row_nll_sums.iter().sum();
        let nll_per_token = total / tokens_scored as f64;
        Ok(Self {
            ppl: nll_per_token.exp(),
            nll_per_token,
            tokens_scored,
            rows: row_nll_sums.len(),
            row_nll_sums,
        })
    }
}

/// Checks that every id fits the model's vocabulary.
pub fn check_vocab(model: &Llama, rows: &TokenRows) -> Result<()> {
    if let Some(max) = rows.max_id() {
        if max as usize >= model.config.vocab_size {
            return Err(StageError::Input(format!(
                "token id {max} is outside the model's vocabulary of {} tokens: the ids were made with another tokenizer",
                model.config.vocab_size
            )));
        }
    }
    Ok(())
}

/// Perplexity of `model` on `rows`, `batch_size` rows per forward pass.
pub fn perplexity(model: &Llama, rows: &TokenRows, batch_size: usize) -> Result<PerplexityReport> {
    check_vocab(model, rows)?;
    let batch_size = batch_size.max(1);
    let mut sums = Vec::with_capacity(rows.rows());
    let mut scored = 0u64;
    for start in (0..rows.rows()).step_by(batch_size) {
        let range = start..(start + batch_size).min(rows.rows());
        let (tokens, lengths) = rows.batch(range, model.device())?;
        let out = model.forward(&tokens, ForwardOptions::default())?;
        let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
        sums.extend(row_nll(model, &out.last_hidden, &ids, &lengths)?);
        scored += lengths
            .iter()
            .map(|&l| l.saturating_sub(1) as u64)
            .sum::<u64>();
    }
    PerplexityReport::from_rows(sums, scored)
}

/// Negative log-likelihood sum of every row of a batch, from the last layer's output
/// `last_hidden` `[b, t, hidden]` (before the final norm); `ids` is the batch `[b, t]` flat.
pub fn row_nll(
    model: &Llama,
    last_hidden: &Tensor,
    ids: &[u32],
    lengths: &[usize],
) -> Result<Vec<f64>> {
    let (b, t, _) = last_hidden.dims3()?;
    let mut out = Vec::with_capacity(b);
    for (r, &len) in lengths.iter().enumerate().take(b) {
        if len < 2 {
            out.push(0.0);
            continue;
        }
        let h = last_hidden.get(r)?.narrow(0, 0, len - 1)?;
        let logits = model.logits(&h)?.to_dtype(candle_core::DType::F32)?;
        let logits = logits.to_device(&candle_core::Device::Cpu)?.contiguous()?;
        let vocab = logits.dim(1)?;
        let values = logits.flatten_all()?.to_vec1::<f32>()?;
        let targets = &ids[r * t + 1..r * t + len];
        let nll: f64 = values
            .par_chunks(vocab)
            .zip(targets.par_iter())
            .map(|(row, &target)| token_nll(row, target as usize))
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        if !nll.is_finite() {
            return Err(StageError::Input(format!(
                "the model's log-likelihood of batch row {r} is not finite: its weights or activations are broken"
            )));
        }
        out.push(nll);
    }
    Ok(out)
}

/// `−log_softmax(logits)[target]` in f64.
fn token_nll(logits: &[f32], target: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    max + sum.ln() - logits[target] as f64
}

/// Perplexity of the model without block `[start, start + n)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeasuredBlock {
    pub n: usize,
    pub start: usize,
    pub ppl: f64,
}

/// What [`BlockPerplexity`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPerplexities {
    /// The full model.
    pub full: f64,
    pub blocks: Vec<MeasuredBlock>,
}

/// Perplexity with block `[start, start + n)` removed, for a set of blocks, accumulated batch
/// by batch from the hidden states of a full forward pass.
pub struct BlockPerplexity {
    blocks: Vec<(usize, usize)>,
    nll: Vec<f64>,
    full_nll: f64,
    scored: u64,
}

impl BlockPerplexity {
    /// `blocks`: `(n, start)` pairs.
    pub fn new(blocks: Vec<(usize, usize)>) -> Self {
        let nll = vec![0.0; blocks.len()];
        Self {
            blocks,
            nll,
            full_nll: 0.0,
            scored: 0,
        }
    }

    /// One batch: `hidden` = `h_0 .. h_L` of `tokens` (`[b, t]` flat `ids`).
    pub fn add_batch(
        &mut self,
        model: &Llama,
        hidden: &[Tensor],
        ids: &[u32],
        lengths: &[usize],
    ) -> Result<()> {
        let layers = model.num_layers();
        if hidden.len() != layers + 1 {
            return Err(StageError::Input(format!(
                "{} hidden states for {layers} layers",
                hidden.len()
            )));
        }
        self.full_nll += row_nll(model, &hidden[layers], ids, lengths)?
            .iter()
            .sum::<f64>();
        for (&(n, start), nll) in self.blocks.iter().zip(self.nll.iter_mut()) {
            // h_start enters the removed block; the layers after it continue from there.
            let tail = model.forward_layers(&hidden[start], start + n..layers, false)?;
            *nll += row_nll(model, &tail, ids, lengths)?.iter().sum::<f64>();
        }
        self.scored += lengths
            .iter()
            .map(|&l| l.saturating_sub(1) as u64)
            .sum::<u64>();
        Ok(())
    }

    /// The perplexity of the full model and of every block, in the order given to `new`.
    pub fn finish(&self) -> Result<BlockPerplexities> {
        if self.scored == 0 {
            return Err(StageError::Input(
                "no token to score for perplexity: every calibration row has fewer than 2 tokens"
                    .into(),
            ));
        }
        let tokens = self.scored as f64;
        let blocks = self
            .blocks
            .iter()
            .zip(&self.nll)
            .map(|(&(n, start), &nll)| MeasuredBlock {
                n,
                start,
                ppl: (nll / tokens).exp(),
            })
            .collect();
        Ok(BlockPerplexities {
            full: (self.full_nll / tokens).exp(),
            blocks,
        })
    }
}
