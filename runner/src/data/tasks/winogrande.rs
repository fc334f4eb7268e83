//! Winogrande with lm-eval's partial scoring: one context per option,
//! `sentence[:i] + option` where `i` is the position of the blank `_`, and one shared
//! continuation `" " + sentence[i+1:].strip()`. Few-shot pool: `train_l.jsonl`.

use std::path::Path;

use pruneforge_api::spec::EvalTaskName;

use super::doc::{Choice, McDoc, TARGET_DELIMITER};
use super::fewshot::build_with_random_shots;
use super::{TaskConfig, TaskFiles};
use crate::data::error::{Location, Result};
use crate::data::json::{read_jsonl, Record};
use crate::data::pystr::py_strip;

/// One Winogrande item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinograndeItem {
    pub qid: String,
    pub sentence: String,
    pub options: [String; 2],
    /// 0 for `option1`, 1 for `option2` (the file's `answer` minus one).
    pub answer: usize,
    /// Byte position of the first `_` in `sentence`.
    pub blank: usize,
}

impl WinograndeItem {
    /// `sentence[:i] + option` for each option.
    pub fn contexts(&self) -> [String; 2] {
        let head = self.sentence.get(..self.blank).unwrap_or_default();
        [
            format!("{head}{}", self.options[0]),
            format!("{head}{}", self.options[1]),
        ]
    }

    /// `sentence[i+1:].strip()`.
    pub fn suffix(&self) -> &str {
        py_strip(self.sentence.get(self.blank + 1..).unwrap_or_default())
    }
}

/// Reads Winogrande JSONL (`qID`, `sentence` with one `_`, `option1`, `option2`, `answer`).
pub fn load(path: &Path) -> Result<Vec<WinograndeItem>> {
    read_jsonl(path)?
        .iter()
        .map(|line| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            let sentence = record.str("sentence")?.to_string();
            let blank = sentence
                .find('_')
                .ok_or_else(|| record.error("`sentence` has no blank `_`"))?;
            let answer = match record.str("answer")? {
                "1" => 0,
                "2" => 1,
                other => {
                    return Err(
                        record.error(format!("`answer` must be \"1\" or \"2\", found `{other}`"))
                    )
                }
            };
            Ok(WinograndeItem {
                qid: record.str("qID")?.to_string(),
                options: [
                    record.str("option1")?.to_string(),
                    record.str("option2")?.to_string(),
                ],
                sentence,
                answer,
                blank,
            })
        })
        .collect()
}

/// A solved example for few-shot prompts: the sentence with the right option filled in.
pub fn shot(item: &WinograndeItem) -> String {
    let [first, second] = item.contexts();
    let ctx = if item.answer == 0 { first } else { second };
    format!("{ctx}{TARGET_DELIMITER}{}", item.suffix())
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<McDoc>> {
    let task = EvalTaskName::Winogrande;
    build_with_random_shots(
        task,
        files,
        config,
        |file| load(file.items),
        shot,
        |idx, item, prefix| McDoc {
            task,
            idx,
            id: Some(item.qid.clone()),
            subject: None,
            gold: item.answer,
            choices: item
                .contexts()
                .iter()
                .map(|ctx| Choice::new(format!("{prefix}{ctx}"), item.suffix()))
                .collect(),
            mc2_labels: None,
        },
    )
}
