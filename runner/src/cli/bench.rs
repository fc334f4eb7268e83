//! `pruneforge bench forward|generate`: throughput with the method of
//! ../shared/reference/perf.json (one warm-up, N timed repeats, median wall time), and the
//! ratio to the PyTorch figure recorded there.

use anyhow::Context;
use candle_core::{Device, Tensor};
use pruneforge::generate::{generate_all, GenerateParams};
use pruneforge::model::{ForwardOptions, Llama};
use pruneforge::tokenizer::ChatMessage;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
    /// Model directory or .gguf; default: the embedded SmolLM2-135M-Instruct.
    #[arg(long, global = true)]
    pub model: Option<PathBuf>,
    /// perf.json with the PyTorch figures to compare against.
    #[arg(long, global = true, default_value = "../shared/reference/perf.json")]
    pub reference: PathBuf,
    /// Write the report as JSON here too.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchWhat {
    /// Full forward pass over a [batch, seq] block of tokens.
    Forward {
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Stop before the LM head (backbone + final norm only).
        #[arg(long)]
        backbone: bool,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// One LoRA training step (forward + backward + AdamW) over a [batch, seq] block.
    Train(super::bench_train::BenchTrainArgs),
    /// Greedy generation of N new tokens after the reference chat prompt.
    Generate {
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
}

pub const BENCH_PROMPT: &str = "Write a short story about a robot who learns to paint.";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Deterministic token block (token values do not change the cost of these shapes).
pub fn bench_tokens(batch: usize, seq: usize, vocab: usize) -> anyhow::Result<Tensor> {
    let mut rng = pruneforge::generate::SplitMix64::new(7);
    let ids: Vec<u32> = (0..batch * seq)
        .map(|_| 100 + rng.below((vocab - 200) as u64) as u32)
        .collect();
    Ok(Tensor::from_vec(ids, (batch, seq), &Device::Cpu)?)
}

/// Median seconds of one forward pass.
pub fn time_forward(
    model: &Llama,
    tokens: &Tensor,
    backbone: bool,
    repeats: usize,
) -> anyhow::Result<Vec<f64>> {
    let run = || -> anyhow::Result<()> {
        let out = model.forward(tokens, ForwardOptions::default())?;
        if backbone {
            model.final_norm(&out.last_hidden, false)?;
        } else {
            model.logits(&out.last_hidden)?;
        }
        Ok(())
    };
    run()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(times)
}

fn reference_figure(path: &PathBuf, pointer: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.pointer(pointer)?.as_f64()
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        what,
        model,
        reference,
        json,
    } = args;
    let what = match what {
        BenchWhat::Train(a) => return super::bench_train::run(a, &model, &reference, &json),
        other => other,
    };
    let args = BenchArgs {
        what: BenchWhat::Forward {
            batch: 0,
            seq: 0,
            backbone: false,
            repeats: 0,
        },
        model,
        reference,
        json,
    };
    let dir = super::generate::model_dir(&args.model)?;
    let m = pruneforge::loader::open_model(&dir)
        .with_context(|| format!("loading {}", dir.display()))?;
    let threads = rayon::current_num_threads();
    let report = match what {
        BenchWhat::Train(_) => anyhow::bail!("bench train is handled above"),
        BenchWhat::Forward {
            batch,
            seq,
            backbone,
            repeats,
        } => {
            let tokens = bench_tokens(batch, seq, m.model.config.vocab_size)?;
            let times = time_forward(&m.model, &tokens, backbone, repeats.max(1))?;
            let med = median(times.clone());
            let tok_s = (batch * seq) as f64 / med;
            let key = if backbone {
                "fwd_8x128_backbone"
            } else {
                "fwd_8x128_full"
            };
            let reference = (batch == 8 && seq == 128)
                .then(|| reference_figure(&args.reference, &format!("/fp32/{key}/tok_s_median")))
                .flatten();
            json!({
                "bench": if backbone { "forward-backbone" } else { "forward" },
                "shape": [batch, seq], "threads": threads, "repeats": repeats,
                "median_s": med, "wall_s": times, "tok_s": tok_s,
                "pytorch_tok_s": reference, "ratio_vs_pytorch": reference.map(|r| tok_s / r),
            })
        }
        BenchWhat::Generate {
            new_tokens,
            batch,
            repeats,
        } => {
            let prompt = m
                .tokenizer
                .encode_chat(&[ChatMessage::user(BENCH_PROMPT)], true)?;
            let prompts = vec![prompt.clone(); batch];
            let params = GenerateParams {
                max_new_tokens: new_tokens,
                stop_on_eos: false,
                batch_size: batch,
                ..Default::default()
            };
            generate_all(&m.model, &m.tokenizer, &prompts, &params)?;
            let mut walls = Vec::new();
            let mut decode = Vec::new();
            let mut prefill = Vec::new();
            for _ in 0..repeats.max(1) {
                let (_, s) = generate_all(&m.model, &m.tokenizer, &prompts, &params)?;
                walls.push(s.wall_s);
                decode.push(s.decode_s);
                prefill.push(s.prefill_s);
            }
            let tok_s = (new_tokens * batch) as f64 / median(walls.clone());
            let decode_tok_s = ((new_tokens - 1) * batch) as f64 / median(decode.clone());
            let reference = (batch == 1 && new_tokens == 128)
                .then(|| reference_figure(&args.reference, "/fp32/gen_hf_generate/tok_s"))
                .flatten();
            let reference_decode = (batch == 1)
                .then(|| reference_figure(&args.reference, "/fp32/gen_manual_loop/decode_tok_s"))
                .flatten();
            json!({
                "bench": "generate", "batch": batch, "prompt_tokens": prompt.len(), "new_tokens": new_tokens,
                "threads": threads, "repeats": repeats, "wall_s": walls, "prefill_s": prefill,
                "tok_s": tok_s, "decode_tok_s": decode_tok_s,
                "pytorch_tok_s": reference, "ratio_vs_pytorch": reference.map(|r| tok_s / r),
                "pytorch_decode_tok_s": reference_decode,
                "decode_ratio_vs_pytorch": reference_decode.map(|r| decode_tok_s / r),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = args.json {
        pruneforge::util::fs::write_json_atomic(&p, &report)?;
    }
    Ok(())
}
