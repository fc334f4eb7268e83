//! HellaSwag (validation, klosax preprocessing): context = `query` as stored, choices the 4
//! `endings`, gold `label`. There is no train split here, so few-shot examples come from the
//! public validation slice, without the scored item.

use std::path::Path;

use pruneforge_api::spec::EvalTaskName;
use serde_json::Value;

use super::doc::{Choice, McDoc, TARGET_DELIMITER};
use super::fewshot::build_with_random_shots;
use super::{TaskConfig, TaskFiles};
use crate::data::error::{Location, Result};
use crate::data::json::{read_jsonl, Record};

/// One HellaSwag item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HellaswagItem {
    /// Position in the validation file.
    pub idx: usize,
    pub query: String,
    pub endings: Vec<String>,
    pub label: usize,
}

/// Reads the converted HellaSwag JSONL (`idx`, `query`, `endings`, `label`).
pub fn load(path: &Path) -> Result<Vec<HellaswagItem>> {
    read_jsonl(path)?
        .iter()
        .map(|line| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            let endings: Vec<String> = record
                .str_array("endings")?
                .into_iter()
                .map(str::to_string)
                .collect();
            let label = match record.value("label")? {
                Value::String(s) => s.trim().parse::<usize>().ok(),
                other => other.as_u64().and_then(|v| usize::try_from(v).ok()),
            }
            .filter(|&l| l < endings.len())
            .ok_or_else(|| {
                record.error(format!(
                    "`label` must be an index below {} (the number of endings)",
                    endings.len()
                ))
            })?;
            Ok(HellaswagItem {
                idx: record.usize("idx")?,
                query: record.str("query")?.to_string(),
                endings,
                label,
            })
        })
        .collect()
}

/// A solved example for few-shot prompts.
pub fn shot(item: &HellaswagItem) -> String {
    let answer = item.endings.get(item.label).map_or("", String::as_str);
    format!("{}{TARGET_DELIMITER}{answer}", item.query)
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<McDoc>> {
    let task = EvalTaskName::Hellaswag;
    build_with_random_shots(
        task,
        files,
        config,
        |file| load(file.items),
        shot,
        |idx, item, prefix| {
            let ctx = format!("{prefix}{}", item.query);
            McDoc {
                task,
                idx,
                id: Some(item.idx.to_string()),
                subject: None,
                gold: item.label,
                choices: item
                    .endings
                    .iter()
                    .map(|text| Choice::new(ctx.clone(), text))
                    .collect(),
                mc2_labels: None,
            }
        },
    )
}
