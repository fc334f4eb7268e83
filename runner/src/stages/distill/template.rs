//! Rewrite prompts: the SDFT paper's templates (Yang et al. 2024, arXiv 2402.13669; the
//! `alpaca_distill_using` and `gsm8k_distill` templates of sail-sg/sdft) as defaults per data
//! set kind, with per-field overrides from the spec.

use pruneforge_api::spec::{DataKind, PromptTemplate};

pub const GENERAL_SYSTEM: &str =
    "Below are an instruction that describes a task along with a reference answer. \
Using the reference answer as a guide, write your own response.";
pub const GENERAL_USER: &str =
    "### Instruction:\n{instruction}\n\n### Reference Answer:\n{response}\n\n### Response:\n";
pub const MATH_SYSTEM: &str =
    "You are an expert in math. Below are a math question and its reference answer. \
Refer to the reference answer and write a response that appropriately answers the question.";
pub const MATH_USER: &str = "{instruction}\n\n{response}";
pub const MATH_RESPONSE_PREFIX: &str = "Great! Let's think step by step.";

/// A template with every field decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedTemplate {
    pub system: String,
    pub user: String,
    pub response_prefix: String,
}

impl ResolvedTemplate {
    pub fn resolve(kind: DataKind, overrides: &PromptTemplate) -> Self {
        let (system, user, prefix) = match kind {
            DataKind::General => (GENERAL_SYSTEM, GENERAL_USER, ""),
            DataKind::Math => (MATH_SYSTEM, MATH_USER, MATH_RESPONSE_PREFIX),
        };
        Self {
            system: overrides.system.clone().unwrap_or_else(|| system.into()),
            user: overrides.user.clone().unwrap_or_else(|| user.into()),
            response_prefix: overrides
                .response_prefix
                .clone()
                .unwrap_or_else(|| prefix.into()),
        }
    }

    /// The user message with the placeholders filled in one pass (text that itself contains
    /// `{response}` is never substituted again).
    pub fn user_message(&self, instruction: &str, response: &str) -> String {
        let mut out = String::with_capacity(self.user.len() + instruction.len() + response.len());
        let mut rest = self.user.as_str();
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(t) = tail.strip_prefix("{instruction}") {
                out.push_str(instruction);
                rest = t;
            } else if let Some(t) = tail.strip_prefix("{response}") {
                out.push_str(response);
                rest = t;
            } else {
                out.push('{');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_kind_and_overrides_win() {
        let t = ResolvedTemplate::resolve(DataKind::Math, &PromptTemplate::default());
        assert_eq!(t.response_prefix, MATH_RESPONSE_PREFIX);
        let o = PromptTemplate {
            system: Some(String::new()),
            ..Default::default()
        };
        let g = ResolvedTemplate::resolve(DataKind::General, &o);
        assert_eq!(g.system, "");
        assert_eq!(g.user, GENERAL_USER);
    }

    #[test]
    fn placeholders_are_filled_once() {
        let t = ResolvedTemplate::resolve(DataKind::General, &PromptTemplate::default());
        let m = t.user_message("say {response}", "ok {instruction}");
        assert_eq!(
            m,
            "### Instruction:\nsay {response}\n\n### Reference Answer:\nok {instruction}\n\n### Response:\n"
        );
    }
}
