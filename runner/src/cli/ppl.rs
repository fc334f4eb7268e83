//! `pruneforge ppl`: perplexity of a model on token rows (each row alone, tokens 1..L-1 given
//! the earlier ones, no BOS).

use anyhow::Context;
use clap::Args;
use pruneforge::loader::open_model;
use pruneforge::stages::score::calibration::{self, CalibrationData, Packing};
use pruneforge::stages::score::perplexity::perplexity;
use pruneforge::stages::score::TokenRows;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PplArgs {
    /// HF model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Token ids: safetensors with an integer [N, L] tensor (e.g. the reference's
    /// heldout_ids.safetensors).
    #[arg(long, required_unless_present = "text", conflicts_with = "text")]
    pub ids: Option<PathBuf>,
    /// Tensor name in --ids.
    #[arg(long, default_value = calibration::DEFAULT_IDS_TENSOR)]
    pub tensor: String,
    /// Text instead of ids (`builtin:NAME` or a path), tokenized as one stream and cut into
    /// --sequences rows of --length tokens.
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub sequences: usize,
    #[arg(long, default_value_t = 256)]
    pub length: usize,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Print the full report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PplArgs) -> anyhow::Result<()> {
    let model_path = super::model_path(args.model.clone())?;
    let hf =
        open_model(&model_path).with_context(|| format!("loading {}", model_path.display()))?;
    let (rows, what) = match (&args.ids, &args.text) {
        (Some(ids), _) => (
            TokenRows::from_safetensors(ids, &args.tensor)?,
            ids.display().to_string(),
        ),
        (None, Some(text)) => {
            let data = CalibrationData::Text {
                dataset: text.clone(),
                field: None,
                packing: Packing::Stream,
            };
            (
                calibration::build(
                    &data,
                    &hf.tokenizer,
                    args.sequences,
                    args.length,
                    &pruneforge::resolve::Resolver::local(),
                )?,
                text.clone(),
            )
        }
        (None, None) => anyhow::bail!("give --ids or --text"),
    };
    let report = perplexity(&hf.model, &rows, args.batch_size)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "ppl {:.4} (nll/token {:.6}, {} tokens scored in {} rows) model {} data {}",
            report.ppl,
            report.nll_per_token,
            report.tokens_scored,
            report.rows,
            model_path.display(),
            what
        );
    }
    Ok(())
}
