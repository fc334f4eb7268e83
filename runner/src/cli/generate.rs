//! `pruneforge generate`: complete prompts with a model (chat template by default).

use anyhow::Context;
use pruneforge::generate::{generate_all, GenerateParams, SamplingParams};
use pruneforge::tokenizer::ChatMessage;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// HF model directory or .gguf file; default: the embedded SmolLM2-135M-Instruct.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompt(s); repeat for a batch.
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Send the prompt as plain text instead of a chat user message.
    #[arg(long)]
    pub raw: bool,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// `--device` and `--dtype`, shared by the commands that run a model.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// auto (the first CUDA device when built with `cuda` and one is visible, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: pruneforge::device::DeviceSpec,
    /// auto (bf16 on CUDA, f32 on the CPU), f32, bf16 or f16.
    #[arg(long, global = true, default_value = "auto")]
    pub dtype: pruneforge::device::DTypeSpec,
}

impl DeviceArgs {
    /// The device and dtype the flags name, opened.
    pub fn compute(&self) -> anyhow::Result<pruneforge::device::Compute> {
        let (device, dtype) = self.resolve()?;
        Ok(pruneforge::device::Compute { device, dtype })
    }

    pub fn resolve(&self) -> anyhow::Result<(candle_core::Device, candle_core::DType)> {
        let (d, t) = pruneforge::device::resolve(self.device, self.dtype)?;
        tracing::info!(
            device = %pruneforge::device::describe(&d).device,
            dtype = pruneforge::device::dtype_name(t),
            "compute device"
        );
        Ok((d, t))
    }
}

pub fn model_dir(model: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match model {
        Some(p) => pruneforge::loader::resolve_hf_dir(p)?,
        None => pruneforge::loader::embedded::ensure_hf_dir()?,
    })
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let dir = model_dir(&args.model)?;
    let (device, dtype) = args.device.resolve()?;
    let m = pruneforge::loader::open_model_on(&dir, &device, dtype)
        .with_context(|| format!("loading {}", dir.display()))?;
    let prompts = args
        .prompt
        .iter()
        .map(|p| {
            if args.raw {
                m.tokenizer.encode(p, true)
            } else {
                m.tokenizer
                    .encode_chat(&[ChatMessage::user(p.clone())], true)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: 0,
            seed: args.seed,
        },
        stop: args.stop.clone(),
        stop_on_eos: true,
        batch_size: args.batch_size,
    };
    let (out, stats) = generate_all(&m.model, &m.tokenizer, &prompts, &params)?;
    for (p, c) in args.prompt.iter().zip(&out) {
        println!("### {p}\n{}\n", c.text);
    }
    eprintln!(
        "{} tokens in {:.2}s ({:.1} tok/s, prefill {:.2}s)",
        stats.generated_tokens, stats.wall_s, stats.tokens_per_s, stats.prefill_s
    );
    Ok(())
}
