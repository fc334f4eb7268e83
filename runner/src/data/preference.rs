//! Preference pairs: a prompt (one or more chat turns) with a chosen and a rejected answer.
//!
//! JSONL, one pair per line, in either of two layouts:
//! - TRL's explicit one: `{"prompt": "...", "chosen": "...", "rejected": "..."}`, the answers
//!   plain text and the prompt one user message;
//! - Anthropic HH-RLHF's: `{"chosen": "\n\nHuman: …\n\nAssistant: …", "rejected": "…"}`, each a
//!   whole dialogue; the two must agree up to their last `\n\nAssistant:` turn, which holds the
//!   answer. The dialogue before it becomes user and assistant chat messages.

use super::error::{DataError, Location, Result};
use super::json::{read_jsonl, Record};
use crate::tokenizer::ChatMessage;
use std::path::Path;

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

/// One preference pair.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceRecord {
    /// The conversation before the answer; it ends with a user message.
    pub prompt: Vec<ChatMessage>,
    pub chosen: String,
    pub rejected: String,
}

/// The dialogue and the last assistant answer of an HH-RLHF text.
fn split_last_answer(text: &str) -> Option<(&str, &str)> {
    let at = text.rfind(ASSISTANT)?;
    Some((&text[..at], text[at + ASSISTANT.len()..].trim()))
}

/// HH-RLHF turns (`\n\nHuman:` / `\n\nAssistant:`) as chat messages.
fn dialogue(text: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    let mut turns: Vec<(usize, &str, usize)> = Vec::new();
    for (marker, role) in [(HUMAN, "user"), (ASSISTANT, "assistant")] {
        turns.extend(
            text.match_indices(marker)
                .map(|(at, _)| (at, role, marker.len())),
        );
    }
    turns.sort_by_key(|t| t.0);
    if turns.first().is_none_or(|t| t.0 != 0 || t.1 != "user") {
        return Err("the dialogue must start with `\\n\\nHuman:`".into());
    }
    let mut out = Vec::with_capacity(turns.len());
    for (i, &(at, role, len)) in turns.iter().enumerate() {
        let end = turns.get(i + 1).map_or(text.len(), |t| t.0);
        out.push(ChatMessage::new(role, text[at + len..end].trim()));
    }
    if out.last().is_none_or(|m| m.role != "user") {
        return Err("the dialogue before the answer must end with a Human turn".into());
    }
    Ok(out)
}

fn record(r: &Record<'_>) -> Result<PreferenceRecord> {
    let chosen = r.str("chosen")?;
    let rejected = r.str("rejected")?;
    let (prompt, chosen, rejected) = match r.opt_str("prompt")? {
        Some(p) => (
            vec![ChatMessage::user(p.trim())],
            chosen.trim(),
            rejected.trim(),
        ),
        None => {
            let (Some((pc, ac)), Some((pr, ar))) =
                (split_last_answer(chosen), split_last_answer(rejected))
            else {
                return Err(r.error(
                    "without a `prompt` field, `chosen` and `rejected` must be HH-RLHF \
                     dialogues ending in a `\\n\\nAssistant:` turn",
                ));
            };
            if pc != pr {
                return Err(r.error(
                    "`chosen` and `rejected` differ before their last `\\n\\nAssistant:` turn; \
                     a pair must share its dialogue",
                ));
            }
            (dialogue(pc).map_err(|e| r.error(e))?, ac, ar)
        }
    };
    if chosen.is_empty() || rejected.is_empty() {
        return Err(r.error("`chosen` and `rejected` answers must not be empty"));
    }
    if chosen == rejected {
        return Err(r.error(
            "`chosen` and `rejected` are the same answer; such a pair carries no preference",
        ));
    }
    Ok(PreferenceRecord {
        prompt,
        chosen: chosen.to_string(),
        rejected: rejected.to_string(),
    })
}

/// Reads every pair of a JSONL file.
pub fn load_preferences(path: &Path) -> Result<Vec<PreferenceRecord>> {
    let lines = read_jsonl(path)?;
    if lines.is_empty() {
        return Err(DataError::invalid(
            path,
            Location::File,
            "no preference pairs: the file has no JSON lines",
        ));
    }
    lines
        .iter()
        .map(|l| record(&Record::new(path, Location::Line(l.line), &l.value)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(lines: &[serde_json::Value]) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pairs.jsonl");
        let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
        std::fs::write(&p, text.join("\n")).unwrap();
        (d, p)
    }

    #[test]
    fn reads_explicit_and_hh_rlhf_pairs() {
        let (_d, p) = write(&[
            serde_json::json!({"prompt": "2+2?", "chosen": "4", "rejected": "5"}),
            serde_json::json!({
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: Blue.",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: No."
            }),
        ]);
        let r = load_preferences(&p).unwrap();
        assert_eq!(r[0].prompt, vec![ChatMessage::user("2+2?")]);
        assert_eq!((r[0].chosen.as_str(), r[0].rejected.as_str()), ("4", "5"));
        let roles: Vec<&str> = r[1].prompt.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(r[1].prompt[2].content, "Name a colour.");
        assert_eq!(
            (r[1].chosen.as_str(), r[1].rejected.as_str()),
            ("Blue.", "No.")
        );
    }

    #[test]
    fn bad_pairs_name_the_line_and_the_fix() {
        for (v, needle) in [
            (
                serde_json::json!({"prompt": "q", "chosen": "a"}),
                "missing field `rejected`",
            ),
            (
                serde_json::json!({"prompt": "q", "chosen": "a", "rejected": "a"}),
                "same answer",
            ),
            (
                serde_json::json!({"chosen": "\n\nHuman: a\n\nAssistant: x", "rejected": "\n\nHuman: b\n\nAssistant: y"}),
                "share its dialogue",
            ),
            (
                serde_json::json!({"chosen": "just text", "rejected": "other"}),
                "HH-RLHF",
            ),
        ] {
            let (_d, p) = write(&[
                serde_json::json!({"prompt": "ok", "chosen": "1", "rejected": "2"}),
                v,
            ]);
            let e = load_preferences(&p).unwrap_err().to_string();
            assert!(e.contains("line 2") && e.contains(needle), "{e}");
        }
    }
}
