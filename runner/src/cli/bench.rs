//! `pruneforge bench forward|generate|parity` (and `train`, `matmul` in their own modules): throughput with the method of
//! ../shared/reference/perf.json (one warm-up, N timed repeats, median wall time), and the
//! ratio to the PyTorch figure recorded there; on any device and dtype (`--device`, `--dtype`),
//! with a downloaded model or a seeded random one of any shape (`--config … --random-weights`).

use super::generate::DeviceArgs;
use anyhow::Context;
use candle_core::{DType, Device, Tensor, D};
use pruneforge::device::{describe, dtype_name, synchronize, MemoryWatch};
use pruneforge::generate::probe::SPEED_PROMPT;
use pruneforge::generate::{generate_all, GenerateParams};
use pruneforge::model::compare::compare_logits;
use pruneforge::model::{random::random_model, ForwardOptions, Llama, ModelConfig};
use pruneforge::tokenizer::{ChatMessage, Tokenizer};
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
    /// A model config.json (HF layout) to build with `--random-weights` instead of loading
    /// weights: any Llama-family shape, e.g. Llama-3.1-8B's.
    #[arg(long, global = true, requires = "random_weights")]
    pub config: Option<PathBuf>,
    /// Seeded random weights (of `--config`'s shape, or of `--model`'s config.json).
    #[arg(long, global = true)]
    pub random_weights: bool,
    /// Seed of the random weights.
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
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
    /// The few-row matmul kernel of decoding against the general GEMM, by row count.
    Matmul(super::bench_matmul::BenchMatmulArgs),
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
        /// Prompt length with random weights (no tokenizer; random token ids).
        #[arg(long, default_value_t = 32)]
        prompt_tokens: usize,
    },
    /// Logits of the model on `--device`/`--dtype` against the same model (same weights or
    /// same seed) on the CPU in f32: max difference, top-1 agreement and mean KL.
    Parity {
        #[arg(long, default_value_t = 4)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        seq: usize,
        /// Compare the device-generic path on the CPU (f32) instead of the fused CPU kernels.
        #[arg(long)]
        reference_generic: bool,
    },
}

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
        synchronize(model.device())?;
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

/// The model under test: loaded (with its tokenizer) or random (none).
struct Subject {
    model: Llama,
    tokenizer: Option<Tokenizer>,
    source: String,
}

fn load_subject(
    model: &Option<PathBuf>,
    config: &Option<PathBuf>,
    random: bool,
    seed: u64,
    device: &Device,
    dtype: DType,
) -> anyhow::Result<Subject> {
    if random {
        let cfg_path = match (config, model) {
            (Some(c), _) => c.clone(),
            (None, m) => super::generate::model_dir(m)?.join("config.json"),
        };
        let cfg = ModelConfig::from_json_file(&cfg_path)?;
        let t = Instant::now();
        let model = random_model(cfg, seed, dtype, device)
            .with_context(|| format!("random weights of {}", cfg_path.display()))?;
        synchronize(device)?;
        tracing::info!(
            seconds = t.elapsed().as_secs_f64(),
            params = model.config.parameter_count(),
            "random model built"
        );
        return Ok(Subject {
            model,
            tokenizer: None,
            source: format!("random(seed={seed}, config={})", cfg_path.display()),
        });
    }
    let dir = super::generate::model_dir(model)?;
    let m = pruneforge::loader::open_model_on(&dir, device, dtype)
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok(Subject {
        model: m.model,
        tokenizer: Some(m.tokenizer),
        source: dir.display().to_string(),
    })
}

/// Greedy decoding of `new_tokens` after `prompt` (`[batch, t]`), every row advancing
/// together; argmax on the device, one token id per row back to the host per step (as a
/// generator needs it). Returns (prefill seconds, decode seconds).
fn time_greedy(model: &Llama, prompt: &Tensor, new_tokens: usize) -> anyhow::Result<(f64, f64)> {
    let (b, t) = prompt.dims2()?;
    let rows: Vec<usize> = (0..b).collect();
    let mut cache = model.new_cache(b, t + new_tokens);
    let t0 = Instant::now();
    let h = model.forward_cached(prompt, &mut cache, &rows)?;
    let next = |h: &Tensor| -> anyhow::Result<Vec<u32>> {
        let last = h.narrow(1, h.dim(1)? - 1, 1)?;
        Ok(model
            .logits(&last)?
            .argmax(D::Minus1)?
            .flatten_all()?
            .to_vec1::<u32>()?)
    };
    let mut ids = next(&h)?;
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 1..new_tokens {
        let x = Tensor::from_vec(ids, (b, 1), &Device::Cpu)?;
        let h = model.forward_cached(&x, &mut cache, &rows)?;
        ids = next(&h)?;
    }
    Ok((prefill, t1.elapsed().as_secs_f64()))
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        what,
        model,
        reference,
        json,
        config,
        random_weights,
        seed,
        device,
    } = args;
    let what = match what {
        BenchWhat::Train(a) => {
            if random_weights
                || !matches!(
                    device.device,
                    pruneforge::device::DeviceSpec::Auto | pruneforge::device::DeviceSpec::Cpu
                )
            {
                anyhow::bail!("bench train runs on the CPU with a loaded model only (no --device cuda or --random-weights yet)");
            }
            return super::bench_train::run(a, &model, &reference, &json);
        }
        BenchWhat::Matmul(a) => return super::bench_matmul::run(a, &json),
        other => other,
    };
    if config.is_some() && model.is_some() {
        anyhow::bail!("pass either --model or --config (with --random-weights), not both");
    }
    let (dev, dtype) = device.resolve()?;
    let info = describe(&dev);
    let watch = MemoryWatch::start(&dev);
    let load_t = Instant::now();
    let subject = load_subject(&model, &config, random_weights, seed, &dev, dtype)?;
    let load_s = load_t.elapsed().as_secs_f64();
    let m = &subject.model;
    let threads = rayon::current_num_threads();
    let weight_bytes = m.config.parameter_count() * dtype.size_in_bytes() as u64;
    let mut report = match what {
        BenchWhat::Train(_) | BenchWhat::Matmul(_) => {
            anyhow::bail!("bench train and matmul are handled above")
        }
        BenchWhat::Forward {
            batch,
            seq,
            backbone,
            repeats,
        } => {
            let tokens = bench_tokens(batch, seq, m.config.vocab_size)?;
            let times = time_forward(m, &tokens, backbone, repeats.max(1))?;
            let med = median(times.clone());
            let tok_s = (batch * seq) as f64 / med;
            // Model FLOPs of a causal forward (mean attention context (seq + 1) / 2).
            let flops = m.config.flops_per_token(seq.div_ceil(2)) as f64 * (batch * seq) as f64;
            let key = if backbone {
                "fwd_8x128_backbone"
            } else {
                "fwd_8x128_full"
            };
            let pytorch = (batch == 8
                && seq == 128
                && !random_weights
                && dtype == DType::F32
                && dev.is_cpu())
            .then(|| reference_figure(&reference, &format!("/fp32/{key}/tok_s_median")))
            .flatten();
            json!({
                "bench": if backbone { "forward-backbone" } else { "forward" },
                "shape": [batch, seq], "threads": threads, "repeats": repeats,
                "median_s": med, "wall_s": times, "tok_s": tok_s,
                "model_tflop_s": flops / med / 1e12,
                "pytorch_tok_s": pytorch, "ratio_vs_pytorch": pytorch.map(|r| tok_s / r),
            })
        }
        BenchWhat::Generate {
            new_tokens,
            batch,
            repeats,
            prompt_tokens,
        } => {
            let new_tokens = new_tokens.max(2);
            match &subject.tokenizer {
                Some(tok) => {
                    let prompt = tok.encode_chat(&[ChatMessage::user(SPEED_PROMPT)], true)?;
                    let prompts = vec![prompt.clone(); batch];
                    let params = GenerateParams {
                        max_new_tokens: new_tokens,
                        stop_on_eos: false,
                        batch_size: batch,
                        ..Default::default()
                    };
                    generate_all(m, tok, &prompts, &params)?;
                    let mut walls = Vec::new();
                    let mut decode = Vec::new();
                    let mut prefill = Vec::new();
                    for _ in 0..repeats.max(1) {
                        let (_, s) = generate_all(m, tok, &prompts, &params)?;
                        walls.push(s.wall_s);
                        decode.push(s.decode_s);
                        prefill.push(s.prefill_s);
                    }
                    let tok_s = (new_tokens * batch) as f64 / median(walls.clone());
                    let decode_tok_s = ((new_tokens - 1) * batch) as f64 / median(decode.clone());
                    let cpu_f32 = dev.is_cpu() && dtype == DType::F32;
                    let pytorch = (batch == 1 && new_tokens == 128 && cpu_f32)
                        .then(|| reference_figure(&reference, "/fp32/gen_hf_generate/tok_s"))
                        .flatten();
                    let pytorch_decode = (batch == 1 && cpu_f32)
                        .then(|| reference_figure(&reference, "/fp32/gen_manual_loop/decode_tok_s"))
                        .flatten();
                    json!({
                        "bench": "generate", "batch": batch, "prompt_tokens": prompt.len(), "new_tokens": new_tokens,
                        "threads": threads, "repeats": repeats, "wall_s": walls, "prefill_s": prefill,
                        "tok_s": tok_s, "decode_tok_s": decode_tok_s,
                        "decode_weight_gb_s": decode_tok_s / batch as f64 * weight_bytes as f64 / 1e9,
                        "pytorch_tok_s": pytorch, "ratio_vs_pytorch": pytorch.map(|r| tok_s / r),
                        "pytorch_decode_tok_s": pytorch_decode,
                        "decode_ratio_vs_pytorch": pytorch_decode.map(|r| decode_tok_s / r),
                    })
                }
                None => {
                    let prompt = bench_tokens(batch, prompt_tokens.max(1), m.config.vocab_size)?;
                    time_greedy(m, &prompt, new_tokens)?;
                    let mut walls = Vec::new();
                    let mut decode = Vec::new();
                    let mut prefill = Vec::new();
                    for _ in 0..repeats.max(1) {
                        let (p, d) = time_greedy(m, &prompt, new_tokens)?;
                        walls.push(p + d);
                        prefill.push(p);
                        decode.push(d);
                    }
                    let tok_s = (new_tokens * batch) as f64 / median(walls.clone());
                    let decode_tok_s = ((new_tokens - 1) * batch) as f64 / median(decode.clone());
                    json!({
                        "bench": "generate", "batch": batch, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                        "threads": threads, "repeats": repeats, "wall_s": walls, "prefill_s": prefill,
                        "decode_s": decode, "tok_s": tok_s, "decode_tok_s": decode_tok_s,
                        // Weight bytes read per decode step over its time: the bandwidth bound's numerator.
                        "decode_weight_gb_s": decode_tok_s / batch as f64 * weight_bytes as f64 / 1e9,
                    })
                }
            }
        }
        BenchWhat::Parity {
            batch,
            seq,
            reference_generic,
        } => {
            let tokens = bench_tokens(batch, seq, m.config.vocab_size)?;
            let t0 = Instant::now();
            let test = m.logits(&m.forward(&tokens, ForwardOptions::default())?.last_hidden)?;
            synchronize(&dev)?;
            let test_s = t0.elapsed().as_secs_f64();
            let mut cpu = load_subject(
                &model,
                &config,
                random_weights,
                seed,
                &Device::Cpu,
                DType::F32,
            )?;
            cpu.model.fused_kernels = !reference_generic;
            let t1 = Instant::now();
            let want = cpu.model.logits(
                &cpu.model
                    .forward(&tokens, ForwardOptions::default())?
                    .last_hidden,
            )?;
            let ref_s = t1.elapsed().as_secs_f64();
            let a = compare_logits(&want, &test)?;
            json!({
                "bench": "parity", "shape": [batch, seq],
                "reference": if reference_generic { "cpu-f32-generic" } else { "cpu-f32-fused" },
                "positions": a.positions, "max_abs": a.max_abs, "max_rel": a.max_rel,
                "top1": a.top1, "mean_kl": a.mean_kl, "test_s": test_s, "reference_s": ref_s,
            })
        }
    };
    let peak = watch.map(MemoryWatch::finish);
    if let Value::Object(o) = &mut report {
        o.insert("model".into(), subject.source.clone().into());
        o.insert("params".into(), m.config.parameter_count().into());
        o.insert("device".into(), info.device.clone().into());
        o.insert("dtype".into(), dtype_name(dtype).into());
        o.insert(
            "cpu_vector_path".into(),
            pruneforge::model::kernels::widest::VectorPath::detect()
                .name()
                .into(),
        );
        o.insert("gpu".into(), json!(info.name));
        o.insert("gpu_total_gib".into(), json!(info.total_bytes.map(gib)));
        o.insert("load_s".into(), load_s.into());
        o.insert("weight_gib".into(), gib(weight_bytes).into());
        o.insert(
            "peak_device_gib".into(),
            json!(peak.map(|p| gib(p.peak_bytes))),
        );
        o.insert(
            "peak_device_over_start_gib".into(),
            json!(peak.map(|p| gib(p.peak_bytes.saturating_sub(p.baseline_bytes)))),
        );
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(p) = json {
        pruneforge::util::fs::write_json_atomic(&p, &report)?;
    }
    Ok(())
}
