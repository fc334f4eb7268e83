//! Perplexity task: rows of text, each scored on its own by the scorer (which tokenizes and,
//! if it wants, cuts windows). No few-shot.

use std::path::Path;

use pruneforge_api::spec::EvalTaskName;

use super::doc::TextRow;
use super::fewshot::require_zero_shot;
use super::TaskConfig;
use crate::data::error::Result;
use crate::data::text_source::TextSource;

/// The JSONL field read when a `.jsonl` path is given without a field name.
pub const DEFAULT_TEXT_FIELD: &str = "text";

/// The text source a path stands for: `.json` is an Alpaca array (the calibration stream),
/// `.jsonl` has a `text` field, anything else is a plain text file (one row).
pub fn source_for_path(path: &Path) -> TextSource {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => TextSource::AlpacaStream(path.to_path_buf()),
        Some("jsonl") => TextSource::JsonlField {
            path: path.to_path_buf(),
            field: DEFAULT_TEXT_FIELD.to_string(),
        },
        _ => TextSource::PlainFile(path.to_path_buf()),
    }
}

pub fn build(source: &TextSource, config: &TaskConfig) -> Result<Vec<TextRow>> {
    let task = EvalTaskName::Perplexity;
    require_zero_shot(
        task.as_str(),
        config.num_fewshot,
        "perplexity has no prompts",
    )?;
    let rows = source.load()?.into_iter().enumerate().collect::<Vec<_>>();
    Ok(config
        .selection
        .apply(rows)
        .into_iter()
        .map(|(idx, text)| TextRow { task, idx, text })
        .collect())
}
