//! GSM8K generation task (lm-eval `gsm8k`): prompt `"Question: " + question + "\nAnswer:"`
//! after k random examples `"Question: ...\nAnswer: <full solution>"` from the train split;
//! generation stops at `"Question:"`, `"</s>"`, `"<|im_end|>"` or a blank line. Answers are
//! extracted with lm-eval's two filters: strict (`#### <number>`) and flexible (the last number
//! in the output); [`crate::data::metrics::gsm8k_exact_match`] compares them with the reference.

use std::sync::LazyLock;

use pruneforge_api::spec::EvalTaskName;
use regex::Regex;

use super::doc::{GenDoc, TARGET_DELIMITER};
use super::fewshot::build_with_random_shots;
use super::{TaskConfig, TaskFiles};
use crate::data::error::Result;
use crate::data::pystr::py_strip;
use crate::data::sft::{load_gsm8k, SftRecord};

/// Stop sequences of the generation.
pub const STOP_SEQUENCES: [&str; 4] = ["Question:", "</s>", "<|im_end|>", "\n\n"];

/// What a filter returns when it finds no answer (lm-eval's fallback).
pub const INVALID_ANSWER: &str = "[invalid]";

/// lm-eval's strict-match pattern.
pub const STRICT_PATTERN: &str = r"#### (\-?[0-9\.\,]+)";
/// lm-eval's flexible-extract pattern (the last match is used).
pub const FLEXIBLE_PATTERN: &str = r"(-?[$0-9.,]{2,})|(-?[0-9]+)";

static STRICT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(STRICT_PATTERN).expect("constant pattern compiles"));
static FLEXIBLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(FLEXIBLE_PATTERN).expect("constant pattern compiles"));

/// lm-eval's `doc_to_text`.
pub fn question_text(question: &str) -> String {
    format!("Question: {question}\nAnswer:")
}

/// A solved example for few-shot prompts (the full reference solution).
pub fn shot(record: &SftRecord) -> String {
    format!(
        "{}{TARGET_DELIMITER}{}",
        question_text(&record.instruction),
        record.output
    )
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<GenDoc>> {
    let task = EvalTaskName::Gsm8k;
    build_with_random_shots(
        task,
        files,
        config,
        |file| load_gsm8k(file.items),
        shot,
        |idx, item, prefix| GenDoc {
            task,
            idx,
            prompt: format!("{prefix}{}", question_text(&item.instruction)),
            stop: STOP_SEQUENCES.iter().map(|s| s.to_string()).collect(),
            reference: item.output.clone(),
            gold: item.gold.clone().unwrap_or_default(),
        },
    )
}

/// Cuts a generation at the first occurrence of any stop sequence (lm-eval splits on each
/// `until` string in turn and keeps the part before it).
pub fn truncate_at_stop<'a, S: AsRef<str>>(text: &'a str, stops: &[S]) -> &'a str {
    let end = stops
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s))
        .min()
        .unwrap_or(text.len());
    &text[..end]
}

/// Strict-match filter: the number after the first `#### `, stripped; `[invalid]` if none.
pub fn extract_strict(generation: &str) -> String {
    STRICT
        .captures(generation)
        .and_then(|c| c.get(1))
        .map_or(INVALID_ANSWER.to_string(), |m| {
            py_strip(m.as_str()).to_string()
        })
}

/// Flexible-extract filter: the last number-like match, stripped; `[invalid]` if none.
pub fn extract_flexible(generation: &str) -> String {
    FLEXIBLE
        .captures_iter(generation)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map_or(INVALID_ANSWER.to_string(), |m| {
            py_strip(m.as_str()).to_string()
        })
}

/// lm-eval's answer normalisation for `exact_match` on GSM8K (`regexes_to_ignore`
/// `","`, `"\$"`, `"(?s).*#### "`, `"\.$"`, then `ignore_case`).
pub fn normalize_answer(text: &str) -> String {
    let mut s: String = text.chars().filter(|&c| c != ',' && c != '$').collect();
    if let Some(pos) = s.rfind("#### ") {
        s.drain(..pos + "#### ".len());
    }
    // Python's `$` also matches before a final "\n".
    if s.ends_with('.') {
        s.pop();
    } else if s.ends_with(".\n") {
        s.truncate(s.len() - 2);
        s.push('\n');
    }
    s.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_like_lm_eval() {
        let out = "She has 3 + 4 = 7 apples, costing $1,200.50.\n#### 1,200\nmore";
        assert_eq!(extract_strict(out), "1,200");
        assert_eq!(extract_flexible("The answer is 42. Then 7"), "7");
        assert_eq!(extract_flexible("costs $1,200.50."), "$1,200.50.");
        assert_eq!(extract_flexible("x = -5"), "-5");
        assert_eq!(extract_strict("no marker 5"), INVALID_ANSWER);
        assert_eq!(extract_flexible("none"), INVALID_ANSWER);
        assert_eq!(extract_flexible("a 7 b"), "7");
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize_answer("$1,200.50."), "1200.50");
        assert_eq!(normalize_answer("step\n#### 1,234"), "1234");
        assert_eq!(normalize_answer("72.\n"), "72\n");
        assert_eq!(normalize_answer("[invalid]"), "[invalid]");
    }

    #[test]
    fn stops() {
        assert_eq!(
            truncate_at_stop("a b\n\nQuestion: c", &STOP_SEQUENCES),
            "a b"
        );
        assert_eq!(truncate_at_stop("a </s> Question:", &STOP_SEQUENCES), "a ");
        assert_eq!(truncate_at_stop("abc", &STOP_SEQUENCES), "abc");
    }
}
