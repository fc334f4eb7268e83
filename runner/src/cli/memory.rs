//! `pruneforge memory`: the memory each stage needs for a model shape, from the same estimate
//! that every stage checks before it starts (runner/src/memory_plan.rs).

use anyhow::Context;
use clap::Args;
use pruneforge::memory_plan::{self, MemoryNeed};
use pruneforge::model::ModelConfig;
use pruneforge::train::LoraParams;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// The shape: an HF config.json (Llama family).
    #[arg(long)]
    pub config: PathBuf,
    /// Compute dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Sequences per batch (score, eval, distill generation, fine-tune micro-batch).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence (calibration, eval context, fine-tune max_seq_len, prompts).
    #[arg(long, default_value_t = 2048)]
    pub seq: usize,
    /// New tokens of generation (distill, speculate).
    #[arg(long, default_value_t = 256)]
    pub new_tokens: usize,
    /// LoRA rank on all seven projections.
    #[arg(long, default_value_t = 16)]
    pub lora_rank: usize,
    /// Fine-tune with activation checkpointing per layer (what CUDA and bf16 do; the CPU's
    /// fused f32 kernels do not checkpoint).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub checkpoint: bool,
    /// Add a fine-tune row for QLoRA over a base quantized to this format (q8_0, q4_0, q4_1,
    /// q4_k, nf4): its projections in blocks, one layer dequantized at a time.
    #[arg(long)]
    pub base_quantization: Option<pruneforge::model::quant::BaseQuantization>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: MemoryArgs) -> anyhow::Result<()> {
    let dtype = match a.dtype.as_str() {
        "bf16" => candle_core::DType::BF16,
        "f16" => candle_core::DType::F16,
        "f32" => candle_core::DType::F32,
        other => anyhow::bail!("--dtype {other}: expected bf16, f16 or f32"),
    };
    let cfg = ModelConfig::from_json_file(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let (b, t) = (a.batch.max(1), a.seq.max(2));
    // The default targets are all seven projections.
    let lora_all = LoraParams {
        rank: a.lora_rank.max(1),
        ..LoraParams::default()
    };
    let kv = t + a.new_tokens;
    let mut needs: Vec<MemoryNeed> = vec![
        memory_plan::inference("score", &cfg, dtype, 1, b, t, 0, 0, true),
        memory_plan::inference("distill", &cfg, dtype, 1, b, t, b, kv, false),
        memory_plan::lora_training(
            &cfg,
            dtype,
            b,
            t,
            lora_all.parameter_count(&cfg),
            None,
            1024,
            a.checkpoint,
        ),
        MemoryNeed {
            stage: "finetune + KD teacher".into(),
            ..memory_plan::lora_training(
                &cfg,
                dtype,
                b,
                t,
                lora_all.parameter_count(&cfg),
                Some(&cfg),
                1024,
                a.checkpoint,
            )
        },
        // Multiple-choice scoring; with a generation task (GSM8K) see `eval + generation`.
        memory_plan::eval(&cfg, dtype, b, t, true, false, a.new_tokens),
        MemoryNeed {
            stage: "eval + generation".into(),
            ..memory_plan::eval(&cfg, dtype, b, t, true, true, a.new_tokens)
        },
        memory_plan::inference("speculate", &cfg, dtype, 2, 1, t, t, kv, false),
    ];
    if let Some(base) = a.base_quantization {
        // The plain fine-tune row (index 2) with the student's base quantized.
        let qlora = MemoryNeed {
            stage: format!("finetune, {base} base"),
            ..needs[2].clone()
        };
        needs.insert(3, qlora.with_quantized_base(&cfg, dtype, base));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&needs)?);
        return Ok(());
    }
    let gib = |x: u64| x as f64 / (1u64 << 30) as f64;
    println!(
        "{} parameters, {}, batch {b} × {t} tokens, {} new tokens, LoRA r{} on 7 projections",
        cfg.parameter_count(),
        a.dtype,
        a.new_tokens,
        lora_all.rank
    );
    println!(
        "{:<22} {:>9} {:>9} {:>12} {:>10} {:>9}",
        "stage (GiB)", "weights", "KV cache", "activations", "LoRA+Adam", "total"
    );
    for n in &needs {
        println!(
            "{:<22} {:>9.1} {:>9.1} {:>12.1} {:>10.2} {:>9.1}",
            n.stage,
            gib(n.weights),
            gib(n.kv_cache),
            gib(n.activations),
            gib(n.training_state),
            gib(n.total())
        );
    }
    println!(
        "prune, merge and import stream tensor by tensor on the CPU (about one tensor in memory)"
    );
    Ok(())
}
