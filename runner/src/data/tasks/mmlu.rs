//! MMLU (hendrycks CSVs, one file per subject): for each subject file in file-name order, each
//! row `question, A, B, C, D, answer` becomes the context
//! `"The following are multiple choice questions (with answers) about <subject with spaces>.\n\n"
//! + question.strip() + "\nA. " + A + "\nB. " + B + "\nC. " + C + "\nD. " + D + "\nAnswer:"`
//! with continuations `" A"` .. `" D"`. Few-shot: the first k rows of the subject's dev file
//! (lm-eval's `first_n` sampler), between the description and the question.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pruneforge_api::spec::EvalTaskName;

use super::doc::{Choice, McDoc, TARGET_DELIMITER};
use super::fewshot::fewshot_prefix;
use super::{TaskConfig, TaskFiles};
use crate::data::csv::read_csv;
use crate::data::error::{DataError, Location, Result};
use crate::data::pystr::py_strip;

/// The answer letters.
pub const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// One MMLU question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmluItem {
    /// Subject (file name without `_<split>.csv`), e.g. `college_medicine`.
    pub subject: String,
    pub question: String,
    pub options: [String; 4],
    /// 0..3 for A..D.
    pub answer: usize,
}

/// The `(subject, file)` pairs of a directory of `<subject>_<split>.csv` files, sorted by file
/// name.
pub fn subject_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::read(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::read(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".csv") {
            let subject = stem.rsplit_once('_').map_or(stem, |(s, _)| s).to_string();
            files.push((name.clone(), subject, entry.path()));
        }
    }
    if files.is_empty() {
        return Err(DataError::invalid(
            dir,
            Location::File,
            "no <subject>_<split>.csv files in this directory",
        ));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files.into_iter().map(|(_, s, p)| (s, p)).collect())
}

/// Reads one subject file (6 columns; blank lines skipped).
pub fn load_file(path: &Path, subject: &str) -> Result<Vec<MmluItem>> {
    let mut items = Vec::new();
    for row in read_csv(path)? {
        if row.fields.is_empty() {
            continue;
        }
        let at = Location::Line(row.line);
        let fields: [String; 6] = row.fields.try_into().map_err(|f: Vec<String>| {
            DataError::invalid(
                path,
                at,
                format!(
                    "expected 6 columns (question, A, B, C, D, answer), found {}",
                    f.len()
                ),
            )
        })?;
        let [question, a, b, c, d, answer] = fields;
        let answer = LETTERS
            .iter()
            .position(|l| *l == py_strip(&answer))
            .ok_or_else(|| {
                DataError::invalid(
                    path,
                    at,
                    format!("answer must be one of A, B, C, D, found `{answer}`"),
                )
            })?;
        items.push(MmluItem {
            subject: subject.to_string(),
            question,
            options: [a, b, c, d],
            answer,
        });
    }
    Ok(items)
}

/// All subjects of a directory, subjects in file-name order, rows in file order.
pub fn load_dir(dir: &Path) -> Result<Vec<MmluItem>> {
    let mut items = Vec::new();
    for (subject, path) in subject_files(dir)? {
        items.extend(load_file(&path, &subject)?);
    }
    Ok(items)
}

/// lm-eval's task description, placed before the few-shot examples.
pub fn description(subject: &str) -> String {
    format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    )
}

/// lm-eval's `doc_to_text`.
pub fn question_text(item: &MmluItem) -> String {
    let [a, b, c, d] = &item.options;
    format!(
        "{}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:",
        py_strip(&item.question)
    )
}

/// A solved example for few-shot prompts.
pub fn shot(item: &MmluItem) -> String {
    let letter = LETTERS.get(item.answer).copied().unwrap_or("");
    format!("{}{TARGET_DELIMITER}{letter}", question_text(item))
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<McDoc>> {
    let task = EvalTaskName::Mmlu;
    let k = config.num_fewshot;
    let items = load_dir(&files.docs)?;
    let dev: HashMap<String, PathBuf> = if k > 0 {
        subject_files(files.pool_file(task)?.items)?
            .into_iter()
            .collect()
    } else {
        HashMap::new()
    };
    let mut prefixes: HashMap<String, String> = HashMap::new();
    let range = config.selection.range(items.len());
    let mut docs = Vec::with_capacity(range.len());
    for (idx, item) in items.iter().enumerate().take(range.end).skip(range.start) {
        if !prefixes.contains_key(&item.subject) {
            let examples = if k > 0 {
                first_examples(&dev, &item.subject, k)?
            } else {
                Vec::new()
            };
            let prefix = description(&item.subject) + &fewshot_prefix(&examples);
            prefixes.insert(item.subject.clone(), prefix);
        }
        let prefix = prefixes.get(&item.subject).map_or("", String::as_str);
        let ctx = format!("{prefix}{}", question_text(item));
        docs.push(McDoc {
            task,
            idx,
            id: None,
            subject: Some(item.subject.clone()),
            gold: item.answer,
            choices: LETTERS
                .iter()
                .map(|letter| Choice::new(ctx.clone(), letter))
                .collect(),
            mc2_labels: None,
        });
    }
    Ok(docs)
}

fn first_examples(dev: &HashMap<String, PathBuf>, subject: &str, k: usize) -> Result<Vec<String>> {
    let task = EvalTaskName::Mmlu.as_str();
    let path = dev.get(subject).ok_or_else(|| {
        DataError::task(
            task,
            format!("the few-shot directory has no file for subject `{subject}`"),
        )
    })?;
    let rows = load_file(path, subject)?;
    if rows.len() < k {
        return Err(DataError::task(
            task,
            format!(
                "{k}-shot needs {k} rows in {}, which has {}",
                path.display(),
                rows.len()
            ),
        ));
    }
    Ok(rows.iter().take(k).map(shot).collect())
}
