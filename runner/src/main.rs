//! `pruneforge`: the runner command line.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "pruneforge",
    version,
    about = "Depth-prune a Llama-family LLM and win its quality back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// LoRA fine-tuning (SFT, self-distillation, logit distillation).
    Finetune(Box<cli::finetune::FinetuneArgs>),
    /// Throughput benchmarks (train).
    Bench(cli::bench_train::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Finetune(a) => cli::finetune::run(*a),
        Command::Bench(a) => cli::bench_train::run(a),
    }
}
