//! The `pruneforge` command line: one file per subcommand.

pub mod bench;
pub mod bench_matmul;
pub mod bench_train;
pub mod distill;
pub mod eval;
pub mod finetune;
pub mod gc;
pub mod generate;
pub mod import;
pub mod logging;
pub mod memory;
pub mod merge;
pub mod ppl;
pub mod prefer;
pub mod prune;
pub mod random_model;
pub mod report;
pub mod run;
pub mod score;
pub mod stage;

/// The model to use: the given path, or the embedded default model (fetched once).
pub fn model_path(model: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match model {
        Some(p) => Ok(p),
        None => Ok(pruneforge::loader::embedded::ensure_hf_dir()?),
    }
}
