//! Subcommands of the `pruneforge` binary, one file each, plus shared helpers.

pub mod ppl;
pub mod prune;
pub mod score;

use std::io::IsTerminal;
use std::path::PathBuf;

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The model to use: the given path, or the embedded default model (fetched once).
pub fn model_path(model: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match model {
        Some(p) => Ok(p),
        None => Ok(pruneforge::embedded::ensure_hf_dir()?),
    }
}
