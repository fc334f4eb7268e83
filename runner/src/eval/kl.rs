//! KL(base ‖ model) per token on held-out text: how far a pruned or recovered model's
//! next-token distributions are from the base model's. Accuracy on a few hundred benchmark
//! items cannot see a pruning change of a small model, while the distributions it predicts
//! differ at every position; this task measures that directly and pairs by row.
//!
//! The base model's eval writes [`REFERENCE_FILE`]: for every scored position of every row its
//! [`TOP_K`] most likely tokens with their log-probabilities, and the log of the probability
//! mass of all other tokens. A variant's eval reads that file (as a sibling of the base's
//! `eval.json`) instead of loading the base model, and computes per position the exact KL
//! divergence between the two distributions over `TOP_K + 1` outcomes (the top tokens, and
//! "any other token" merged into one). Merging outcomes never increases a KL divergence, so
//! the value is a lower bound on the full-vocabulary KL; the base's mean top-k mass says how
//! tight it is (`reference_topk_mass` in eval.json).
//!
//! Rows are the perplexity task's rows (the held-out Alpaca stream by default), each scored
//! on its own tokens (no context from other rows): positions `0..L-1` predict tokens `1..L`.
//! For speed, rows of similar length share a forward pass, right-padded (see `map_rows`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::scorer::{for_logit_chunks, log_softmax_summary};
use crate::error::{Result, StageError};
use crate::model::kernels::logsumexp;
use crate::model::{ForwardOptions, Llama};

/// The base model's next-token distributions, beside its `eval.json`.
pub const REFERENCE_FILE: &str = "kl_reference.safetensors";
/// Tokens kept per position in the reference.
pub const TOP_K: usize = 256;

/// The reference distributions of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowReference {
    /// The row's position among all rows of the source.
    pub idx: usize,
    /// The row's tokens (checked against the variant's rows).
    pub tokens: Vec<u32>,
    /// `[positions × k]` token ids, most likely first.
    pub top_ids: Vec<u32>,
    /// `[positions × k]` their log-probabilities.
    pub top_logp: Vec<f32>,
    /// Per position: ln of the probability mass outside the top k (−∞ when none).
    pub rest_logp: Vec<f32>,
}

impl RowReference {
    /// Scored positions: every token but the last predicts the next.
    pub fn positions(&self) -> usize {
        self.tokens.len().saturating_sub(1)
    }
}

/// The reference of every scored row.
#[derive(Debug, Clone, PartialEq)]
pub struct KlReference {
    pub top_k: usize,
    pub rows: Vec<RowReference>,
}

/// KL and NLL of one row, summed over its positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowKl {
    pub idx: usize,
    pub positions: usize,
    /// Σ KL(base ‖ model) over positions, nats.
    pub kl_sum: f64,
    /// Σ −log p_model(next token), nats.
    pub nll_sum: f64,
    /// Σ of the base's top-k probability mass.
    pub reference_mass_sum: f64,
}

impl RowKl {
    fn summed(idx: usize, per_position: impl IntoIterator<Item = (f64, f64, f64)>) -> Self {
        let mut row = RowKl {
            idx,
            positions: 0,
            kl_sum: 0.0,
            nll_sum: 0.0,
            reference_mass_sum: 0.0,
        };
        for (kl, nll, mass) in per_position {
            row.positions += 1;
            row.kl_sum += kl;
            row.nll_sum += nll;
            row.reference_mass_sum += mass;
        }
        row
    }

    /// Mean KL per scored token of the row.
    pub fn kl_per_token(&self) -> f64 {
        self.kl_sum / self.positions.max(1) as f64
    }
}

/// One position of the reference: the `k` most likely tokens (most likely first) with their
/// log-probabilities, ln of the remaining mass, and the top-k mass.
pub fn position_reference(logits: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32, f64) {
    let (ids, logp, rest, mass, _) = reference_and_lse(logits, k);
    (ids, logp, rest, mass)
}

/// [`position_reference`] with the row's log-sum-exp (computed once for both).
fn reference_and_lse(logits: &[f32], k: usize) -> (Vec<u32>, Vec<f32>, f32, f64, f64) {
    let (lse, argmax) = log_softmax_summary(logits);
    let order = top_k_ids(logits, k);
    let logp: Vec<f32> = order
        .iter()
        .map(|&i| (f64::from(logits[i as usize]) - lse) as f32)
        .collect();
    let top_mass: f64 = order
        .iter()
        .map(|&i| (f64::from(logits[i as usize]) - lse).exp())
        .sum();
    let rest = rest_mass(logits, logits[argmax as usize], lse, &order);
    (order, logp, rest.ln() as f32, top_mass.min(1.0), lse)
}

/// The `k` largest logits' ids, most likely first (ties: the lower id first). One pass that
/// keeps at most `2k` candidates and skips what cannot beat the `k`-th of them, instead of
/// selecting over a copy of all ids (a 49 152-wide row per position).
fn top_k_ids(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let desc = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut kept: Vec<(f32, u32)> = Vec::with_capacity(2 * k);
    // The k-th best kept so far, once known: a later entry that is not above it ranks after
    // k entries (ties go to the lower id, and ids come in order).
    let mut floor: Option<f32> = None;
    for (i, &v) in logits.iter().enumerate() {
        if floor.is_some_and(|f| v.total_cmp(&f).is_le()) {
            continue;
        }
        kept.push((v, i as u32));
        if kept.len() == 2 * k {
            kept.select_nth_unstable_by(k - 1, desc);
            kept.truncate(k);
            floor = Some(kept[k - 1].0);
        }
    }
    if kept.len() > k {
        kept.select_nth_unstable_by(k - 1, desc);
        kept.truncate(k);
    }
    kept.sort_unstable_by(desc);
    kept.into_iter().map(|(_, i)| i).collect()
}

thread_local! {
    /// [`rest_mass`]'s flags, all false between calls (one row's worth per thread, reused).
    static IN_TOP: std::cell::RefCell<Vec<bool>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Probability mass (under the softmax of `logits`, maximum `max`, log-normaliser `lse`) of
/// the tokens not in `ids`, summed over those tokens directly (no `1 − Σ top` cancellation).
fn rest_mass(logits: &[f32], max: f32, lse: f64, ids: &[u32]) -> f64 {
    IN_TOP.with(|cell| {
        let mut in_top = cell.borrow_mut();
        if in_top.len() != logits.len() {
            *in_top = vec![false; logits.len()];
        }
        for &i in ids {
            if let Some(slot) = in_top.get_mut(i as usize) {
                *slot = true;
            }
        }
        let mass = logsumexp::mass_excluding(logits, max, lse, &in_top);
        for &i in ids {
            if let Some(slot) = in_top.get_mut(i as usize) {
                *slot = false;
            }
        }
        mass
    })
}

/// KL(reference ‖ model) at one position over the reference's top tokens and the merged rest,
/// with the model's NLL of `target`.
pub fn position_kl(
    logits: &[f32],
    top_ids: &[u32],
    top_logp: &[f32],
    rest_logp: f32,
    target: u32,
) -> Result<(f64, f64)> {
    let vocab = logits.len();
    let (lse, argmax) = log_softmax_summary(logits);
    let logit_of = |id: u32| -> Result<f64> {
        logits
            .get(id as usize)
            .map(|&l| f64::from(l))
            .ok_or_else(|| {
                StageError::Input(format!(
                "kl: token id {id} of the reference is outside the model's vocabulary ({vocab}); \
                 the base and this model must share a tokenizer"
            ))
            })
    };
    let mut kl = 0.0;
    for (&id, &lp) in top_ids.iter().zip(top_logp) {
        let lp = f64::from(lp);
        kl += lp.exp() * (lp - (logit_of(id)? - lse));
    }
    let rest_p = f64::from(rest_logp).exp();
    if rest_p > 0.0 {
        // A model mass of exactly 0 outside the top k would make the KL infinite; the floor
        // keeps the term finite (ln 1e-300 ≈ −691).
        let max = logits
            .get(argmax as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        let q_rest = rest_mass(logits, max, lse, top_ids).max(1e-300);
        kl += rest_p * (f64::from(rest_logp) - q_rest.ln());
    }
    let nll = lse - logit_of(target)?;
    // Rounding can make a KL of identical distributions −1e-9.
    Ok((kl.max(0.0), nll))
}

/// Tokens per forward pass when rows are batched: rows of similar length are right-padded to
/// the longest of their batch (causal attention keeps padding out of every real position),
/// so the GEMMs see about this many rows instead of one row's length.
const BATCH_TOKENS: usize = 1024;

/// The forward passes over `rows`: rows with a position to score, longest first, in batches
/// of about [`BATCH_TOKENS`] tokens (each padded to its first, longest row).
fn row_batches(rows: &[&[u32]]) -> Vec<Vec<usize>> {
    let positions = |r: usize| rows[r].len().saturating_sub(1);
    let mut order: Vec<usize> = (0..rows.len()).filter(|&r| positions(r) > 0).collect();
    order.sort_by_key(|&r| std::cmp::Reverse(positions(r)));
    let mut batches = Vec::new();
    let mut next = 0;
    while next < order.len() {
        let fit = (BATCH_TOKENS / positions(order[next])).max(1);
        let end = (next + fit).min(order.len());
        batches.push(order[next..end].to_vec());
        next = end;
    }
    batches
}

/// Forward passes that [`reference_of`] or [`kl_against`] run over `rows`.
pub fn forward_passes(rows: &[(usize, &[u32])]) -> usize {
    let tokens_of: Vec<&[u32]> = rows.iter().map(|&(_, tokens)| tokens).collect();
    row_batches(&tokens_of).len()
}

/// Runs `model` over `rows` and maps every scored position's f32 logits with
/// `f(row, position, logits)`; `out[r][p]` is row `r`'s position `p`. Rows run in batches of
/// similar length (see [`BATCH_TOKENS`]); positions are mapped in parallel.
fn map_rows<T: Send>(
    model: &Llama,
    rows: &[&[u32]],
    f: impl Fn(usize, usize, &[f32]) -> Result<T> + Sync,
) -> Result<Vec<Vec<T>>> {
    let positions = |r: usize| rows[r].len().saturating_sub(1);
    let mut out: Vec<Vec<T>> = rows.iter().map(|_| Vec::new()).collect();
    for batch in row_batches(rows) {
        let width = positions(batch[0]);
        let mut ids = vec![0u32; batch.len() * width];
        // (batch row × width + position) of every scored position, with its row and position.
        let mut gather: Vec<u32> = Vec::new();
        let mut owner: Vec<(usize, usize)> = Vec::new();
        for (i, &r) in batch.iter().enumerate() {
            let n = positions(r);
            ids[i * width..i * width + n].copy_from_slice(&rows[r][..n]);
            for p in 0..n {
                gather.push((i * width + p) as u32);
                owner.push((r, p));
            }
        }
        let input = Tensor::from_vec(ids, (batch.len(), width), model.device())?;
        let hidden = model
            .forward(&input, ForwardOptions::default())?
            .last_hidden
            .reshape((batch.len() * width, model.config.hidden_size))?;
        for_logit_chunks(model, &hidden, &gather, |start, vocab, data| {
            let owner_chunk = &owner[start..start + data.len() / vocab];
            let mapped: Vec<T> = data
                .par_chunks(vocab)
                .zip(owner_chunk)
                .map(|(row, &(r, p))| f(r, p, row))
                .collect::<Result<_>>()?;
            for (value, &(r, p)) in mapped.into_iter().zip(owner_chunk) {
                debug_assert_eq!(out[r].len(), p, "positions arrive in order");
                out[r].push(value);
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// The base model's reference for `rows` (`(idx, tokens)`), with each row's values against
/// itself (KL 0, the base's NLL, its top-k mass).
pub fn reference_of(
    model: &Llama,
    rows: &[(usize, &[u32])],
    top_k: usize,
) -> Result<(KlReference, Vec<RowKl>)> {
    // A vocabulary smaller than `top_k` is kept whole (the KL is then exact).
    let top_k = top_k.min(model.config.vocab_size);
    let tokens_of: Vec<&[u32]> = rows.iter().map(|&(_, tokens)| tokens).collect();
    let per_row = map_rows(model, &tokens_of, |r, p, logits| {
        let (idx, tokens) = rows[r];
        let (ids, logp, rest, mass, lse) = reference_and_lse(logits, top_k);
        let target = tokens[p + 1];
        let logit = logits.get(target as usize).copied().ok_or_else(|| {
            StageError::Input(format!(
                "kl: token id {target} of row {idx} is outside the model's vocabulary ({})",
                logits.len()
            ))
        })?;
        Ok((ids, logp, rest, mass, lse - f64::from(logit)))
    })?;
    let mut refs = Vec::with_capacity(rows.len());
    let mut own = Vec::with_capacity(rows.len());
    for (&(idx, tokens), per_position) in rows.iter().zip(per_row) {
        let mut row = RowReference {
            idx,
            tokens: tokens.to_vec(),
            top_ids: Vec::with_capacity(per_position.len() * top_k),
            top_logp: Vec::with_capacity(per_position.len() * top_k),
            rest_logp: Vec::with_capacity(per_position.len()),
        };
        let mut values = Vec::with_capacity(per_position.len());
        for (ids, logp, rest, mass, nll) in per_position {
            if ids.len() != top_k {
                return Err(StageError::Input(format!(
                    "kl: the model's logits have {} entries, its config says {} tokens",
                    ids.len(),
                    model.config.vocab_size
                )));
            }
            row.top_ids.extend(ids);
            row.top_logp.extend(logp);
            row.rest_logp.push(rest);
            values.push((0.0, nll, mass));
        }
        own.push(RowKl::summed(idx, values));
        refs.push(row);
    }
    Ok((KlReference { top_k, rows: refs }, own))
}

/// KL(reference ‖ model) of every row of the reference, scored with `model`; `rows` are the
/// variant's rows (`(idx, tokens)`), which must be the reference's.
pub fn kl_against(
    model: &Llama,
    reference: &KlReference,
    rows: &[(usize, &[u32])],
) -> Result<Vec<RowKl>> {
    let k = reference.top_k;
    let by_idx: HashMap<usize, &RowReference> = reference.rows.iter().map(|r| (r.idx, r)).collect();
    let reference_rows = rows
        .iter()
        .map(|&(idx, tokens)| {
            by_idx
                .get(&idx)
                .copied()
                .filter(|r| r.tokens == tokens)
                .ok_or_else(|| {
                    StageError::Input(format!(
                        "kl: row {idx} is not in the base model's reference, or has other \
                         tokens; evaluate the base and this model with the same kl task \
                         settings (rows, limit, uri) and the same tokenizer"
                    ))
                })
        })
        .collect::<Result<Vec<&RowReference>>>()?;
    let tokens_of: Vec<&[u32]> = rows.iter().map(|&(_, tokens)| tokens).collect();
    let per_row = map_rows(model, &tokens_of, |r, p, logits| {
        let reference_row = reference_rows[r];
        let (kl, nll) = position_kl(
            logits,
            &reference_row.top_ids[p * k..(p + 1) * k],
            &reference_row.top_logp[p * k..(p + 1) * k],
            reference_row.rest_logp[p],
            tokens_of[r][p + 1],
        )?;
        let mass: f64 = reference_row.top_logp[p * k..(p + 1) * k]
            .iter()
            .map(|&lp| f64::from(lp).exp())
            .sum();
        Ok((kl, nll, mass))
    })?;
    Ok(rows
        .iter()
        .zip(per_row)
        .map(|(&(idx, _), values)| RowKl::summed(idx, values))
        .collect())
}

const ROW_IDX: &str = "row_idx";
const ROW_LEN: &str = "row_len";
const TOKENS: &str = "tokens";
const TOP_IDS: &str = "top_ids";
const TOP_LOGP: &str = "top_logp";
const REST_LOGP: &str = "rest_logp";

/// Writes the reference (temp file, then rename).
pub fn save_reference(reference: &KlReference, path: &Path) -> Result<()> {
    let k = reference.top_k;
    let positions: usize = reference.rows.iter().map(RowReference::positions).sum();
    let cat = |f: fn(&RowReference) -> &[u32]| -> Vec<u32> {
        reference
            .rows
            .iter()
            .flat_map(|r| f(r).iter().copied())
            .collect()
    };
    let cpu = Device::Cpu;
    let rows = reference.rows.len();
    let as_u32 = |v: usize| -> Result<u32> {
        u32::try_from(v)
            .map_err(|_| StageError::Input(format!("kl: {v} does not fit a u32 in the reference")))
    };
    let idx: Vec<u32> = reference
        .rows
        .iter()
        .map(|r| as_u32(r.idx))
        .collect::<Result<_>>()?;
    let len: Vec<u32> = reference
        .rows
        .iter()
        .map(|r| as_u32(r.tokens.len()))
        .collect::<Result<_>>()?;
    let tokens = cat(|r| &r.tokens);
    let top_ids = cat(|r| &r.top_ids);
    let top_logp: Vec<f32> = reference
        .rows
        .iter()
        .flat_map(|r| r.top_logp.iter().copied())
        .collect();
    let rest_logp: Vec<f32> = reference
        .rows
        .iter()
        .flat_map(|r| r.rest_logp.iter().copied())
        .collect();
    let n_tokens = tokens.len();
    let tensors: HashMap<String, Tensor> = [
        (ROW_IDX, Tensor::from_vec(idx, rows, &cpu)?),
        (ROW_LEN, Tensor::from_vec(len, rows, &cpu)?),
        (TOKENS, Tensor::from_vec(tokens, n_tokens, &cpu)?),
        (TOP_IDS, Tensor::from_vec(top_ids, (positions, k), &cpu)?),
        (TOP_LOGP, Tensor::from_vec(top_logp, (positions, k), &cpu)?),
        (REST_LOGP, Tensor::from_vec(rest_logp, positions, &cpu)?),
    ]
    .into_iter()
    .map(|(name, t)| (name.to_string(), t))
    .collect();
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| StageError::Input(format!("kl: cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| StageError::io(path, e))
}

/// Reads a reference written by [`save_reference`].
pub fn load_reference(path: &Path) -> Result<KlReference> {
    let bad = |why: String| {
        StageError::Input(format!(
            "{}: not a KL reference ({why}); rerun the base model's eval with the kl task",
            path.display()
        ))
    };
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| bad(format!("unreadable: {e}")))?;
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| bad(format!("no tensor `{name}`")))
    };
    let u32s = |name: &str| -> Result<Vec<u32>> {
        get(name)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(|e| bad(format!("`{name}`: {e}")))
    };
    let f32s = |name: &str| -> Result<Vec<f32>> {
        get(name)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| bad(format!("`{name}`: {e}")))
    };
    let k = get(TOP_IDS)?
        .dims()
        .get(1)
        .copied()
        .ok_or_else(|| bad("`top_ids` is not [positions, k]".into()))?;
    let (idx, len, tokens) = (u32s(ROW_IDX)?, u32s(ROW_LEN)?, u32s(TOKENS)?);
    let (top_ids, top_logp, rest_logp) = (u32s(TOP_IDS)?, f32s(TOP_LOGP)?, f32s(REST_LOGP)?);
    let positions: usize = len.iter().map(|&l| (l as usize).saturating_sub(1)).sum();
    if idx.len() != len.len()
        || tokens.len() != len.iter().map(|&l| l as usize).sum::<usize>()
        || rest_logp.len() != positions
        || top_ids.len() != positions * k
        || top_logp.len() != positions * k
    {
        return Err(bad("tensor sizes disagree".into()));
    }
    let (mut t0, mut p0) = (0usize, 0usize);
    let rows = idx
        .iter()
        .zip(&len)
        .map(|(&i, &l)| {
            let l = l as usize;
            let p = l.saturating_sub(1);
            let row = RowReference {
                idx: i as usize,
                tokens: tokens[t0..t0 + l].to_vec(),
                top_ids: top_ids[p0 * k..(p0 + p) * k].to_vec(),
                top_logp: top_logp[p0 * k..(p0 + p) * k].to_vec(),
                rest_logp: rest_logp[p0..p0 + p].to_vec(),
            };
            t0 += l;
            p0 += p;
            row
        })
        .collect();
    Ok(KlReference { top_k: k, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn softmax(logits: &[f32]) -> Vec<f64> {
        let (lse, _) = log_softmax_summary(logits);
        logits.iter().map(|&l| (f64::from(l) - lse).exp()).collect()
    }

    #[test]
    fn full_reference_gives_the_exact_kl() {
        let p_logits = [1.0f32, 0.5, -0.3, 2.0, 0.0];
        let q_logits = [0.2f32, 0.9, -1.0, 1.5, 0.3];
        let (ids, logp, rest, mass) = position_reference(&p_logits, 5);
        assert_eq!(ids[0], 3, "most likely first");
        // The log-sum-exp kernel is within ~3e-7 of the f64 definition.
        assert!(rest == f32::NEG_INFINITY && (mass - 1.0).abs() < 1e-6);
        let (kl, nll) = position_kl(&q_logits, &ids, &logp, rest, 1).expect("kl");
        let (p, q) = (softmax(&p_logits), softmax(&q_logits));
        let exact: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        assert!((kl - exact).abs() < 1e-6, "{kl} vs {exact}");
        assert!((nll + q[1].ln()).abs() < 1e-9);
    }

    #[test]
    fn merged_rest_is_a_lower_bound_and_exact_for_equal_models() {
        let p_logits = [1.0f32, 0.5, -0.3, 2.0, 0.0, -2.0];
        let q_logits = [0.2f32, 0.9, -1.0, 1.5, 0.3, 1.0];
        let (ids, logp, rest, mass) = position_reference(&p_logits, 2);
        assert_eq!(ids, vec![3, 0]);
        let p = softmax(&p_logits);
        assert!((mass - (p[3] + p[0])).abs() < 1e-9);
        assert!((f64::from(rest).exp() - (1.0 - p[3] - p[0])).abs() < 1e-6);
        let (kl, _) = position_kl(&q_logits, &ids, &logp, rest, 0).expect("kl");
        let q = softmax(&q_logits);
        let exact: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        let (pr, qr) = (1.0 - p[3] - p[0], 1.0 - q[3] - q[0]);
        let merged = p[3] * (p[3] / q[3]).ln() + p[0] * (p[0] / q[0]).ln() + pr * (pr / qr).ln();
        assert!((kl - merged).abs() < 1e-6, "{kl} vs {merged}");
        assert!(kl < exact);
        let (same, _) = position_kl(&p_logits, &ids, &logp, rest, 0).expect("kl");
        assert!(same.abs() < 1e-7);
    }

    #[test]
    fn batched_rows_score_like_rows_on_their_own() {
        use crate::model::config::ModelConfig;
        let config = ModelConfig::from_json(
            serde_json::json!({"architectures":["LlamaForCausalLM"],"hidden_size":32,
                "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,
                "num_key_value_heads":2,"vocab_size":300,"rms_norm_eps":1e-5,
                "tie_word_embeddings":false,"max_position_embeddings":128}),
            "tiny",
        )
        .expect("config");
        let model = crate::model::random::random_model(config, 11, DType::F32, &Device::Cpu)
            .expect("model");
        // Lengths unlike each other, one row too short to score: one right-padded batch.
        let tokens: Vec<Vec<u32>> = [2usize, 9, 30, 1, 17, 30, 5]
            .iter()
            .enumerate()
            .map(|(r, &n)| (0..n).map(|i| ((i * 37 + r * 101) % 300) as u32).collect())
            .collect();
        let rows: Vec<(usize, &[u32])> = tokens.iter().map(|t| t.as_slice()).enumerate().collect();
        let (batched, own) = reference_of(&model, &rows, 8).expect("batched");
        for (i, &row) in rows.iter().enumerate() {
            let (alone, alone_own) = reference_of(&model, &[row], 8).expect("alone");
            let (b, a) = (&batched.rows[i], &alone.rows[0]);
            assert_eq!(b.idx, a.idx);
            assert_eq!(b.top_ids, a.top_ids, "row {i}");
            assert_eq!(b.top_logp.len(), row.1.len().saturating_sub(1) * 8);
            for (x, y) in b
                .top_logp
                .iter()
                .zip(&a.top_logp)
                .chain(b.rest_logp.iter().zip(&a.rest_logp))
            {
                assert!((x - y).abs() < 1e-4, "row {i}: {x} vs {y}");
            }
            assert!(
                (own[i].nll_sum - alone_own[0].nll_sum).abs() < 1e-3,
                "row {i}"
            );
        }
        let against = kl_against(&model, &batched, &rows).expect("kl");
        for (row, mine) in against.iter().zip(&own) {
            assert_eq!(row.positions, mine.positions);
            assert!(
                row.kl_sum.abs() < 1e-5,
                "a model against its own reference: {}",
                row.kl_sum
            );
            assert!((row.nll_sum - mine.nll_sum).abs() < 1e-6);
        }
    }

    #[test]
    fn reference_survives_a_round_trip_and_rejects_garbage() {
        let reference = KlReference {
            top_k: 2,
            rows: vec![
                RowReference {
                    idx: 4,
                    tokens: vec![1, 2, 3],
                    top_ids: vec![5, 6, 7, 8],
                    top_logp: vec![-0.1, -2.0, -0.5, -1.5],
                    rest_logp: vec![-4.0, f32::NEG_INFINITY],
                },
                RowReference {
                    idx: 9,
                    tokens: vec![7, 8],
                    top_ids: vec![1, 0],
                    top_logp: vec![-0.2, -1.9],
                    rest_logp: vec![-3.0],
                },
            ],
        };
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(REFERENCE_FILE);
        save_reference(&reference, &path).expect("save");
        assert_eq!(load_reference(&path).expect("load"), reference);
        std::fs::write(&path, b"not safetensors").expect("write");
        let err = load_reference(&path).expect_err("garbage refused");
        assert!(err.to_string().contains("rerun the base"), "{err}");
    }

    #[test]
    fn top_k_ids_are_the_k_largest_with_ties_to_the_lower_id() {
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 301) as f32 / 10.0)
            .collect();
        for k in [0usize, 1, 2, 7, 64, 300, 4999, 5000, 6000] {
            let mut want: Vec<u32> = (0..logits.len() as u32).collect();
            want.sort_by(|&a, &b| {
                logits[b as usize]
                    .total_cmp(&logits[a as usize])
                    .then(a.cmp(&b))
            });
            want.truncate(k);
            assert_eq!(top_k_ids(&logits, k), want, "k = {k}");
        }
    }
}
