//! `pruneforge finetune`: run the finetune stage from the command line, optionally pruning
//! the student first and measuring held-out perplexity on token windows before and after.

use anyhow::Context;
use pruneforge::loader::{open_model, save_hf_dir};
use pruneforge::stages::finetune::{run as run_stage, FinetuneParams};
use pruneforge::stages::prune::PruningLineage;
use pruneforge::stages::score::digest::model_sha256;
use pruneforge::train::eval::{read_token_windows, windows_nll};
use pruneforge::train::KdParams;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct FinetuneArgs {
    /// Student model directory or .gguf; default: the embedded SmolLM2-135M-Instruct.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Remove layers START..START+N from the student first (`START:N`, e.g. `13:6`); the
    /// pruned model is saved to OUT/student and trained.
    #[arg(long)]
    pub prune: Option<String>,
    /// Teacher for logit distillation (`embedded` for the embedded model).
    #[arg(long)]
    pub teacher: Option<String>,
    /// SFT data: files (Alpaca JSON, GSM8K JSONL, JSONL) or shard directories, in order.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// FinetuneParams as JSON (a file); flags below override it.
    #[arg(long)]
    pub params: Option<PathBuf>,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long)]
    pub warmup: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    #[arg(long)]
    pub rank: Option<usize>,
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f64>,
    /// QLoRA: keep the base projections quantized (q8_0, q4_0, q4_1, q4_k, nf4) while the
    /// adapters train (CPU, f32). The merged model is the dequantized base plus the adapter.
    #[arg(long)]
    pub base_quantization: Option<pruneforge::model::quant::BaseQuantization>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub holdout: Option<usize>,
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Mix logit distillation in with this ratio (needs --teacher).
    #[arg(long)]
    pub kd_ratio: Option<f64>,
    #[arg(long)]
    pub kd_temperature: Option<f64>,
    /// Add hidden-state distillation with this weight: the normalized squared error between
    /// each chosen student layer's output and that of the teacher layer it was cut from
    /// (needs --teacher; the pairing comes from the student's pruning.json).
    #[arg(long)]
    pub kd_hidden_weight: Option<f64>,
    /// Student layers whose outputs are matched (comma-separated); default: every layer.
    #[arg(long, value_delimiter = ',')]
    pub kd_hidden_layers: Option<Vec<usize>>,
    /// Token windows (`input_ids` [rows, len] safetensors) for held-out perplexity of the
    /// student before and the merged model after training.
    #[arg(long)]
    pub heldout_ids: Option<PathBuf>,
    /// Use only the first N rows of --heldout-ids.
    #[arg(long, default_value_t = 64)]
    pub heldout_rows: usize,
    #[command(flatten)]
    pub device: super::generate::DeviceArgs,
}

fn embedded() -> anyhow::Result<PathBuf> {
    Ok(pruneforge::loader::embedded::ensure_hf_dir()?)
}

pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    let mut p: FinetuneParams = match &a.params {
        Some(f) => serde_json::from_str(
            &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        )
        .with_context(|| format!("{} is not valid FinetuneParams JSON", f.display()))?,
        None => FinetuneParams::default(),
    };
    let o = &mut p.optimizer;
    macro_rules! set {
        ($flag:expr, $field:expr) => {
            if let Some(v) = $flag {
                $field = v;
            }
        };
    }
    set!(a.steps, o.steps);
    set!(a.lr, o.lr);
    set!(a.warmup, o.warmup_steps);
    set!(a.batch_size, o.batch_size);
    set!(a.grad_accum, o.grad_accum);
    set!(a.max_seq_len, o.max_seq_len);
    set!(a.seed, o.seed);
    set!(a.rank, p.lora.rank);
    set!(a.alpha, p.lora.alpha);
    set!(a.dropout, p.lora.dropout);
    if a.base_quantization.is_some() {
        p.lora.base_quantization = a.base_quantization;
    }
    set!(a.holdout, p.holdout);
    set!(a.checkpoint_every, p.checkpoint_every);
    if a.limit.is_some() {
        p.limit = a.limit;
    }
    if a.kd_ratio.is_some()
        || a.kd_temperature.is_some()
        || a.kd_hidden_weight.is_some()
        || a.kd_hidden_layers.is_some()
    {
        let mut kd = p.kd.clone().unwrap_or_default();
        set!(a.kd_ratio, kd.ratio);
        set!(a.kd_temperature, kd.temperature);
        set!(a.kd_hidden_weight, kd.hidden_weight);
        set!(a.kd_hidden_layers.clone(), kd.hidden_layers);
        p.kd = Some::<KdParams>(kd);
    }
    let mut student = match &a.model {
        Some(m) => m.clone(),
        None => embedded()?,
    };
    if let Some(spec) = &a.prune {
        let (start, n) = spec
            .split_once(':')
            .and_then(|(s, n)| Some((s.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
            .context("--prune takes START:N, e.g. 13:6")?;
        let dir = a.out.join("student");
        if !dir.join("config.json").exists() {
            let mut m = open_model(&student)?;
            let (layers, hidden) = (m.model.num_layers(), m.model.config.hidden_size);
            let sha = model_sha256(&m.dir)?;
            m.model.remove_layers(start, n)?;
            save_hf_dir(&m.model, &m.tokenizer, &dir, m.stored_dtype)?;
            let removed: Vec<usize> = (start..start + n).collect();
            PruningLineage::new(layers, hidden, &removed, None, &sha).write(&dir)?;
        }
        student = dir;
    }
    let teacher = match a.teacher.as_deref() {
        Some("embedded") => Some(embedded()?),
        Some(t) => Some(PathBuf::from(t)),
        None => None,
    };
    let windows = a
        .heldout_ids
        .as_ref()
        .map(|f| -> anyhow::Result<Vec<Vec<u32>>> {
            let mut rows = read_token_windows(f, "input_ids")?;
            rows.truncate(a.heldout_rows);
            Ok(rows)
        })
        .transpose()?;
    let ppl_before = match &windows {
        Some(rows) => {
            let m = open_model(&student)?;
            let nll = windows_nll(&m.model, rows, 8)?;
            tracing::info!(nll, ppl = nll.exp(), "held-out windows before training");
            Some(nll)
        }
        None => None,
    };
    let summary = run_stage(
        &student,
        teacher.as_deref(),
        &a.data,
        &p,
        &a.out,
        &a.device.compute()?,
    )?;
    let ppl_after = match (&windows, summary.completed && p.write_merged) {
        (Some(rows), true) => {
            let m = open_model(&a.out.join("merged"))?;
            Some(windows_nll(&m.model, rows, 8)?)
        }
        _ => None,
    };
    if let (Some(rows), Some(before)) = (&windows, ppl_before) {
        let tokens: usize = rows.iter().map(|r| r.len().saturating_sub(1)).sum();
        let report = json!({
            "heldout_ids": a.heldout_ids,
            "rows": rows.len(),
            "tokens_scored": tokens,
            "nll_before": before,
            "ppl_before": before.exp(),
            "nll_after": ppl_after,
            "ppl_after": ppl_after.map(f64::exp),
        });
        let path = a.out.join("heldout_windows.json");
        pruneforge::util::fs::write_json_atomic(&path, &report)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
