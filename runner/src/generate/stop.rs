//! Stop conditions: end-of-sequence tokens and stop strings in the decoded text.

/// Why a completion ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum FinishReason {
    /// An end-of-sequence token was produced (it is kept in `tokens`, not in `text`).
    Eos,
    /// A stop string appeared; `text` is cut before it.
    Stop(String),
    /// `max_new_tokens` (or the model context) was reached.
    Length,
}

/// Byte offset of the earliest stop string in `text` and the string, if any.
pub fn find_stop<'a>(text: &str, stops: &'a [String]) -> Option<(usize, &'a str)> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()).map(|i| (i, s.as_str())))
        .min_by_key(|(i, _)| *i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_stop_wins() {
        let stops = vec!["Question:".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop("42\n\nQuestion: x", &stops), Some((2, "\n\n")));
        assert_eq!(find_stop("no stop", &stops), None);
    }
}
