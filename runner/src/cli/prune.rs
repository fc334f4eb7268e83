//! `pruneforge prune`: remove a block of layers, write the pruned HF directory.

use anyhow::Context;
use clap::Args;
use pruneforge::stages::prune::{self, PruneParams};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// HF model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// scores.json of `pruneforge score`: removes the block it chose for --n.
    #[arg(long, required_unless_present = "start")]
    pub scores: Option<PathBuf>,
    /// Number of consecutive layers to remove.
    #[arg(long)]
    pub n: usize,
    /// First layer to remove (instead of --scores).
    #[arg(long, conflicts_with = "scores")]
    pub start: Option<usize>,
    /// Output directory: the model goes to OUT/model, the report to OUT/prune.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Context length for the FLOPs-per-token figures.
    #[arg(long, default_value_t = prune::DEFAULT_FLOPS_CONTEXT)]
    pub flops_context: usize,
    /// Prune even if scores.json was computed on other weights.
    #[arg(long)]
    pub allow_model_mismatch: bool,
}

pub fn run(args: PruneArgs) -> anyhow::Result<()> {
    let model = super::model_path(args.model.clone())?;
    let mut params = PruneParams::depth(args.start, args.n);
    params.flops_context = args.flops_context;
    params.allow_model_mismatch = args.allow_model_mismatch;
    let report = prune::run(&model, args.scores.as_deref(), &params, &args.out)
        .with_context(|| format!("pruning {}", model.display()))?;
    println!(
        "removed layers {:?}: {} -> {} layers, {} -> {} parameters ({:.1} %), FLOPs/token at context {} {} -> {} ({:.1} %)",
        report.removed_layers,
        report.layers_before,
        report.layers_after,
        report.params_before,
        report.params_after,
        100.0 * report.params_ratio,
        report.flops_context,
        report.flops_per_token_before,
        report.flops_per_token_after,
        100.0 * report.flops_ratio
    );
    println!(
        "model: {}  report: {}",
        args.out.join(prune::MODEL_DIR).display(),
        args.out.join(prune::PRUNE_FILE).display()
    );
    Ok(())
}
