//! `pruneforge bench train`: LoRA training-step throughput with the method of
//! ../shared/reference/perf.json (`lora_step`: r 16, alpha 32, dropout 0, all seven
//! projections, AdamW, one step = forward `[4, 256]` with shifted-label CE over every position +
//! backward + AdamW update; one warm-up step, N timed steps, median), and the ratio to the
//! PyTorch + PEFT figure recorded there. Also reports the time per phase and how busy the
//! machine was (other processes' CPU use during each timed step, from /proc). With
//! `--clean N` it keeps stepping until N steps were clean (other processes used < 0.1 core,
//! perf.json's rule for its own figures) and reports their median as well.

use anyhow::Context;
use pruneforge::loader::open_model_with_base;
use pruneforge::train::batching::Batch;
use pruneforge::train::lora::{LoraParams, LoraSet};
use pruneforge::train::trainer::{PhaseTimes, Trainer};
use pruneforge::train::{AdamW, OptimizerParams};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchTrainArgs {
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Keep stepping until this many timed steps were clean (other processes used less than
    /// --max-foreign cores during the step, perf.json's rule) or --max-steps were taken.
    #[arg(long, default_value_t = 0)]
    pub clean: usize,
    #[arg(long, default_value_t = 0.1)]
    pub max_foreign: f64,
    #[arg(long, default_value_t = 40)]
    pub max_steps: usize,
    /// LM-head chunk (positions).
    #[arg(long, default_value_t = pruneforge::train::loss::DEFAULT_CHUNK)]
    pub chunk: usize,
    /// Use candle's composable ops instead of the training kernels (for comparison).
    #[arg(long)]
    pub composable: bool,
    /// Token windows to train on (`input_ids` [rows, len]); random tokens when missing.
    #[arg(long, default_value = "../shared/reference/heldout_ids.safetensors")]
    pub tokens: PathBuf,
    /// QLoRA: keep the base projections quantized (q8_0, q4_0, q4_1, q4_k, nf4) while the
    /// adapters train; compare its step time and peak memory with a run without it.
    #[arg(long)]
    pub base_quantization: Option<pruneforge::model::quant::BaseQuantization>,
}

/// Options of [`bench_train`].
#[derive(Clone, Debug, Serialize)]
pub struct BenchTrainOptions {
    pub batch: usize,
    pub seq: usize,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub repeats: usize,
    pub chunk: usize,
    pub composable: bool,
    /// Clean timed steps wanted (0: just `repeats` steps).
    pub clean: usize,
    pub max_foreign: f64,
    pub max_steps: usize,
    pub base_quantization: Option<pruneforge::model::quant::BaseQuantization>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub bench: &'static str,
    pub options: BenchTrainOptions,
    pub threads: usize,
    /// The CPU kernels' vector path (`VectorPath::detect`, e.g. `Avx512`).
    pub cpu_vector_path: &'static str,
    pub trainable_params: usize,
    /// Wall time of each timed step.
    pub step_s: Vec<f64>,
    pub median_s: f64,
    /// Input tokens per second (batch * seq / median step time), as perf.json counts them.
    pub tok_s: f64,
    pub pytorch_tok_s: Option<f64>,
    pub ratio_vs_pytorch: Option<f64>,
    /// Phase times of the median step.
    pub phases: PhaseTimes,
    /// Loss of every step (warm-up first): it must fall.
    pub losses: Vec<f64>,
    /// CPU cores other processes used during each timed step (machine busy time minus ours;
    /// includes hypervisor steal).
    pub foreign_cores: Vec<f64>,
    /// CPU cores this process used during each timed step.
    pub own_cores: Vec<f64>,
    /// Wall time of the clean steps (other processes below `max_foreign` cores) and their
    /// median, with the throughput it gives.
    pub clean_step_s: Vec<f64>,
    pub clean_median_s: Option<f64>,
    pub clean_tok_s: Option<f64>,
    pub clean_ratio_vs_pytorch: Option<f64>,
    /// /proc/loadavg before and after.
    pub loadavg_before: String,
    pub loadavg_after: String,
    /// The quantized projections (QLoRA), when the base is quantized.
    pub quantized_base: Option<pruneforge::model::llama::QuantizedBase>,
    /// Resident memory once the model is loaded, before any step (`VmRSS`).
    pub loaded_rss_bytes: Option<u64>,
    /// Peak resident memory of the process (load and steps; `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
}

/// (busy jiffies of the machine, jiffies of this process).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?;
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After "pid (comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime stime ...
    let f: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((busy, utime + stime))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `batch` windows of `seq` tokens: rows of `tokens_file` when it has enough, else
/// deterministic pseudo-random ids (token values do not change the cost).
fn token_rows(tokens_file: &Path, batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let from_file = pruneforge::train::eval::read_token_windows(tokens_file, "input_ids")
        .ok()
        .filter(|rows| rows.len() >= batch && rows.iter().all(|r| r.len() >= seq))
        .map(|rows| {
            rows[..batch]
                .iter()
                .map(|r| r[..seq].to_vec())
                .collect::<Vec<_>>()
        });
    from_file.unwrap_or_else(|| {
        let mut rng = pruneforge::util::rng::SplitMix64::new(7);
        (0..batch)
            .map(|_| {
                (0..seq)
                    .map(|_| 100 + rng.below_unbiased(vocab as u64 - 200) as u32)
                    .collect()
            })
            .collect()
    })
}

/// Times LoRA training steps on the model in `model_dir`.
pub fn bench_train(
    model_dir: &Path,
    opts: &BenchTrainOptions,
    tokens_file: &Path,
    reference: &Path,
) -> anyhow::Result<BenchReport> {
    let m = open_model_with_base(
        model_dir,
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        opts.base_quantization,
    )
    .with_context(|| format!("loading {}", model_dir.display()))?;
    let mut model = m.model;
    let loaded_rss_bytes = pruneforge::device::host_memory_bytes();
    model.train_kernels = !opts.composable;
    let (b, t) = (opts.batch, opts.seq);
    let rows = token_rows(tokens_file, b, t, model.config.vocab_size);
    // HF semantics: input [b, t], labels = input, loss on every position but the last.
    let mut batch = Batch {
        tokens: rows.concat(),
        rows: b,
        len: t,
        positions: Vec::new(),
        targets: Vec::new(),
    };
    for (r, row) in rows.iter().enumerate() {
        for p in 0..t - 1 {
            batch.positions.push((r * t + p) as u32);
            batch.targets.push(row[p + 1]);
        }
    }
    let lp = LoraParams {
        rank: opts.rank,
        alpha: opts.alpha,
        dropout: opts.dropout,
        base_quantization: opts.base_quantization,
        ..Default::default()
    };
    let op = OptimizerParams::default();
    let lora = LoraSet::init(&model, &lp, 0)?;
    let trainable_params = lora.trainable_params();
    let opt = AdamW::new(&lora.sizes(), &op);
    let mut trainer = Trainer::new(&mut model, None, lora, opt, None, op.max_grad_norm)?;
    trainer.chunk = opts.chunk;
    let loadavg_before = loadavg();
    let mut losses = Vec::new();
    let mut step_s = Vec::new();
    let mut phases = Vec::new();
    let mut foreign = Vec::new();
    let mut own = Vec::new();
    let clk = 100.0; // USER_HZ
    let mut clean = Vec::new();
    let mut i = 0usize;
    loop {
        let done_plain = opts.clean == 0 && i > opts.repeats;
        let done_clean = opts.clean > 0 && (clean.len() >= opts.clean || i > opts.max_steps);
        if done_plain || done_clean {
            break;
        }
        let j0 = cpu_jiffies();
        let t0 = Instant::now();
        let out = trainer.step(std::slice::from_ref(&batch), 1e-4, i as u64, i as u64)?;
        let dt = t0.elapsed().as_secs_f64();
        let j1 = cpu_jiffies();
        losses.push(out.loss);
        tracing::info!(step = i, seconds = dt, loss = out.loss, "bench step");
        i += 1;
        if i == 1 {
            continue; // warm-up
        }
        step_s.push(dt);
        phases.push(out.times);
        if let (Some((b0, o0)), Some((b1, o1))) = (j0, j1) {
            let other = (b1 - b0) as f64 - (o1 - o0) as f64;
            let f = (other / clk / dt).max(0.0);
            foreign.push(f);
            own.push((o1 - o0) as f64 / clk / dt);
            if f < opts.max_foreign {
                clean.push(dt);
            }
        }
    }
    let med = median(&step_s);
    let med_idx = step_s
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - med).abs().total_cmp(&(b.1 - med).abs()))
        .map(|(i, _)| i)
        .unwrap_or(0);
    let tok_s = (b * t) as f64 / med;
    let pytorch = std::fs::read_to_string(reference)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.pointer("/fp32/lora_step/tok_s").and_then(|x| x.as_f64()))
        .filter(|_| b == 4 && t == 256 && opts.rank == 16);
    let clean_median = (!clean.is_empty()).then(|| median(&clean));
    let clean_tok_s = clean_median.map(|m| (b * t) as f64 / m);
    Ok(BenchReport {
        bench: "train",
        options: opts.clone(),
        threads: rayon::current_num_threads(),
        cpu_vector_path: pruneforge::model::kernels::widest::VectorPath::detect().name(),
        trainable_params,
        median_s: med,
        tok_s,
        pytorch_tok_s: pytorch,
        ratio_vs_pytorch: pytorch.map(|p| tok_s / p),
        phases: phases.get(med_idx).copied().unwrap_or_default(),
        step_s,
        losses,
        clean_step_s: clean,
        clean_median_s: clean_median,
        clean_tok_s,
        clean_ratio_vs_pytorch: clean_tok_s.zip(pytorch).map(|(a, p)| a / p),
        foreign_cores: foreign,
        own_cores: own,
        loadavg_before,
        loadavg_after: loadavg(),
        quantized_base: model.quantized_base(),
        loaded_rss_bytes,
        peak_rss_bytes: pruneforge::device::peak_host_memory_bytes(),
    })
}

/// `pruneforge bench train` (model, reference and JSON output come from `bench`'s global flags).
pub fn run(
    a: BenchTrainArgs,
    model: &Option<PathBuf>,
    reference: &Path,
    json: &Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = super::generate::model_dir(model)?;
    let opts = BenchTrainOptions {
        batch: a.batch,
        seq: a.seq,
        rank: a.rank,
        alpha: a.alpha,
        dropout: a.dropout,
        repeats: a.repeats.max(1),
        chunk: a.chunk,
        composable: a.composable,
        clean: a.clean,
        max_foreign: a.max_foreign,
        max_steps: a.max_steps.max(1),
        base_quantization: a.base_quantization,
    };
    let report = bench_train(&dir, &opts, &a.tokens, reference)?;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(p) = json {
        pruneforge::util::fs::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}
