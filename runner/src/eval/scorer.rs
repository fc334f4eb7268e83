//! Log-likelihood scoring with lm-evaluation-harness semantics (`HFLM._encode_pair` and
//! `HFLM._loglikelihood_tokens`, lm_eval/models/huggingface.py).
//!
//! Encoding ([`encode_pair`]):
//! - trailing whitespace of the context moves to the start of the continuation;
//! - `whole = enc(ctx + cont)`, `context = enc(ctx)`, `continuation = whole[len(context):]`,
//!   no special tokens (no BOS);
//! - the model sees `context + continuation`. When `enc(ctx)` is not a prefix of `whole`, lm-eval
//!   still takes `continuation = whole[len(context):]` and appends it to `enc(ctx)` (it does not
//!   re-encode the continuation on its own); we do the same and record
//!   [`EncodedRequest::context_is_prefix`] for the audit log;
//! - an empty context becomes `[eot]` and the continuation `enc(cont)`.
//!
//! Scoring ([`score`]): `tokens = (context + continuation)[-(max_length + 1):]`, model input
//! `tokens[:-1]` (contexts longer than the window are cut on the left, as lm-eval does), and
//! `ll = Σ log_softmax(logits)[target]` over the continuation positions, with the log-softmax
//! and the sum in f64 from f32 logits; `is_greedy` says whether every continuation token is the
//! argmax.
//!
//! Speed: requests with identical inputs are run once; the distinct inputs are arranged by
//! shared prefixes ([`super::prefix_cache`]) so a context shared by the choices of a document
//! (or a few-shot preamble shared by documents) runs once into a KV-cache row that the choices
//! then continue; the final norm and the LM head run only at continuation positions. On
//! devices whose KV cache cannot fork rows (non-CPU), every input runs on its own in
//! right-padded batches sorted by length.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::prefix_cache::{BatchLimits, Plan, PrefixTree};
use crate::data::tasks::split_trailing_whitespace;
use crate::error::{Result, StageError};
use crate::model::{ForwardOptions, Llama};
use crate::tokenizer::Tokenizer;

/// A log-likelihood request as token ids: lm-eval's `(context_enc, continuation_enc)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
    /// Whether `enc(ctx)` is a prefix of `enc(ctx + cont)`.
    pub context_is_prefix: bool,
}

/// lm-eval's `_encode_pair` (see the module docs). `eot` is used for an empty context.
pub fn encode_pair(
    tokenizer: &Tokenizer,
    ctx: &str,
    cont: &str,
    eot: u32,
) -> Result<EncodedRequest> {
    if ctx.is_empty() {
        return Ok(EncodedRequest {
            context: vec![eot],
            continuation: tokenizer.encode(cont, false)?,
            context_is_prefix: true,
        });
    }
    let (ctx, cont) = split_trailing_whitespace(ctx, cont);
    let whole = tokenizer.encode(&format!("{ctx}{cont}"), false)?;
    let context = tokenizer.encode(&ctx, false)?;
    let context_is_prefix = whole.starts_with(&context);
    let continuation = whole.get(context.len()..).unwrap_or_default().to_vec();
    Ok(EncodedRequest {
        context,
        continuation,
        context_is_prefix,
    })
}

/// The result of one request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LlScore {
    /// Σ log p(continuation token | everything before it).
    pub ll: f64,
    /// Every continuation token is the argmax of its logits.
    pub is_greedy: bool,
    /// Continuation tokens scored.
    pub tokens: usize,
}

/// How to run the scorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScorerOptions {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Padded tokens per forward pass (a longer sequence runs alone).
    pub max_batch_tokens: usize,
    /// Model window: longer inputs are cut on the left.
    pub max_length: usize,
    /// Memory for the KV cache of one window of sequences, in bytes.
    pub kv_budget_bytes: usize,
    /// Share prefixes through the KV cache (CPU); `false` runs every input on its own.
    pub prefix_cache: bool,
}

impl ScorerOptions {
    pub const DEFAULT_MAX_BATCH_TOKENS: usize = 2048;
    pub const DEFAULT_KV_BUDGET_BYTES: usize = 1 << 30;

    pub fn new(batch_size: usize, max_length: usize) -> Self {
        ScorerOptions {
            batch_size,
            max_batch_tokens: Self::DEFAULT_MAX_BATCH_TOKENS,
            max_length,
            kv_budget_bytes: Self::DEFAULT_KV_BUDGET_BYTES,
            prefix_cache: true,
        }
    }
}

/// Work done by the scorer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoreStats {
    pub requests: usize,
    /// Distinct model inputs.
    pub sequences: usize,
    /// Σ input tokens over all requests (what scoring them one by one would run).
    pub request_tokens: usize,
    /// Tokens run through the model (shared prefixes once, padding excluded).
    pub forward_tokens: usize,
    /// Rows × width of every forward pass (padding included).
    pub padded_tokens: usize,
    /// Positions that went through the final norm and the LM head.
    pub logit_rows: usize,
    pub forward_calls: usize,
    pub seconds: f64,
    /// Of which: forward passes through the layers (KV forks included).
    pub forward_seconds: f64,
    /// Of which: final norm, LM head and log-softmax at the scored positions.
    pub logits_seconds: f64,
}

impl ScoreStats {
    pub fn add(&mut self, o: &ScoreStats) {
        self.requests += o.requests;
        self.sequences += o.sequences;
        self.request_tokens += o.request_tokens;
        self.forward_tokens += o.forward_tokens;
        self.padded_tokens += o.padded_tokens;
        self.logit_rows += o.logit_rows;
        self.forward_calls += o.forward_calls;
        self.seconds += o.seconds;
        self.forward_seconds += o.forward_seconds;
        self.logits_seconds += o.logits_seconds;
    }

    /// Tokens run through the model per second.
    pub fn forward_tokens_per_s(&self) -> f64 {
        self.forward_tokens as f64 / self.seconds.max(1e-9)
    }

    /// Tokens per second of the forward passes alone (comparable to a plain forward pass
    /// without the LM head).
    pub fn forward_pass_tokens_per_s(&self) -> f64 {
        self.forward_tokens as f64 / self.forward_seconds.max(1e-9)
    }

    /// Request input tokens scored per second (the speed-up of sharing shows here).
    pub fn request_tokens_per_s(&self) -> f64 {
        self.request_tokens as f64 / self.seconds.max(1e-9)
    }
}

/// A request ready to run: which distinct input, where its continuation starts.
struct Prepared {
    seq: usize,
    /// First input position whose logits predict a continuation token.
    first: usize,
    targets: Vec<u32>,
}

/// One position whose logits a request needs: `(offset in node, request, continuation index)`.
type Need = (usize, usize, usize);

/// Per-request log-probabilities, filled as logits come in.
struct Sink {
    logprobs: Vec<Vec<f64>>,
    greedy: Vec<bool>,
    /// Log-probabilities filled in so far.
    filled: usize,
}

/// Scores `requests` (results in request order).
pub fn score(
    model: &Llama,
    requests: &[EncodedRequest],
    opts: &ScorerOptions,
    stats: &mut ScoreStats,
) -> Result<Vec<LlScore>> {
    let start = Instant::now();
    if opts.batch_size == 0 {
        return Err(StageError::Input("batch_size must be at least 1".into()));
    }
    if opts.max_length < 2 {
        return Err(StageError::Input(format!(
            "max_length must be at least 2 tokens, got {}",
            opts.max_length
        )));
    }
    let (seqs, prepared) = prepare(requests, opts.max_length)?;
    let mut local = ScoreStats {
        requests: requests.len(),
        sequences: seqs.len(),
        request_tokens: prepared.iter().map(|p| p.first + p.targets.len()).sum(),
        ..Default::default()
    };
    let mut sink = Sink {
        logprobs: prepared
            .iter()
            .map(|p| vec![0.0; p.targets.len()])
            .collect(),
        greedy: vec![true; prepared.len()],
        filled: 0,
    };
    let mut by_seq: Vec<Vec<usize>> = vec![Vec::new(); seqs.len()];
    for (r, p) in prepared.iter().enumerate() {
        by_seq[p.seq].push(r);
    }
    let ragged = opts.prefix_cache && model.new_cache(1, 1).is_ragged();
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by(|&a, &b| seqs[a].cmp(&seqs[b]));
    for window in windows(model, &seqs, &order, opts) {
        let views: Vec<&[u32]> = window.iter().map(|&s| seqs[s].as_slice()).collect();
        let tree = if ragged {
            PrefixTree::build(&views)
        } else {
            PrefixTree::flat(&views)
        };
        let mut needs: Vec<Vec<Need>> = vec![Vec::new(); tree.nodes.len()];
        for (local_seq, &s) in window.iter().enumerate() {
            for &r in &by_seq[s] {
                let p = &prepared[r];
                for j in 0..p.targets.len() {
                    let pos = p.first + j;
                    let node = tree.node_at(local_seq, pos).ok_or_else(|| {
                        StageError::Input(format!(
                            "internal: position {pos} of request {r} is not in the prefix tree"
                        ))
                    })?;
                    needs[node].push((pos - tree.nodes[node].start, r, j));
                }
            }
        }
        for list in &mut needs {
            list.sort_unstable();
        }
        let limits = BatchLimits {
            rows: opts.batch_size,
            tokens: opts.max_batch_tokens,
            packed: ragged,
        };
        let plan = Plan::new(&tree, limits);
        tracing::debug!(
            sequences = window.len(),
            nodes = tree.nodes.len(),
            levels = plan.levels.len(),
            rows = plan.n_rows,
            capacity = plan.capacity,
            tokens = tree.tokens(),
            "scoring window"
        );
        local.forward_tokens += tree.tokens();
        local.padded_tokens += plan.padded_tokens;
        run_plan(
            model, &tree, &plan, &views, &needs, &prepared, ragged, &mut sink, &mut local,
        )?;
    }
    let expected: usize = prepared.iter().map(|p| p.targets.len()).sum();
    if sink.filled != expected {
        return Err(StageError::Input(format!(
            "internal: {} of {expected} continuation tokens were scored",
            sink.filled
        )));
    }
    local.seconds = start.elapsed().as_secs_f64();
    stats.add(&local);
    Ok(sink
        .logprobs
        .iter()
        .zip(&sink.greedy)
        .map(|(lps, &is_greedy)| LlScore {
            ll: lps.iter().sum(),
            is_greedy,
            tokens: lps.len(),
        })
        .collect())
}

/// Distinct inputs and, per request, its input and targets.
fn prepare(
    requests: &[EncodedRequest],
    max_length: usize,
) -> Result<(Vec<Vec<u32>>, Vec<Prepared>)> {
    let mut index: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut seqs: Vec<Vec<u32>> = Vec::new();
    let mut prepared = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let n = r.continuation.len();
        if r.context.is_empty() {
            return Err(StageError::Input(format!(
                "request {i} has an empty context (lm-eval needs at least one context token)"
            )));
        }
        if n == 0 {
            return Err(StageError::Input(format!(
                "request {i}: the continuation has no tokens of its own once tokenized with the \
                 context; give choices with text"
            )));
        }
        if n > max_length {
            return Err(StageError::Input(format!(
                "request {i}: the continuation has {n} tokens, more than max_length {max_length}"
            )));
        }
        let mut whole = Vec::with_capacity(r.context.len() + n);
        whole.extend_from_slice(&r.context);
        whole.extend_from_slice(&r.continuation);
        let keep = whole.len().min(max_length + 1);
        let input = whole[whole.len() - keep..whole.len() - 1].to_vec();
        let first = input.len() - n;
        let next = seqs.len();
        let seq = *index.entry(input.clone()).or_insert(next);
        if seq == next {
            seqs.push(input);
        }
        prepared.push(Prepared {
            seq,
            first,
            targets: r.continuation.clone(),
        });
    }
    Ok((seqs, prepared))
}

/// Cuts the sorted sequences into windows whose KV cache fits the budget.
fn windows(
    model: &Llama,
    seqs: &[Vec<u32>],
    order: &[usize],
    opts: &ScorerOptions,
) -> Vec<Vec<usize>> {
    let c = &model.config;
    let bytes_per_pos = model.num_layers() * c.num_key_value_heads * c.head_dim * 2 * 4;
    let max_seqs = opts.batch_size.saturating_mul(8).max(1);
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for &s in order {
        let len = seqs[s].len().max(longest);
        let bytes = (cur.len() + 1) * len * bytes_per_pos;
        if !cur.is_empty() && (cur.len() >= max_seqs || bytes > opts.kv_budget_bytes) {
            out.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(seqs[s].len());
        cur.push(s);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run_plan(
    model: &Llama,
    tree: &PrefixTree,
    plan: &Plan,
    seqs: &[&[u32]],
    needs: &[Vec<Need>],
    prepared: &[Prepared],
    ragged: bool,
    sink: &mut Sink,
    stats: &mut ScoreStats,
) -> Result<()> {
    let mut cache = ragged.then(|| model.new_cache(plan.n_rows.max(1), plan.capacity.max(1)));
    for level in &plan.levels {
        let t0 = Instant::now();
        if let Some(cache) = cache.as_mut() {
            for &r in &level.fresh {
                cache.reset_row(r);
            }
            for f in &level.forks {
                cache.fork_row(f.src, f.dst, f.len)?;
            }
        }
        stats.forward_seconds += t0.elapsed().as_secs_f64();
        for batch in &level.batches {
            let t0 = Instant::now();
            let b = batch.nodes.len();
            // First flat position of each node in the pass's output.
            let mut at = Vec::with_capacity(b);
            let hidden = match cache.as_mut() {
                Some(cache) => {
                    // Packed: the nodes one after another, no padding.
                    let mut ids = Vec::new();
                    let mut lens = Vec::with_capacity(b);
                    for &n in &batch.nodes {
                        let node = &tree.nodes[n];
                        at.push(ids.len());
                        lens.push(node.len());
                        ids.extend_from_slice(&seqs[node.seq][node.start..node.end]);
                    }
                    let rows: Vec<usize> = batch.nodes.iter().map(|&n| plan.rows[n]).collect();
                    model.forward_cached_packed(&ids, &lens, cache, &rows)?
                }
                None => {
                    // Right-padded to the longest node.
                    let w = batch.width;
                    let mut ids = vec![0u32; b * w];
                    for (i, &n) in batch.nodes.iter().enumerate() {
                        let node = &tree.nodes[n];
                        at.push(i * w);
                        ids[i * w..i * w + node.len()]
                            .copy_from_slice(&seqs[node.seq][node.start..node.end]);
                    }
                    let tokens = Tensor::from_vec(ids, (b, w), model.device())?;
                    let hidden = model
                        .forward(&tokens, ForwardOptions::default())?
                        .last_hidden;
                    hidden.reshape((b * w, model.config.hidden_size))?
                }
            };
            stats.forward_calls += 1;
            stats.forward_seconds += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let mut gather: Vec<u32> = Vec::new();
            let mut wanted: Vec<&[Need]> = Vec::new();
            for (i, &n) in batch.nodes.iter().enumerate() {
                let list = &needs[n];
                let mut k = 0;
                while k < list.len() {
                    let off = list[k].0;
                    let mut e = k + 1;
                    while e < list.len() && list[e].0 == off {
                        e += 1;
                    }
                    gather.push((at[i] + off) as u32);
                    wanted.push(&list[k..e]);
                    k = e;
                }
            }
            if gather.is_empty() {
                continue;
            }
            score_positions(model, &hidden, &gather, &wanted, prepared, sink, stats)?;
            stats.logits_seconds += t0.elapsed().as_secs_f64();
        }
    }
    Ok(())
}

/// Positions per LM-head call (bounds the logits buffer to ~50 MB for a 49k vocabulary).
pub const LOGIT_CHUNK: usize = 256;

/// Runs the final norm and LM head on the gathered positions and hands each request its
/// log-probabilities.
fn score_positions(
    model: &Llama,
    flat_hidden: &Tensor,
    gather: &[u32],
    wanted: &[&[Need]],
    prepared: &[Prepared],
    sink: &mut Sink,
    stats: &mut ScoreStats,
) -> Result<()> {
    for_logit_chunks(model, flat_hidden, gather, |start, vocab, data| {
        let want_chunk = &wanted[start..start + data.len() / vocab];
        stats.logit_rows += want_chunk.len();
        let summaries: Vec<(f64, u32)> = data.par_chunks(vocab).map(log_softmax_summary).collect();
        for ((row, &(lse, argmax)), needs) in
            data.chunks(vocab).zip(&summaries).zip(want_chunk.iter())
        {
            for &(_, r, j) in needs.iter() {
                let target = prepared[r].targets[j];
                let logit = row.get(target as usize).copied().ok_or_else(|| {
                    StageError::Input(format!(
                        "token id {target} is outside the model's vocabulary ({vocab})"
                    ))
                })?;
                sink.logprobs[r][j] = f64::from(logit) - lse;
                sink.greedy[r] &= argmax == target;
                sink.filled += 1;
            }
        }
        Ok(())
    })
}

/// Runs the final norm and the LM head on the rows `gather` of `flat_hidden` ([positions,
/// hidden]), [`LOGIT_CHUNK`] rows at a time, and hands each chunk to
/// `f(first gathered index, vocab, logits)`: f32, row-major `[rows, vocab]`, read in place
/// from the tensor (a chunk is ~50 MB for a 49k vocabulary). Chunks come in order.
pub fn for_logit_chunks(
    model: &Llama,
    flat_hidden: &Tensor,
    gather: &[u32],
    mut f: impl FnMut(usize, usize, &[f32]) -> Result<()>,
) -> Result<()> {
    // One logits buffer for every chunk where the CPU GEMM writes into it: a fresh
    // [LOGIT_CHUNK, vocab] output per chunk (50 MB for 49k tokens) is faulted in and zeroed
    // by the kernel each time.
    let mut buffer: Vec<f32> = Vec::new();
    for (c, idx_chunk) in gather.chunks(LOGIT_CHUNK).enumerate() {
        let idx = Tensor::from_vec(idx_chunk.to_vec(), idx_chunk.len(), model.device())?;
        let normed = model.final_norm(&flat_hidden.index_select(&idx, 0)?, false)?;
        if model.lm_head_into(&normed, &mut buffer)? {
            let vocab = buffer.len() / idx_chunk.len();
            f(c * LOGIT_CHUNK, vocab, &buffer)?;
            continue;
        }
        let logits = model
            .lm_head(&normed)?
            .to_device(&candle_core::Device::Cpu)?
            .contiguous()?;
        let vocab = logits.dim(1)?;
        crate::model::kernels::with_f32(&logits, |data| f(c * LOGIT_CHUNK, vocab, data))??;
    }
    Ok(())
}

/// `(logsumexp in f64, argmax (first on ties))` of one row of f32 logits: the vectorised
/// kernel [`crate::model::kernels::logsumexp::summary`] (within about 3e-7 of the f64
/// definition).
pub fn log_softmax_summary(row: &[f32]) -> (f64, u32) {
    crate::model::kernels::logsumexp::summary(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_summary_matches_definition() {
        let row = [1.0f32, 3.0, 3.0, -2.0];
        let (lse, arg) = log_softmax_summary(&row);
        let want = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
        assert!((lse - want).abs() < 3e-7);
        assert_eq!(arg, 1);
    }

    #[test]
    fn inputs_are_left_truncated_like_lm_eval() {
        let req = EncodedRequest {
            context: (1..=10).collect(),
            continuation: vec![11, 12],
            context_is_prefix: true,
        };
        // (ctx + cont)[-(4 + 1):][:-1] = [8, 9, 10, 11]; targets at positions 2, 3.
        let (seqs, prepared) = prepare(std::slice::from_ref(&req), 4).expect("valid");
        assert_eq!(seqs[0], vec![8, 9, 10, 11]);
        assert_eq!(prepared[0].first, 2);
        assert_eq!(prepared[0].targets, vec![11, 12]);
        let (seqs, prepared) = prepare(&[req.clone(), req], 100).expect("valid");
        assert_eq!(seqs.len(), 1, "identical inputs run once");
        assert_eq!(seqs[0], (1..=11).collect::<Vec<u32>>());
        assert_eq!(prepared[1].first, 9);
    }

    #[test]
    fn bad_requests_are_rejected() {
        let empty_cont = EncodedRequest {
            context: vec![1],
            continuation: vec![],
            context_is_prefix: true,
        };
        assert!(prepare(&[empty_cont], 10).is_err());
        let long_cont = EncodedRequest {
            context: vec![1],
            continuation: vec![2; 11],
            context_is_prefix: true,
        };
        assert!(prepare(&[long_cont], 10).is_err());
    }
}
