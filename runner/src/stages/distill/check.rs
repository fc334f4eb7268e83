//! The answer check: a rewrite is kept only if it is non-empty, complete, free of the phrases
//! that betray the rewrite prompt, and (math) ends with the reference's final number.

use pruneforge_api::spec::AnswerCheck;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "decision", content = "reason")]
pub enum Decision {
    Kept,
    Fallback(FallbackReason),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackReason {
    /// The model produced nothing.
    Empty,
    /// Generation hit max_new_tokens before the answer ended.
    Truncated,
    /// A banned phrase (lower-cased) occurs.
    BannedPhrase(String),
    /// The rewrite starts with a banned prefix.
    BannedPrefix(String),
    /// The last number differs from the reference's (rewrite's number, or none).
    WrongAnswer(Option<String>),
    /// The rewrite prompt does not fit the model's context.
    PromptTooLong,
}

impl FallbackReason {
    /// A stable short label for statistics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Truncated => "truncated",
            Self::BannedPhrase(_) => "banned-phrase",
            Self::BannedPrefix(_) => "banned-prefix",
            Self::WrongAnswer(_) => "wrong-answer",
            Self::PromptTooLong => "prompt-too-long",
        }
    }
}

/// The last number in `text` (commas, `$` and a trailing `.` removed), as written.
pub fn last_number(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut end = None;
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        if bytes[i].is_ascii_digit() {
            end = Some(i + 1);
            break;
        }
    }
    let end = end?;
    let mut start = end;
    while start > 0 {
        let c = bytes[start - 1];
        let prev_digit = start >= 2 && bytes[start - 2].is_ascii_digit();
        if c.is_ascii_digit() || ((c == b',' || c == b'.') && prev_digit) {
            start -= 1;
        } else {
            break;
        }
    }
    if start > 0 && bytes[start - 1] == b'-' {
        start -= 1;
    }
    Some(text[start..end].replace(',', ""))
}

/// Numeric equality of two answers (`"18"` == `"18.0"`; commas and `$` ignored).
pub fn same_number(a: &str, b: &str) -> bool {
    let clean = |s: &str| {
        s.trim()
            .trim_start_matches('$')
            .replace([',', '$'], "")
            .trim_end_matches('.')
            .to_string()
    };
    match (clean(a).parse::<f64>(), clean(b).parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-6 * y.abs().max(1.0),
        _ => clean(a) == clean(b),
    }
}

pub fn check(
    rewrite: &str,
    truncated: bool,
    gold: Option<&str>,
    math: bool,
    rules: &AnswerCheck,
) -> Decision {
    let text = rewrite.trim();
    if text.is_empty() {
        return Decision::Fallback(FallbackReason::Empty);
    }
    if truncated {
        return Decision::Fallback(FallbackReason::Truncated);
    }
    let lower = text.to_lowercase();
    if let Some(p) = rules
        .banned_phrases
        .iter()
        .find(|p| lower.contains(&p.to_lowercase()))
    {
        return Decision::Fallback(FallbackReason::BannedPhrase(p.clone()));
    }
    if let Some(p) = rules
        .banned_prefixes
        .iter()
        .find(|p| lower.starts_with(&p.to_lowercase()))
    {
        return Decision::Fallback(FallbackReason::BannedPrefix(p.clone()));
    }
    if math && rules.math_last_number {
        if let Some(gold) = gold {
            let got = last_number(text);
            if !got.as_deref().is_some_and(|g| same_number(g, gold)) {
                return Decision::Fallback(FallbackReason::WrongAnswer(got));
            }
        }
    }
    Decision::Kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_number_handles_commas_signs_and_periods() {
        assert_eq!(
            last_number("She pays $1,250.50 in total."),
            Some("1250.50".into())
        );
        assert_eq!(last_number("The answer is -7."), Some("-7".into()));
        assert_eq!(last_number("#### 72"), Some("72".into()));
        assert_eq!(last_number("no digits"), None);
        assert!(same_number("18.0", "18"));
        assert!(!same_number("17", "18"));
    }

    #[test]
    fn banned_phrases_prefixes_and_math() {
        let rules = AnswerCheck::default();
        assert_eq!(
            check(
                "As the Reference Answer says, 4.",
                false,
                None,
                false,
                &rules
            ),
            Decision::Fallback(FallbackReason::BannedPhrase("reference answer".into()))
        );
        assert_eq!(
            check("Your turn: solve it", false, None, false, &rules),
            Decision::Fallback(FallbackReason::BannedPrefix("Your turn".into()))
        );
        assert_eq!(
            check("So she sold 72 clips.", false, Some("72"), true, &rules),
            Decision::Kept
        );
        assert_eq!(
            check("So she sold 70 clips.", false, Some("72"), true, &rules),
            Decision::Fallback(FallbackReason::WrongAnswer(Some("70".into())))
        );
        assert_eq!(
            check("  ", false, None, false, &rules),
            Decision::Fallback(FallbackReason::Empty)
        );
        assert_eq!(
            check("ok", true, None, false, &rules),
            Decision::Fallback(FallbackReason::Truncated)
        );
    }
}
