//! `pruneforge random-model`: an HF model directory of any Llama-family shape with seeded
//! random weights and a given tokenizer, so that shapes whose weights cannot be downloaded
//! here (Llama-3.1-8B, 70B) can run every stage for speed and memory measurements.

use anyhow::Context;
use clap::Args;
use pruneforge::loader::save_hf_dir;
use pruneforge::model::random::random_model;
use pruneforge::model::safetensors_io::SaveDtype;
use pruneforge::model::ModelConfig;
use pruneforge::tokenizer::Tokenizer;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RandomModelArgs {
    /// The shape: an HF config.json (Llama family).
    #[arg(long)]
    pub config: PathBuf,
    /// A directory holding tokenizer.json (and tokenizer_config.json) to ship with the model;
    /// its vocabulary must not exceed the config's vocab_size.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Where to write the model directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stored dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
}

pub fn run(a: RandomModelArgs) -> anyhow::Result<()> {
    let save = match a.dtype.as_str() {
        "bf16" => SaveDtype::BF16,
        "f16" => SaveDtype::F16,
        "f32" => SaveDtype::F32,
        other => anyhow::bail!("--dtype {other}: expected bf16, f16 or f32"),
    };
    if a.out.exists() {
        anyhow::bail!("{} exists: pass a new directory", a.out.display());
    }
    let config = ModelConfig::from_json_file(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let tokenizer = Tokenizer::load_dir(&a.tokenizer, &config.eos_token_ids)
        .with_context(|| format!("reading the tokenizer in {}", a.tokenizer.display()))?;
    if tokenizer.vocab_size() > config.vocab_size {
        anyhow::bail!(
            "the tokenizer has {} tokens but the config's vocab_size is {}",
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    let params = config.parameter_count();
    let model = random_model(
        config,
        a.seed,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    save_hf_dir(&model, &tokenizer, &a.out, save)?;
    println!(
        "wrote {} ({params} parameters, seed {}, {})",
        a.out.display(),
        a.seed,
        a.dtype
    );
    Ok(())
}
