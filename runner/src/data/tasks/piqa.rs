//! PIQA (validation): context `"Question: " + goal + "\nAnswer:"`, choices `sol1`, `sol2`,
//! gold from the separate label file (one `0`/`1` per line). PIQA train is not available, so
//! few-shot examples come from a labelled validation slice (by default the public one),
//! without the scored item.

use std::path::Path;

use pruneforge_api::spec::EvalTaskName;

use super::doc::{Choice, McDoc, TARGET_DELIMITER};
use super::fewshot::build_with_random_shots;
use super::{ItemsFile, TaskConfig, TaskFiles};
use crate::data::error::{DataError, Location, Result};
use crate::data::json::{read_jsonl, read_text, Record};

/// One PIQA item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiqaItem {
    pub goal: String,
    pub sol1: String,
    pub sol2: String,
    /// 0: `sol1` is correct, 1: `sol2`.
    pub label: usize,
}

impl PiqaItem {
    pub fn solutions(&self) -> [&str; 2] {
        [&self.sol1, &self.sol2]
    }
}

/// Reads a label file: one `0` or `1` per non-blank line.
pub fn load_labels(path: &Path) -> Result<Vec<usize>> {
    read_text(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match l.trim() {
            "0" => Ok(0),
            "1" => Ok(1),
            other => Err(DataError::invalid(
                path,
                Location::Line(i + 1),
                format!("expected a label 0 or 1, found `{other}`"),
            )),
        })
        .collect()
}

/// Reads the PIQA JSONL (`goal`, `sol1`, `sol2`) and its label file.
pub fn load(path: &Path, labels_path: &Path) -> Result<Vec<PiqaItem>> {
    let lines = read_jsonl(path)?;
    let labels = load_labels(labels_path)?;
    if labels.len() != lines.len() {
        return Err(DataError::invalid(
            labels_path,
            Location::File,
            format!(
                "{} labels for the {} items of {}; the files must be aligned line by line",
                labels.len(),
                lines.len(),
                path.display()
            ),
        ));
    }
    lines
        .iter()
        .zip(labels)
        .map(|(line, label)| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            Ok(PiqaItem {
                goal: record.str("goal")?.to_string(),
                sol1: record.str("sol1")?.to_string(),
                sol2: record.str("sol2")?.to_string(),
                label,
            })
        })
        .collect()
}

/// lm-eval's `doc_to_text`.
pub fn context(item: &PiqaItem) -> String {
    format!("Question: {}\nAnswer:", item.goal)
}

/// A solved example for few-shot prompts.
pub fn shot(item: &PiqaItem) -> String {
    let answer = item.solutions().get(item.label).copied().unwrap_or("");
    format!("{}{TARGET_DELIMITER}{answer}", context(item))
}

/// Reads the items of `file` with its label file, which PIQA needs.
fn load_labelled(file: ItemsFile<'_>) -> Result<Vec<PiqaItem>> {
    let labels = file.labels.ok_or_else(|| {
        DataError::task(
            EvalTaskName::Piqa.as_str(),
            format!(
                "PIQA needs the label file of {} (TaskFiles)",
                file.items.display()
            ),
        )
    })?;
    load(file.items, labels)
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<McDoc>> {
    let task = EvalTaskName::Piqa;
    build_with_random_shots(
        task,
        files,
        config,
        load_labelled,
        shot,
        |idx, item, prefix| {
            let ctx = format!("{prefix}{}", context(item));
            McDoc {
                task,
                idx,
                id: None,
                subject: None,
                gold: item.label,
                choices: item
                    .solutions()
                    .iter()
                    .map(|text| Choice::new(ctx.clone(), text))
                    .collect(),
                mc2_labels: None,
            }
        },
    )
}
