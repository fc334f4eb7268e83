//! `pruneforge prune`: remove a block of layers and/or channels (width), write the pruned HF
//! directory.

use anyhow::Context;
use clap::Args;
use pruneforge::stages::prune::{self, PruneMethod, PruneParams, WidthSize, WidthTargets};

use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// HF model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// scores.json of `pruneforge score`: removes the block it chose for --n; width pruning
    /// reads the width importance next to it (`score --width`).
    #[arg(long, required_unless_present = "start")]
    pub scores: Option<PathBuf>,
    /// Number of consecutive layers to remove (depth pruning).
    #[arg(long, required_unless_present_any = ["intermediate_size", "kv_heads", "heads_per_group", "hidden_size"])]
    pub n: Option<usize>,
    /// First layer to remove (instead of the block --scores chose).
    #[arg(long, requires = "n")]
    pub start: Option<usize>,
    /// Width: MLP neurons to keep per layer, a count or a percentage ("75%").
    #[arg(long)]
    pub intermediate_size: Option<WidthSize>,
    /// Width: KV groups to keep per layer (each with its query heads), count or percentage.
    #[arg(long)]
    pub kv_heads: Option<WidthSize>,
    /// Width: query heads to keep in every KV group, count or percentage.
    #[arg(long)]
    pub heads_per_group: Option<WidthSize>,
    /// Width: embedding channels to keep, count or percentage.
    #[arg(long)]
    pub hidden_size: Option<WidthSize>,
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
    let width = WidthTargets {
        intermediate_size: args.intermediate_size.clone(),
        num_key_value_heads: args.kv_heads.clone(),
        heads_per_group: args.heads_per_group.clone(),
        hidden_size: args.hidden_size.clone(),
    };
    let method = match (args.n, width.is_empty()) {
        (Some(n), true) => PruneMethod::Depth {
            start: args.start,
            n,
        },
        (Some(n), false) => PruneMethod::DepthWidth {
            start: args.start,
            n,
            width,
        },
        (None, false) => PruneMethod::Width { width },
        (None, true) => anyhow::bail!("nothing to prune: give --n and/or a width target"),
    };
    let mut params = PruneParams::depth(None, 1);
    params.method = method;
    params.flops_context = args.flops_context;
    params.allow_model_mismatch = args.allow_model_mismatch;
    let report = prune::run(&model, args.scores.as_deref(), &params, &args.out)
        .with_context(|| format!("pruning {}", model.display()))?;
    if let Some(w) = &report.width {
        println!(
            "width: hidden {} -> {}, intermediate {} -> {}, heads {} -> {}, kv heads {} -> {}",
            w.hidden_size[0],
            w.hidden_size[1],
            w.intermediate_size[0],
            w.intermediate_size[1],
            w.num_attention_heads[0],
            w.num_attention_heads[1],
            w.num_key_value_heads[0],
            w.num_key_value_heads[1]
        );
    }
    let removed = if report.removed_layers.is_empty() {
        "no layers removed".to_string()
    } else {
        format!("removed layers {:?}", report.removed_layers)
    };
    println!(
        "{removed}: {} -> {} layers, {} -> {} parameters ({:.1} %), FLOPs/token at context {} {} -> {} ({:.1} %)",
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
