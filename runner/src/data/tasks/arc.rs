//! ARC-Easy / ARC-Challenge (AI2 ARC JSONL): context `"Question: " + stem + "\nAnswer:"`,
//! choices the `question.choices[].text`, gold the index of `answerKey` among the labels (3 to
//! 5 choices; labels may be `A..E` or `1..5`). Few-shot pool: `ARC-*-Train.jsonl`.

use std::path::Path;

use pruneforge_api::spec::EvalTaskName;

use super::doc::{Choice, McDoc, TARGET_DELIMITER};
use super::fewshot::build_with_random_shots;
use super::{TaskConfig, TaskFiles};
use crate::data::error::{Location, Result};
use crate::data::json::{read_jsonl, Record};

/// One ARC question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcItem {
    pub id: String,
    pub stem: String,
    pub labels: Vec<String>,
    pub choices: Vec<String>,
    pub gold: usize,
}

/// Reads an ARC JSONL file.
pub fn load(path: &Path) -> Result<Vec<ArcItem>> {
    read_jsonl(path)?
        .iter()
        .map(|line| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            let question = record.record("question")?;
            let mut labels = Vec::new();
            let mut choices = Vec::new();
            for (i, choice) in question.array("choices")?.iter().enumerate() {
                let choice = Record::new(path, record.at(), choice).map_err(|_| {
                    record.error(format!("`question.choices[{i}]` must be an object"))
                })?;
                labels.push(choice.str("label")?.to_string());
                choices.push(choice.str("text")?.to_string());
            }
            if choices.is_empty() {
                return Err(record.error("`question.choices` is empty"));
            }
            let answer = record.str("answerKey")?;
            let gold = labels.iter().position(|l| l == answer).ok_or_else(|| {
                record.error(format!(
                    "answerKey `{answer}` is not one of the choice labels {labels:?}"
                ))
            })?;
            Ok(ArcItem {
                id: record.str("id")?.to_string(),
                stem: question.str("stem")?.to_string(),
                labels,
                choices,
                gold,
            })
        })
        .collect()
}

/// lm-eval's `doc_to_text`.
pub fn context(item: &ArcItem) -> String {
    format!("Question: {}\nAnswer:", item.stem)
}

/// A solved example for few-shot prompts.
pub fn shot(item: &ArcItem) -> String {
    let answer = item.choices.get(item.gold).map_or("", String::as_str);
    format!("{}{TARGET_DELIMITER}{answer}", context(item))
}

/// Builds `arc_easy` or `arc_challenge` (whichever `task` says) from `files.docs`.
pub fn build(task: EvalTaskName, files: &TaskFiles, config: &TaskConfig) -> Result<Vec<McDoc>> {
    build_with_random_shots(
        task,
        files,
        config,
        |file| load(file.items),
        shot,
        |idx, item, prefix| {
            let ctx = format!("{prefix}{}", context(item));
            McDoc {
                task,
                idx,
                id: Some(item.id.clone()),
                subject: None,
                gold: item.gold,
                choices: item
                    .choices
                    .iter()
                    .map(|text| Choice::new(ctx.clone(), text))
                    .collect(),
                mc2_labels: None,
            }
        },
    )
}
