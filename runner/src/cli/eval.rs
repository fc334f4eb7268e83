//! `pruneforge eval`: benchmark a model and write eval.json + items.jsonl.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pruneforge::loader::open_model_on;
use pruneforge::stages::eval::{self, EvalParams, TaskSpec};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// HF model directory or .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated NAME[:SHOTS[:LIMIT[:OFFSET]]][@URI], e.g. arc_easy:0:200,mmlu:5; default: the
    /// seven multiple-choice tasks on their public slices (mmlu 5-shot).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// The base model's eval.json (same tasks and settings) for recovery %.
    #[arg(long)]
    pub base_eval: Option<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Sequences per forward pass.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Model window (default: max_position_embeddings).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Few-shot sampler seed.
    #[arg(long)]
    pub seed: Option<i64>,
    /// New tokens per generation (gsm8k).
    #[arg(long)]
    pub max_gen_tokens: Option<usize>,
    /// Run every input on its own instead of sharing prefixes through the KV cache.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Data root (default: $PRUNEFORGE_DATA_DIR, ../shared/data, ...).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Evaluate the model with layers START..START+N removed (START:N, 0-based), a what-if
    /// without running the prune stage.
    #[arg(long, value_name = "START:N")]
    pub drop_layers: Option<String>,
    /// Few-shot counts for tasks without `:SHOTS`: open-llm-leaderboard (ARC-Challenge 25,
    /// HellaSwag 10, TruthfulQA mc2 0, MMLU 5, Winogrande 5, GSM8K 5) or zero-shot.
    #[arg(long, value_parser = parse_preset)]
    pub preset: Option<pruneforge_api::spec::EvalPreset>,
    #[command(flatten)]
    pub device: super::generate::DeviceArgs,
}

fn parse_preset(s: &str) -> Result<pruneforge_api::spec::EvalPreset, String> {
    use pruneforge_api::spec::EvalPreset;
    match s {
        "open-llm-leaderboard" | "openLlmLeaderboard" => Ok(EvalPreset::OpenLlmLeaderboard),
        "zero-shot" | "zeroShot" => Ok(EvalPreset::ZeroShot),
        other => Err(format!(
            "unknown preset `{other}`: expected open-llm-leaderboard or zero-shot"
        )),
    }
}

fn parse_drop(spec: &str) -> anyhow::Result<(usize, usize)> {
    let (start, n) = spec
        .split_once(':')
        .with_context(|| format!("--drop-layers {spec}: expected START:N, e.g. 13:6"))?;
    Ok((
        start
            .parse()
            .with_context(|| format!("--drop-layers {spec}: START is not a number"))?,
        n.parse()
            .with_context(|| format!("--drop-layers {spec}: N is not a number"))?,
    ))
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let mut params = EvalParams::default();
    if !args.tasks.is_empty() {
        params.tasks = args
            .tasks
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().parse::<TaskSpec>())
            .collect::<Result<_, _>>()?;
    }
    if let Some(preset) = args.preset {
        for t in params.tasks.iter_mut().filter(|t| t.shots.is_none()) {
            if let Ok(name) = t.name.parse::<pruneforge_api::spec::EvalTaskName>() {
                t.shots = preset.shots(name).map(|s| s as usize);
            }
        }
    }
    if let Some(b) = args.batch_size {
        params.batch_size = b;
    }
    params.max_length = args.max_length.or(params.max_length);
    if let Some(s) = args.seed {
        params.seed = s;
    }
    if let Some(m) = args.max_gen_tokens {
        params.max_gen_tokens = m;
    }
    params.prefix_cache = !args.no_prefix_cache;
    params.data_dir = args.data_dir.or(params.data_dir);
    let what = || format!("eval of {}", args.model.display());
    let compute = args.device.compute()?;
    let summary = match &args.drop_layers {
        None => eval::run(
            &args.model,
            args.base_eval.as_deref(),
            &params,
            &pruneforge::resolve::Resolver::local(),
            &args.out,
            &compute,
        )
        .with_context(what)?,
        Some(spec) => {
            let (start, n) = parse_drop(spec)?;
            let mut hf =
                open_model_on(&args.model, &compute.device, compute.dtype).with_context(what)?;
            hf.model.remove_layers(start, n)?;
            let label = format!(
                "{} without layers {start}..{}",
                args.model.display(),
                start + n
            );
            eval::run_with_model(
                &hf.model,
                &hf.tokenizer,
                &label,
                args.base_eval.as_deref(),
                &params,
                &pruneforge::resolve::Resolver::local(),
                &args.out,
            )
            .with_context(what)?
        }
    };
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
