//! `pruneforge score`: layer importance scores, `scores.json` and `heatmap.svg`.

use anyhow::Context;
use clap::Args;
use pruneforge::stages::score::{
    self, CalibrationData, Packing, Reduce, ScoreMetric, ScoreParams, WidthAggregation,
};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// HF model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output directory for scores.json and heatmap.svg.
    #[arg(long)]
    pub out: PathBuf,
    /// Calibration text: `builtin:NAME` or a path (.json Alpaca array, .jsonl, plain text).
    #[arg(long, default_value = score::calibration::DEFAULT_DATASET, conflicts_with = "ids")]
    pub dataset: String,
    /// String field of a .jsonl dataset (default `text`).
    #[arg(long)]
    pub field: Option<String>,
    /// `stream` (documents joined and cut into rows, the reference recipe) or `rows` (one
    /// document per row, padded).
    #[arg(long, default_value = "stream", value_parser = parse_packing)]
    pub packing: Packing,
    /// Pre-tokenized calibration ids (safetensors with an integer [N, L] tensor).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Tensor name in --ids.
    #[arg(long, default_value = score::calibration::DEFAULT_IDS_TENSOR)]
    pub ids_tensor: String,
    /// N: calibration sequences.
    #[arg(long, default_value_t = 64)]
    pub sequences: usize,
    /// L: tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub length: usize,
    /// Block sizes, comma-separated (default 1..=min(8, layers-1)).
    #[arg(long, value_delimiter = ',')]
    pub block_sizes: Option<Vec<usize>>,
    /// angular-last-token, angular-all-tokens, block-influence or perplexity (`_` for `-` works).
    #[arg(long, default_value = "angular_last_token")]
    pub metric: ScoreMetric,
    /// Allow the chosen blocks to contain layer 0.
    #[arg(long)]
    pub include_first_layer: bool,
    /// Allow the chosen blocks to contain the last layer.
    #[arg(long)]
    pub include_last_layer: bool,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Metric perplexity: measure only the k best blocks (by all-token angular distance) per size.
    #[arg(long)]
    pub perplexity_top_k: Option<usize>,
    /// Also score width (MLP neurons, attention heads, embedding channels; Minitron), written
    /// to width_importance.safetensors for `pruneforge prune --intermediate-size …`.
    #[arg(long)]
    pub width: bool,
    /// Width importance: aggregation of |activation| over a sequence's tokens (mean or l2).
    #[arg(long, default_value = "mean", requires = "width")]
    pub width_sequence: Reduce,
    /// Width importance: aggregation over sequences (l2 or mean).
    #[arg(long, default_value = "l2", requires = "width")]
    pub width_batch: Reduce,
    #[command(flatten)]
    pub device: super::generate::DeviceArgs,
}

fn parse_packing(s: &str) -> Result<Packing, String> {
    match s {
        "stream" => Ok(Packing::Stream),
        "rows" => Ok(Packing::Rows),
        other => Err(format!("unknown packing `{other}` (valid: stream, rows)")),
    }
}

impl ScoreArgs {
    pub fn params(&self) -> ScoreParams {
        let calibration = match &self.ids {
            Some(path) => CalibrationData::Ids {
                path: path.clone(),
                tensor: self.ids_tensor.clone(),
            },
            None => CalibrationData::Text {
                dataset: self.dataset.clone(),
                field: self.field.clone(),
                packing: self.packing,
            },
        };
        ScoreParams {
            calibration,
            num_sequences: self.sequences,
            sequence_length: self.length,
            block_sizes: self.block_sizes.clone(),
            metric: self.metric,
            include_first_layer: self.include_first_layer,
            include_last_layer: self.include_last_layer,
            batch_size: self.batch_size,
            perplexity_top_k: self.perplexity_top_k,
            width: self.width.then_some(WidthAggregation {
                sequence: self.width_sequence,
                batch: self.width_batch,
            }),
        }
    }
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let params = args.params();
    let model = super::model_path(args.model.clone())?;
    let summary = score::run(
        &model,
        &params,
        &pruneforge::resolve::Resolver::local(),
        &args.out,
        &args.device.compute()?,
    )
    .with_context(|| format!("scoring {}", model.display()))?;
    for b in &summary.blocks {
        println!("{}", b.line);
    }
    println!(
        "scored {} tokens ({} × {}) at {:.1} tokens/s; wrote {} in {}",
        summary.tokens,
        summary.num_sequences,
        summary.sequence_length,
        summary.tokens_per_s,
        summary.files.join(", "),
        args.out.display()
    );
    Ok(())
}
