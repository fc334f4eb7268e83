//! What a task builder produces: multiple-choice documents (one log-likelihood request per
//! choice), generation documents, and text rows for perplexity.

use pruneforge_api::spec::EvalTaskName;

/// lm-eval's `target_delimiter`: put between a context and a choice.
pub const TARGET_DELIMITER: &str = " ";

/// One choice of a multiple-choice document: the log-likelihood request `(ctx, cont)` and the
/// lengths the normalised accuracies divide by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Context, few-shot examples included.
    pub ctx: String,
    /// Continuation whose log-likelihood is scored (starts with the target delimiter " ").
    pub cont: String,
    /// Characters of the choice text without the leading delimiter (lm-eval's `acc_norm`
    /// divides by this; for Winogrande it is the shared suffix).
    pub len_chars: usize,
    /// UTF-8 bytes of `cont`, leading space included (the reference's `acc_norm`).
    pub len_bytes: usize,
}

impl Choice {
    /// `cont = " " + text`.
    pub fn new(ctx: String, text: &str) -> Self {
        let cont = format!("{TARGET_DELIMITER}{text}");
        Choice {
            ctx,
            len_chars: text.chars().count(),
            len_bytes: cont.len(),
            cont,
        }
    }
}

/// A multiple-choice document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McDoc {
    pub task: EvalTaskName,
    /// Position in the task's full document list (before offset/limit).
    pub idx: usize,
    /// Item id where the data has one (ARC `id`, HellaSwag `idx`, Winogrande `qID`).
    pub id: Option<String>,
    /// MMLU subject (file name without `_test.csv`).
    pub subject: Option<String>,
    /// Index of the correct choice (TruthfulQA: 0, lm-eval's `doc_to_target`).
    pub gold: usize,
    pub choices: Vec<Choice>,
    /// TruthfulQA mc2: whether each choice is a true answer (in the file's key order).
    pub mc2_labels: Option<Vec<bool>>,
}

/// A generation document (GSM8K).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenDoc {
    pub task: EvalTaskName,
    pub idx: usize,
    /// The prompt, few-shot examples included.
    pub prompt: String,
    /// Generation stops at the first of these strings (and is cut there).
    pub stop: Vec<String>,
    /// lm-eval's `doc_to_target`: the full reference answer.
    pub reference: String,
    /// The reference's final number (after `#### `, commas stripped).
    pub gold: String,
}

/// One text row of a perplexity task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRow {
    pub task: EvalTaskName,
    pub idx: usize,
    pub text: String,
}

/// The documents of one task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskDocs {
    MultipleChoice(Vec<McDoc>),
    Generation(Vec<GenDoc>),
    Perplexity(Vec<TextRow>),
    /// Held-out instruction answers (`answer_nll`).
    Answers(Vec<super::answers::AnswerDoc>),
}

impl TaskDocs {
    pub fn len(&self) -> usize {
        match self {
            TaskDocs::MultipleChoice(d) => d.len(),
            TaskDocs::Generation(d) => d.len(),
            TaskDocs::Perplexity(d) => d.len(),
            TaskDocs::Answers(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// lm-eval's `_encode_pair` step before tokenising: trailing whitespace of the context moves to
/// the start of the continuation (Python `str.rstrip()` whitespace).
pub fn split_trailing_whitespace(ctx: &str, cont: &str) -> (String, String) {
    let kept = crate::data::pystr::py_rstrip(ctx);
    let moved = &ctx[kept.len()..];
    (kept.to_string(), format!("{moved}{cont}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_whitespace_moves_to_the_continuation() {
        assert_eq!(
            split_trailing_whitespace("Answer: \n", "B"),
            ("Answer:".to_string(), " \nB".to_string())
        );
        assert_eq!(
            split_trailing_whitespace("Answer:", " B"),
            ("Answer:".to_string(), " B".to_string())
        );
    }

    #[test]
    fn choice_lengths() {
        let c = Choice::new("q".into(), "café");
        assert_eq!((c.cont.as_str(), c.len_chars, c.len_bytes), (" café", 4, 6));
    }
}
