mod cli;

use clap::Parser;

/// pruneforge runner: depth pruning, distillation, recovery, merge, eval, speculative decoding.
#[derive(Debug, Parser)]
#[command(name = "pruneforge", version)]
enum Command {
    /// Benchmark a model (lm-eval semantics): eval.json and items.jsonl.
    Eval(cli::eval::EvalArgs),
}

fn main() -> anyhow::Result<()> {
    cli::init_tracing();
    match Command::parse() {
        Command::Eval(args) => cli::eval::run(args),
    }
}
