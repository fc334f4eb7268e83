//! Throughput of the `score` pass (forward with hidden states + on-the-fly angular sums)
//! against a plain forward pass of the same shape (no hidden states, no LM head).
//!
//! `cargo run -p pruneforge --release --example score_throughput -- [IDS.safetensors] [REPEATS] [BATCH]`
//! (default: ../shared/reference/calibration_ids.safetensors, 3 repeats, batch 16). Runs
//! alternate so that background load hits both alike; medians are reported.

use candle_core::Device;
use pruneforge::loader::open_model;
use pruneforge::model::ForwardOptions;
use pruneforge::stages::score::angular::AngularAccumulator;
use pruneforge::stages::score::{score_pass, TokenRows};
use std::path::PathBuf;
use std::time::Instant;

/// CPU seconds (user + system, all threads) of this process so far, from /proc/self/stat
/// (Linux; clock ticks of 1/100 s). `None` elsewhere.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ids = args.first().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/reference/calibration_ids.safetensors")
    });
    let repeats: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let batch: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let model = open_model(&pruneforge::loader::embedded::ensure_hf_dir()?)?.model;
    let rows = TokenRows::from_safetensors(&ids, "input_ids")?;
    let tokens = rows.tokens() as f64;
    let sizes: Vec<usize> = (1..=8).collect();
    println!(
        "{} rows × {} tokens, batch {batch}, {} threads",
        rows.rows(),
        rows.width(),
        rayon::current_num_threads()
    );
    // Warm-up.
    let (t, _) = rows.batch(0..batch.min(rows.rows()), &Device::Cpu)?;
    model.forward(&t, ForwardOptions::default())?;
    // The accumulation alone, on the hidden states of one batch.
    let hidden = model
        .forward(
            &t,
            ForwardOptions {
                hidden_states: true,
                train: false,
            },
        )?
        .hidden_states;
    let lengths = vec![rows.width(); t.dim(0)?];
    let mut acc = AngularAccumulator::new(model.num_layers(), &sizes);
    let t0 = Instant::now();
    for _ in 0..3 {
        acc.add_batch(&hidden, &lengths)?;
    }
    println!(
        "angular accumulation alone: {:.1} ms per batch of {} tokens",
        t0.elapsed().as_secs_f64() * 1000.0 / 3.0,
        lengths.iter().sum::<usize>()
    );
    drop(hidden);
    let (mut plain, mut score) = (Vec::new(), Vec::new());
    let (mut plain_cpu, mut score_cpu) = (Vec::new(), Vec::new());
    for r in 0..repeats {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        for start in (0..rows.rows()).step_by(batch) {
            let (t, _) = rows.batch(start..(start + batch).min(rows.rows()), &Device::Cpu)?;
            model.forward(&t, ForwardOptions::default())?;
        }
        let p = tokens / t0.elapsed().as_secs_f64();
        let (c1, t1) = (cpu_seconds(), Instant::now());
        let s = tokens / score_pass(&model, &rows, &sizes, batch, &[])?.seconds;
        let (c2, wall) = (cpu_seconds(), t1.elapsed().as_secs_f64());
        let cpu = match (c0, c1, c2) {
            (Some(a), Some(b), Some(c)) => {
                plain_cpu.push(tokens / (b - a));
                score_cpu.push(tokens / (c - b));
                format!(
                    "; per CPU-second: plain {:.1}, score {:.1}",
                    tokens / (b - a),
                    tokens / (c - b)
                )
            }
            _ => String::new(),
        };
        println!(
            "repeat {r}: plain forward {p:.1} tokens/s, score pass {s:.1} tokens/s (incl. batching {:.1}){cpu}",
            tokens / wall
        );
        plain.push(p);
        score.push(s);
    }
    let (p, s) = (median(plain), median(score));
    println!(
        "median wall: plain forward {p:.1} tokens/s, score pass {s:.1} tokens/s, score/plain = {:.3}",
        s / p
    );
    // Paired per batch: the same batch as a plain forward, then as the score pass does it
    // (forward with hidden states + angular accumulation), back to back, so that background
    // load hits both alike. Median of the per-batch ratios.
    let mut ratios = Vec::new();
    let mut acc = AngularAccumulator::new(model.num_layers(), &sizes);
    for _ in 0..repeats {
        for start in (0..rows.rows()).step_by(batch) {
            let (t, lengths) = rows.batch(start..(start + batch).min(rows.rows()), &Device::Cpu)?;
            let t0 = Instant::now();
            model.forward(&t, ForwardOptions::default())?;
            let plain_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let out = model.forward(
                &t,
                ForwardOptions {
                    hidden_states: true,
                    train: false,
                },
            )?;
            acc.add_batch(&out.hidden_states, &lengths)?;
            drop(out);
            ratios.push(plain_s / t1.elapsed().as_secs_f64());
        }
    }
    println!(
        "paired per batch ({} pairs): median score/plain = {:.3} (min {:.3}, max {:.3})",
        ratios.len(),
        median(ratios.clone()),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    );
    if !plain_cpu.is_empty() {
        let (p, s) = (median(plain_cpu), median(score_cpu));
        println!(
            "median per CPU-second: plain forward {p:.1}, score pass {s:.1}, score/plain = {:.3}",
            s / p
        );
    }
    Ok(())
}
