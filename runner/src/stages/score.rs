//! Stage `score`: layer importance on calibration text.
//!
//! One forward pass with hidden states over the calibration set, in batches; per batch the
//! angular distances `d(h_l, h_{l+n})` for every block size `n` and start `l` and the ShortGPT
//! Block Influence are summed on the fly (hidden states of earlier batches are not kept). The
//! block to remove for each `n` is the argmin of the configured metric over the starts the
//! layer limits allow (ties → smallest start). Writes `scores.json` and `heatmap.svg`.
//!
//! Layer limits: by default no chosen block contains layer 0 or the last layer
//! (`include_first_layer`, `include_last_layer` lift that); the matrices always cover every
//! start.

pub mod angular;
pub mod calibration;
pub mod choose;
pub mod digest;
pub mod heatmap;
pub mod perplexity;
pub mod scores_file;
pub mod token_rows;
pub mod width;

pub use calibration::{CalibrationData, Packing};
pub use choose::{BlockChoice, LayerLimits};
pub use pruneforge_api::spec::ScoreMetric;
pub use scores_file::{ScoresFile, HEATMAP_FILE, SCORES_FILE, SCORES_FORMAT};
pub use token_rows::TokenRows;
pub use width::{Reduce, WidthAccumulator, WidthAggregation, WidthImportance, WIDTH_FILE};

use crate::device::Compute;
use crate::model::{ForwardOptions, Llama, Site};
use crate::resolve::Resolver;
use crate::stages::{Outcome, Result, StageContext, StageError};
use crate::util::fs::{write_atomic, write_json_atomic};
use angular::{AngularAccumulator, AngularScores};
use candle_core::Tensor;
use perplexity::{check_vocab, BlockPerplexities, BlockPerplexity};
use pruneforge_api::contract::{self, StageSummary};
use scores_file::{BlockSizeScores, ScoredData, ScoredModel, Throughput};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Largest default block size.
pub const DEFAULT_MAX_BLOCK: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoreParams {
    /// Calibration tokens (default: the Alpaca stream, reference recipe).
    pub calibration: CalibrationData,
    /// N: sequences (fewer are used, with a warning, when the source is shorter).
    pub num_sequences: usize,
    /// L: tokens per sequence.
    pub sequence_length: usize,
    /// Block sizes to score; `None` = `1..=min(8, layers − 1)`. Each must be below the layer
    /// count.
    pub block_sizes: Option<Vec<usize>>,
    #[serde(with = "choose::metric_serde")]
    pub metric: ScoreMetric,
    /// Allow chosen blocks to contain layer 0.
    pub include_first_layer: bool,
    /// Allow chosen blocks to contain the last layer.
    pub include_last_layer: bool,
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Metric `perplexity` only: measure only the `k` blocks per size with the lowest
    /// all-token angular distance (a second pass); `None` = every allowed block (in the
    /// scoring pass itself).
    pub perplexity_top_k: Option<usize>,
    /// Also compute activation importance for width pruning (MLP neurons, heads, embedding
    /// channels) with this aggregation, written to [`WIDTH_FILE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<WidthAggregation>,
}

impl Default for ScoreParams {
    fn default() -> Self {
        Self {
            calibration: CalibrationData::default(),
            num_sequences: 64,
            sequence_length: 128,
            block_sizes: None,
            metric: ScoreMetric::default(),
            include_first_layer: false,
            include_last_layer: false,
            batch_size: 16,
            perplexity_top_k: None,
            width: None,
        }
    }
}

impl ScoreParams {
    pub fn limits(&self) -> LayerLimits {
        LayerLimits {
            include_first_layer: self.include_first_layer,
            include_last_layer: self.include_last_layer,
        }
    }

    /// The block sizes for a model of `num_layers` layers, validated.
    pub fn resolved_block_sizes(&self, num_layers: usize) -> Result<Vec<usize>> {
        if num_layers < 2 {
            return Err(StageError::Input(format!(
                "the model has {num_layers} layer(s); scoring needs at least 2"
            )));
        }
        let Some(sizes) = &self.block_sizes else {
            return Ok((1..=DEFAULT_MAX_BLOCK.min(num_layers - 1)).collect());
        };
        if sizes.is_empty() {
            return Err(StageError::Input(
                "block_sizes is empty; give at least one size or leave it unset".into(),
            ));
        }
        let mut out = sizes.clone();
        out.sort_unstable();
        out.dedup();
        if let Some(&bad) = out.iter().find(|&&n| n == 0 || n >= num_layers) {
            return Err(StageError::Input(format!(
                "block size {bad} is not possible for a model of {num_layers} layers: sizes must be 1..={}",
                num_layers - 1
            )));
        }
        Ok(out)
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(StageError::Input("batch_size must be at least 1".into()));
        }
        match (self.metric, self.perplexity_top_k) {
            (_, Some(0)) => Err(StageError::Input(
                "perplexity_top_k must be at least 1 (or unset for every block)".into(),
            )),
            (ScoreMetric::Perplexity, _) | (_, None) => Ok(()),
            (m, Some(_)) => Err(StageError::Input(format!(
                "perplexity_top_k only applies to metric `perplexity`, not `{}`",
                m.as_str()
            ))),
        }
    }
}

/// The chosen block of one size, in short.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockLine {
    pub n: usize,
    pub chosen: Option<BlockChoice>,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub model_sha256: String,
    pub data_sha256: String,
    pub num_sequences: usize,
    pub sequence_length: usize,
    pub tokens: u64,
    pub tokens_per_s: f64,
    #[serde(with = "choose::metric_serde")]
    pub metric: ScoreMetric,
    pub blocks: Vec<BlockLine>,
    /// Files written into the output directory.
    pub files: Vec<String>,
}

/// What one scoring pass measured.
pub struct ScorePass {
    pub angular: AngularScores,
    /// Perplexity of the full model and of the requested blocks.
    pub perplexity: Option<BlockPerplexities>,
    /// Wall time of forward + angular accumulation (block perplexity excluded).
    pub seconds: f64,
}

/// Runs the model over `rows` once (with hidden states, `batch_size` rows at a time) and
/// accumulates the angular scores for `block_sizes`, plus the perplexity of the model
/// without each block of `perplexity_blocks` (`(n, start)`) if any is given.
pub fn score_pass(
    model: &Llama,
    rows: &TokenRows,
    block_sizes: &[usize],
    batch_size: usize,
    perplexity_blocks: &[(usize, usize)],
) -> Result<ScorePass> {
    score_pass_with_width(
        model,
        rows,
        block_sizes,
        batch_size,
        perplexity_blocks,
        None,
    )
}

/// [`score_pass`] that also accumulates activation importance for width pruning into
/// `width` when given (the same forward passes).
pub fn score_pass_with_width(
    model: &Llama,
    rows: &TokenRows,
    block_sizes: &[usize],
    batch_size: usize,
    perplexity_blocks: &[(usize, usize)],
    mut width: Option<&mut WidthAccumulator>,
) -> Result<ScorePass> {
    check_vocab(model, rows)?;
    let layers = model.num_layers();
    let mut angular = AngularAccumulator::new(layers, block_sizes);
    let mut ppl =
        (!perplexity_blocks.is_empty()).then(|| BlockPerplexity::new(perplexity_blocks.to_vec()));
    let mut seconds = 0.0;
    let batch_size = batch_size.max(1);
    for start in (0..rows.rows()).step_by(batch_size) {
        let range = start..(start + batch_size).min(rows.rows());
        let t0 = Instant::now();
        let (tokens, lengths) = rows.batch(range.clone(), model.device())?;
        let opts = ForwardOptions {
            hidden_states: true,
            train: false,
        };
        let out = match width.as_deref_mut() {
            Some(acc) => {
                acc.begin_batch(&lengths);
                let mut observe =
                    |layer: usize, site: Site, a: &Tensor| acc.observe(layer, site, a);
                model.forward_observed(&tokens, opts, Some(&mut observe))?
            }
            None => model.forward(&tokens, opts)?,
        };
        angular.add_batch(&out.hidden_states, &lengths)?;
        seconds += t0.elapsed().as_secs_f64();
        if let Some(p) = &mut ppl {
            let ids = tokens.flatten_all()?.to_vec1::<u32>()?;
            p.add_batch(model, &out.hidden_states, &ids, &lengths)?;
        }
        tracing::debug!(rows = ?range, "scored batch");
    }
    Ok(ScorePass {
        angular: angular.finish()?,
        perplexity: ppl.map(|p| p.finish()).transpose()?,
        seconds,
    })
}

/// Scores the model at `model_path` (HF directory or .gguf) and writes `scores.json` and
/// `heatmap.svg` into `out_dir`.
pub fn run(
    model_path: &Path,
    params: &ScoreParams,
    resolver: &Resolver,
    out_dir: &Path,
    compute: &Compute,
) -> Result<ScoreSummary> {
    params.validate()?;
    let hf = super::context::open_model_checked(model_path, compute, |cfg| {
        let (rows, tokens) = (params.batch_size.max(1), params.sequence_length);
        let logits = if params.metric == ScoreMetric::Perplexity {
            rows * tokens
        } else {
            0
        };
        crate::memory_plan::inference(
            "score",
            cfg,
            compute.dtype,
            1,
            rows,
            tokens,
            logits,
            0,
            true,
        )
    })?;
    let model = &hf.model;
    let layers = model.num_layers();
    let sizes = params.resolved_block_sizes(layers)?;
    let limits = params.limits();
    let rows = calibration::build(
        &params.calibration,
        &hf.tokenizer,
        params.num_sequences,
        params.sequence_length,
        resolver,
    )?;
    tracing::info!(
        sequences = rows.rows(),
        length = rows.width(),
        tokens = rows.tokens(),
        source = %params.calibration.describe(),
        "calibration set"
    );
    let model_sha256 = digest::model_sha256(&hf.dir)?;
    let in_pass: Vec<(usize, usize)> =
        if params.metric == ScoreMetric::Perplexity && params.perplexity_top_k.is_none() {
            sizes
                .iter()
                .flat_map(|&n| {
                    limits
                        .allowed_starts(layers, n)
                        .into_iter()
                        .map(move |l| (n, l))
                })
                .collect()
        } else {
            Vec::new()
        };
    let mut width = params
        .width
        .map(|agg| WidthAccumulator::new(width::WidthShape::of(&model.config), agg));
    let pass = score_pass_with_width(
        model,
        &rows,
        &sizes,
        params.batch_size,
        &in_pass,
        width.as_mut(),
    )?;
    let mut files = vec![SCORES_FILE.to_string(), HEATMAP_FILE.to_string()];
    if let Some(acc) = width {
        let mut importance = acc.finish()?;
        importance.model_sha256 = model_sha256.clone();
        importance.write(&out_dir.join(WIDTH_FILE))?;
        files.push(WIDTH_FILE.into());
        tracing::info!(
            aggregation = ?importance.aggregation,
            "width importance written to {}",
            out_dir.join(WIDTH_FILE).display()
        );
    }
    let tokens = pass.angular.tokens;
    let tokens_per_s = tokens as f64 / pass.seconds.max(1e-9);
    tracing::info!(tokens, seconds = pass.seconds, tokens_per_s, "scoring pass");
    let mut perplexity = pass.perplexity.clone();
    if let (ScoreMetric::Perplexity, Some(k)) = (params.metric, params.perplexity_top_k) {
        let blocks: Vec<(usize, usize)> = sizes
            .iter()
            .flat_map(|&n| {
                let mut starts = limits.allowed_starts(layers, n);
                let d = &pass.angular.d_alltok[&n];
                starts.sort_by(|&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)));
                starts.truncate(k);
                starts.into_iter().map(move |l| (n, l))
            })
            .collect();
        tracing::info!(
            blocks = blocks.len(),
            "perplexity pass over the top-k blocks"
        );
        let second = score_pass(model, &rows, &[1], params.batch_size, &blocks)?;
        perplexity = second.perplexity;
    }
    let scores = build_scores(
        model_path,
        &model_sha256,
        &rows,
        params,
        &sizes,
        layers,
        &pass,
        perplexity.as_ref(),
        tokens_per_s,
    );
    write_outputs(out_dir, &scores)?;
    let blocks: Vec<BlockLine> = scores
        .n
        .iter()
        .map(|(&n, s)| BlockLine {
            n,
            chosen: s.chosen.clone(),
            line: s.summary.clone(),
        })
        .collect();
    for b in &blocks {
        tracing::info!("{}", b.line);
    }
    Ok(ScoreSummary {
        model_sha256,
        data_sha256: scores.data.sha256.clone(),
        num_sequences: rows.rows(),
        sequence_length: rows.width(),
        tokens,
        tokens_per_s,
        metric: params.metric,
        blocks,
        files,
    })
}

/// The stage contract's `score`: the API's calibration, metric and block sizes on input
/// `model`.
pub fn run_request(p: &pruneforge_api::params::ScoreParams, ctx: &StageContext) -> Result<Outcome> {
    let model = ctx.model("model")?;
    let params = ScoreParams {
        calibration: CalibrationData::Dataset {
            dataset: p.calibration.dataset.clone(),
        },
        num_sequences: p.calibration.sequences as usize,
        sequence_length: p.calibration.seq_len as usize,
        block_sizes: Some(p.block_sizes.iter().map(|&n| n as usize).collect()),
        metric: p.metric,
        include_first_layer: !p.exclude_first_layer,
        include_last_layer: !p.exclude_last_layer,
        width: p.width,
        ..ScoreParams::default()
    };
    let s = run(&model, &params, ctx.resolver, ctx.out, ctx.compute)?;
    let layers =
        crate::model::ModelConfig::from_json_file(&model.join("config.json"))?.num_hidden_layers;
    let best = s
        .blocks
        .iter()
        .filter_map(|b| b.chosen.as_ref())
        .map(|b| contract::BlockScore {
            block_size: b.n as u32,
            start: b.start as u32,
            end: b.end as u32,
            score: b.score,
        })
        .collect();
    let files: Vec<&str> = s.files.iter().map(String::as_str).collect();
    Ok(Outcome::new(
        StageSummary::Score(contract::ScoreSummary {
            metric: p.metric,
            layers: layers as u32,
            best,
        }),
        &files,
    ))
}

/// The values of `metric` for blocks of size `n` (indexed by start).
fn metric_values(metric: ScoreMetric, s: &BlockSizeScores) -> Vec<Option<f64>> {
    let dense = |v: &[f64]| v.iter().copied().map(Some).collect();
    match metric {
        ScoreMetric::AngularLastToken => dense(&s.d_lasttok),
        ScoreMetric::AngularAllTokens => dense(&s.d_alltok),
        ScoreMetric::BlockInfluence => dense(&s.bi_sum),
        ScoreMetric::Perplexity => s
            .ppl
            .clone()
            .unwrap_or_else(|| vec![None; s.d_alltok.len()]),
    }
}

fn summary_line(n: usize, metric: ScoreMetric, chosen: Option<&BlockChoice>) -> String {
    match chosen {
        None => format!("n={n}: no block fits the layer limits"),
        Some(c) => {
            let runner = match (c.runner_up_start, c.margin) {
                (Some(r), Some(m)) => format!(", runner-up start {r} (+{m:.5})"),
                _ => String::new(),
            };
            format!(
                "n={n}: remove layers {}..={} ({} {:.5}{runner})",
                c.start,
                c.end,
                metric.as_str(),
                c.score
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_scores(
    model_path: &Path,
    model_sha256: &str,
    rows: &TokenRows,
    params: &ScoreParams,
    sizes: &[usize],
    layers: usize,
    pass: &ScorePass,
    perplexity: Option<&BlockPerplexities>,
    tokens_per_s: f64,
) -> ScoresFile {
    let a = &pass.angular;
    let limits = params.limits();
    let mut n_map = BTreeMap::new();
    for &n in sizes {
        let bi_sum: Vec<f64> = (0..=layers - n)
            .map(|l| a.bi[l..l + n].iter().sum())
            .collect();
        let ppl = perplexity.map(|p| {
            let mut v = vec![None; layers + 1 - n];
            for b in p.blocks.iter().filter(|b| b.n == n) {
                v[b.start] = Some(b.ppl);
            }
            v
        });
        let mut entry = BlockSizeScores {
            d_lasttok: a.d_lasttok[&n].clone(),
            d_alltok: a.d_alltok[&n].clone(),
            bi_sum,
            ppl,
            chosen: None,
            summary: String::new(),
        };
        let values = metric_values(params.metric, &entry);
        entry.chosen = choose::choose_block(n, &values, &limits.allowed_starts(layers, n));
        entry.summary = summary_line(n, params.metric, entry.chosen.as_ref());
        n_map.insert(n, entry);
    }
    let mut order: Vec<usize> = (0..layers).collect();
    order.sort_by(|&x, &y| a.bi[x].total_cmp(&a.bi[y]).then(x.cmp(&y)));
    ScoresFile {
        format: SCORES_FORMAT.into(),
        model: ScoredModel {
            dir: model_path.display().to_string(),
            sha256: model_sha256.into(),
            num_hidden_layers: layers,
        },
        data: ScoredData {
            source: params.calibration.describe(),
            sha256: rows.sha256(),
            num_sequences: rows.rows(),
            sequence_length: rows.width(),
            tokens: rows.tokens() as u64,
            padded_rows: rows.padded_rows(),
        },
        metric: params.metric,
        include_first_layer: params.include_first_layer,
        include_last_layer: params.include_last_layer,
        n: n_map,
        bi: a.bi.clone(),
        bi_lasttok: a.bi_lasttok.clone(),
        shortgpt_order_lowest_bi_first: order,
        perplexity_full: perplexity.map(|p| p.full),
        degenerate_comparisons: a.degenerate,
        throughput: Throughput {
            tokens: a.tokens,
            seconds: pass.seconds,
            tokens_per_s,
            batch_size: params.batch_size,
        },
    }
}

fn write_outputs(out_dir: &Path, scores: &ScoresFile) -> Result<()> {
    let rows: Vec<heatmap::HeatmapRow> = scores
        .n
        .iter()
        .map(|(&n, s)| heatmap::HeatmapRow {
            n,
            values: metric_values(scores.metric, s),
            chosen: s.chosen.as_ref().map(|c| c.start),
        })
        .collect();
    let title = format!(
        "Block importance, {} layers, {} × {} calibration tokens",
        scores.model.num_hidden_layers, scores.data.num_sequences, scores.data.sequence_length
    );
    let svg = heatmap::render(
        &title,
        scores.metric.as_str(),
        scores.model.num_hidden_layers,
        &rows,
    );
    let path = out_dir.join(SCORES_FILE);
    write_json_atomic(&path, scores).map_err(|e| StageError::io(&path, e))?;
    let path = out_dir.join(HEATMAP_FILE);
    write_atomic(&path, svg.as_bytes()).map_err(|e| StageError::io(&path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_deserialize_with_defaults_and_reject_unknown_keys() {
        let p: ScoreParams = serde_json::from_str(
            r#"{"metric": "perplexity", "perplexity_top_k": 2,
                "calibration": {"kind": "ids", "path": "cal.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(p.metric, ScoreMetric::Perplexity);
        assert_eq!(
            (p.num_sequences, p.sequence_length, p.batch_size),
            (64, 128, 16)
        );
        assert_eq!(
            p.calibration,
            CalibrationData::Ids {
                path: "cal.safetensors".into(),
                tensor: "input_ids".into()
            }
        );
        let d: ScoreParams = serde_json::from_str("{}").unwrap();
        assert_eq!(d, ScoreParams::default());
        assert_eq!(
            d.resolved_block_sizes(30).unwrap(),
            (1..=8).collect::<Vec<_>>()
        );
        assert_eq!(d.resolved_block_sizes(4).unwrap(), vec![1, 2, 3]);
        assert!(d.resolved_block_sizes(1).is_err());
        let e = serde_json::from_str::<ScoreParams>(r#"{"blocks": [1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `blocks`"), "{e}");
        let text: ScoreParams = serde_json::from_str(
            r#"{"calibration": {"kind": "text", "dataset": "docs.jsonl", "field": "body", "packing": "rows"}}"#,
        )
        .unwrap();
        assert_eq!(
            text.calibration.describe(),
            "text docs.jsonl, field body, rows packing"
        );
    }
}
