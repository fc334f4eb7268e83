//! `pruneforge prefer`: the prefer stage from the command line. DPO on a pairs file
//! (`--pairs`, TRL's `{prompt, chosen, rejected}` or HH-RLHF's `{chosen, rejected}` JSONL), or
//! one SPIN iteration on an SFT set (`--spin-data`: the set's answers against the model's own).

use anyhow::Context;
use pruneforge::data::preference::load_preferences;
use pruneforge::data::SftDataset;
use pruneforge::loader::open_model_on;
use pruneforge::stages::prefer::{run as run_stage, self_play_pairs, PreferRunParams};
use pruneforge::train::preference::{PreferenceLoss, PreferenceObjective};
use pruneforge::train::{LoraParams, OptimizerParams};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["pairs", "spin_data"])))]
pub struct PreferArgs {
    /// Model directory or .gguf (the policy's start and the reference); default: the embedded
    /// SmolLM2-135M-Instruct.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// DPO: preference pairs, JSONL.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// SPIN: an SFT set (Alpaca JSON, GSM8K JSONL, JSONL) whose answers are paired with the
    /// model's own.
    #[arg(long)]
    pub spin_data: Option<PathBuf>,
    /// SPIN iteration number (mixed into the sampling seed).
    #[arg(long, default_value_t = 1)]
    pub iteration: u32,
    /// Use the first N pairs (DPO) or prompts (SPIN).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// sigmoid (DPO), hinge or ipo.
    #[arg(long, default_value = "sigmoid")]
    pub loss: String,
    /// Conservative DPO's ε.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    #[arg(long, default_value_t = 16)]
    pub steps: u64,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Pairs per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 512)]
    pub max_seq_len: usize,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub dropout: f64,
    /// QLoRA: keep the model's projections quantized (q8_0, q4_0, q4_1, q4_k, nf4) while the
    /// adapter trains (CPU, f32).
    #[arg(long)]
    pub base_quantization: Option<pruneforge::model::quant::BaseQuantization>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SPIN sampling: new tokens per answer, temperature (0: greedy), rows decoded together.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: u32,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 8)]
    pub gen_batch_size: u32,
    /// Save a resumable checkpoint in OUT/checkpoints every N steps (0: none); a rerun with
    /// the same OUT resumes from it.
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    #[command(flatten)]
    pub device: super::generate::DeviceArgs,
}

pub fn run(a: PreferArgs) -> anyhow::Result<()> {
    let loss: PreferenceLoss = serde_json::from_value(serde_json::Value::String(a.loss.clone()))
        .map_err(|_| anyhow::anyhow!("--loss {:?}: use sigmoid, hinge or ipo", a.loss))?;
    let params = PreferRunParams {
        objective: PreferenceObjective {
            beta: a.beta,
            loss,
            label_smoothing: a.label_smoothing,
        },
        lora: LoraParams {
            rank: a.rank,
            alpha: a.alpha,
            dropout: a.dropout,
            base_quantization: a.base_quantization,
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: a.lr,
            warmup_steps: a.warmup,
            steps: a.steps,
            batch_size: a.batch_size,
            grad_accum: a.grad_accum,
            max_seq_len: a.max_seq_len,
            seed: a.seed,
            ..Default::default()
        },
        log_every: 1,
        checkpoint_every: a.checkpoint_every,
        stop_after: None,
    };
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => pruneforge::loader::embedded::ensure_hf_dir()?,
    };
    let compute = a.device.compute()?;
    let m = open_model_on(&model_dir, &compute.device, compute.dtype)?;
    let limit = a.limit.unwrap_or(usize::MAX);
    let (records, self_play) = match (&a.pairs, &a.spin_data) {
        (Some(p), _) => {
            let mut r = load_preferences(p)?;
            r.truncate(limit);
            (r, None)
        }
        (None, Some(d)) => {
            let mut sft = SftDataset::load_detected(d)
                .with_context(|| format!("reading {}", d.display()))?
                .records;
            sft.truncate(limit);
            let generation = serde_json::from_value(serde_json::json!({
                "maxNewTokens": a.max_new_tokens,
                "temperature": a.temperature,
                "batchSize": a.gen_batch_size,
                "seed": a.seed,
            }))?;
            let (pairs, report) = self_play_pairs(&m, &sft, &generation, a.iteration, 0)?;
            (pairs, Some(report))
        }
        (None, None) => anyhow::bail!("give --pairs (DPO) or --spin-data (SPIN)"),
    };
    let report = run_stage(m, &model_dir, &records, &params, &a.out, self_play, None)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "pairs": report.pairs,
            "pairs_skipped": report.pairs_skipped,
            "steps": report.steps,
            "initial_loss": report.initial_loss,
            "final_loss": report.final_loss,
            "final_margin": report.final_margin,
            "final_accuracy": report.final_accuracy,
            "self_play": report.self_play,
            "out": a.out,
        }))?
    );
    Ok(())
}
