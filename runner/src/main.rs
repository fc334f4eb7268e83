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
    /// Log format: text in a terminal, JSON lines otherwise.
    #[arg(long, global = true, value_enum, default_value_t = cli::logging::LogFormat::Auto)]
    log_format: cli::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole PruneDistillJob on this machine (artifacts cached by content key).
    Run(cli::run::RunArgs),
    /// Run one stage from a stage request (what a runner pod does).
    Stage(cli::stage::StageArgs),
    /// Write the HTML/Markdown report of a local run directory.
    Report(cli::report::ReportArgs),
    /// Delete artifacts from storage (retention policy Delete).
    Gc(cli::gc::GcArgs),
    /// Convert a GGUF file into an HF model directory.
    Import(cli::import::ImportArgs),
    /// Generate text with a model.
    Generate(cli::generate::GenerateArgs),
    /// Self-data distillation: the original model rewrites an SFT set.
    Distill(cli::distill::DistillArgs),
    /// Score layer importance on calibration text (angular distance, Block Influence).
    Score(cli::score::ScoreArgs),
    /// Remove a block of layers and write the pruned model.
    Prune(cli::prune::PruneArgs),
    /// Perplexity of a model on token rows or text.
    Ppl(cli::ppl::PplArgs),
    /// LoRA fine-tuning (SFT, self-distilled data, logit distillation).
    Finetune(Box<cli::finetune::FinetuneArgs>),
    /// Preference training after a fine-tune: DPO on a pairs file or one SPIN iteration.
    Prefer(Box<cli::prefer::PreferArgs>),
    /// Merge models of the same shape (SLERP or linear, mergekit semantics).
    Merge(cli::merge::MergeArgs),
    /// Throughput benchmarks (forward, generate).
    Bench(cli::bench::BenchArgs),
    /// The memory each stage needs for a model shape (the estimate stages check before they
    /// start).
    Memory(cli::memory::MemoryArgs),
    /// Write an HF model directory of any Llama shape with seeded random weights.
    RandomModel(cli::random_model::RandomModelArgs),
    /// Benchmark a model (lm-eval semantics): eval.json and items.jsonl, recovery vs a base.
    Eval(cli::eval::EvalArgs),
}

/// Errors end the process with status 1 and their cause chain on stderr (no backtrace: they
/// are input or environment problems, not bugs).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let allocator = pruneforge::util::allocator::keep_freed_memory();
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    tracing::debug!(?allocator, "allocator thresholds");
    pruneforge::util::workers::on_pool(|| dispatch(cli.command))
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(a) => cli::run::run(a),
        Command::Stage(a) => cli::stage::run(a),
        Command::Report(a) => cli::report::run(a),
        Command::Import(a) => cli::import::run(a),
        Command::Gc(a) => cli::gc::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Distill(a) => cli::distill::run(a),
        Command::Merge(a) => cli::merge::run(a),
        Command::Finetune(a) => cli::finetune::run(*a),
        Command::Prefer(a) => cli::prefer::run(*a),
        Command::Score(a) => cli::score::run(a),
        Command::Prune(a) => cli::prune::run(a),
        Command::Ppl(a) => cli::ppl::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::RandomModel(a) => cli::random_model::run(a),
        Command::Memory(a) => cli::memory::run(a),
    }
}
