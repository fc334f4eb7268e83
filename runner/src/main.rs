//! The `pruneforge` command line: one subcommand per file under `cli/`.

mod cli;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pruneforge",
    version,
    about = "Depth pruning and recovery of Llama-family LLMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score layer importance on calibration text (angular distance, Block Influence).
    Score(cli::score::ScoreArgs),
    /// Remove a block of layers and write the pruned model.
    Prune(cli::prune::PruneArgs),
    /// Perplexity of a model on token rows or text.
    Ppl(cli::ppl::PplArgs),
}

fn main() -> anyhow::Result<()> {
    cli::init_logging();
    match Cli::parse().command {
        Command::Score(args) => cli::score::run(args),
        Command::Prune(args) => cli::prune::run(args),
        Command::Ppl(args) => cli::ppl::run(args),
    }
}
