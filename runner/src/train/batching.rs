//! From SFT records to training batches.
//!
//! - Each record becomes one chat: user = instruction (+ "\n\n" + input when there is one),
//!   assistant = output. Prompt tokens (the template up to and including the assistant
//!   header) carry no loss; the answer tokens (output, end-of-turn marker and whatever the
//!   template writes after it) do.
//! - Examples longer than `max_seq_len` are truncated (counted); an example whose prompt
//!   alone leaves no room for an answer token is skipped (counted).
//! - Batches are length-bucketed: every epoch the examples are shuffled with the run's seed,
//!   cut into windows of [`BUCKET_BATCHES`] batches, each window is sorted by length and cut
//!   into batches, and the batch order is shuffled. The order is a pure function of
//!   `(seed, epoch)`, so a data position `(epoch, cursor)` is all a checkpoint needs.

use super::error::{Result, TrainError};
use crate::data::sft::SftRecord;
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::util::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// Batches per length-sorting window.
pub const BUCKET_BATCHES: usize = 64;

/// One tokenized conversation: `tokens[..prompt_len]` is the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
}

impl Example {
    /// Positions that carry loss (answer tokens).
    pub fn targets(&self) -> usize {
        self.tokens.len().saturating_sub(self.prompt_len)
    }
}

/// Tokenized examples and what was dropped or cut on the way.
#[derive(Clone, Debug, Default)]
pub struct Tokenized {
    pub examples: Vec<Example>,
    /// Examples cut to `max_seq_len`.
    pub truncated: usize,
    /// Records skipped because their prompt alone fills `max_seq_len`.
    pub skipped_prompt_too_long: usize,
    /// Records skipped because their answer is empty.
    pub skipped_empty_answer: usize,
}

/// The user message of a record.
pub fn user_message(r: &SftRecord) -> String {
    if r.input.trim().is_empty() {
        r.instruction.clone()
    } else {
        format!("{}\n\n{}", r.instruction, r.input)
    }
}

/// Prompt and answer token ids of one record (before truncation), or `None` if the answer is
/// empty.
pub fn encode_record(tok: &Tokenizer, r: &SftRecord) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
    encode_chat(tok, &[ChatMessage::user(user_message(r))], &r.output)
}

/// Prompt and answer token ids of `answer` after the conversation `prompt` (which ends with a
/// user message), or `None` if the answer is empty: the prompt is the template's generation
/// prompt, the answer whatever the template adds to it for the assistant turn.
pub fn encode_chat(
    tok: &Tokenizer,
    prompt: &[ChatMessage],
    answer: &str,
) -> Result<Option<(Vec<u32>, Vec<u32>)>> {
    if answer.trim().is_empty() {
        return Ok(None);
    }
    let prompt_text = tok.apply_chat_template(prompt, true)?;
    let mut conversation = prompt.to_vec();
    conversation.push(ChatMessage::assistant(answer.to_string()));
    let full = tok.apply_chat_template(&conversation, false)?;
    let Some(answer) = full.strip_prefix(prompt_text.as_str()) else {
        return Err(TrainError::Input(
            "the chat template does not render a conversation as its generation prompt followed \
             by the answer; fine-tuning needs a template with that property"
                .into(),
        ));
    };
    let prompt_ids = tok.encode(&prompt_text, false)?;
    let answer_ids = tok.encode(answer, false)?;
    if answer_ids.is_empty() {
        return Ok(None);
    }
    Ok(Some((prompt_ids, answer_ids)))
}

/// An example of `prompt` + `answer` cut to `max_seq_len` tokens: `None` when the answer is
/// empty or the prompt leaves no room for an answer token; the flag says whether it was cut.
pub fn example_of(
    tok: &Tokenizer,
    prompt: &[ChatMessage],
    answer: &str,
    max_seq_len: usize,
) -> Result<Option<(Example, bool)>> {
    let Some((prompt, answer)) = encode_chat(tok, prompt, answer)? else {
        return Ok(None);
    };
    if prompt.len() + 1 > max_seq_len {
        return Ok(None);
    }
    let prompt_len = prompt.len();
    let mut tokens = prompt;
    tokens.extend_from_slice(&answer);
    let cut = tokens.len() > max_seq_len;
    tokens.truncate(max_seq_len);
    Ok(Some((Example { tokens, prompt_len }, cut)))
}

/// Tokenizes `records` for training with at most `max_seq_len` tokens per example.
pub fn tokenize(tok: &Tokenizer, records: &[SftRecord], max_seq_len: usize) -> Result<Tokenized> {
    let mut out = Tokenized::default();
    for r in records {
        let Some((prompt, answer)) = encode_record(tok, r)? else {
            out.skipped_empty_answer += 1;
            continue;
        };
        if prompt.len() + 1 > max_seq_len {
            out.skipped_prompt_too_long += 1;
            continue;
        }
        let mut tokens = prompt.clone();
        tokens.extend_from_slice(&answer);
        if tokens.len() > max_seq_len {
            tokens.truncate(max_seq_len);
            out.truncated += 1;
        }
        out.examples.push(Example {
            tokens,
            prompt_len: prompt.len(),
        });
    }
    Ok(out)
}

/// A right-padded micro-batch. Row `r` feeds `tokens[r * len .. (r + 1) * len]`; position
/// `positions[i]` (flat index `r * len + p`) must predict `targets[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub rows: usize,
    pub len: usize,
    pub positions: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Batch {
    pub fn from_examples(examples: &[&Example], pad: u32) -> Self {
        let len = examples
            .iter()
            .map(|e| e.tokens.len().saturating_sub(1))
            .max()
            .unwrap_or(0)
            .max(1);
        let rows = examples.len();
        let mut tokens = vec![pad; rows * len];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (r, e) in examples.iter().enumerate() {
            let n = e.tokens.len().saturating_sub(1);
            tokens[r * len..r * len + n].copy_from_slice(&e.tokens[..n]);
            for p in e.prompt_len.saturating_sub(1)..n {
                positions.push((r * len + p) as u32);
                targets.push(e.tokens[p + 1]);
            }
        }
        Batch {
            tokens,
            rows,
            len,
            positions,
            targets,
        }
    }

    /// Tokens that carry loss.
    pub fn target_count(&self) -> usize {
        self.targets.len()
    }
}

/// Where the data order stands: batch `cursor` of epoch `epoch` is next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    pub cursor: usize,
}

/// The seeded, length-bucketed batch order over a fixed list of examples.
pub struct DataOrder {
    lengths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    pos: DataPosition,
    batches: Vec<Vec<usize>>,
}

impl DataOrder {
    pub fn new(lengths: Vec<usize>, batch_size: usize, seed: u64) -> Self {
        let mut o = Self {
            lengths,
            batch_size: batch_size.max(1),
            seed,
            pos: DataPosition::default(),
            batches: Vec::new(),
        };
        o.batches = o.epoch_batches(0);
        o
    }

    /// The batches of `epoch` (example indices).
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::derive(self.seed, 0xDA7A_0000 + epoch);
        let mut perm: Vec<usize> = (0..self.lengths.len()).collect();
        rng.shuffle(&mut perm);
        let mut batches = Vec::new();
        for window in perm.chunks(self.batch_size * BUCKET_BATCHES) {
            let mut w = window.to_vec();
            w.sort_by_key(|&i| (std::cmp::Reverse(self.lengths[i]), i));
            batches.extend(w.chunks(self.batch_size).map(<[usize]>::to_vec));
        }
        rng.shuffle(&mut batches);
        batches
    }

    pub fn position(&self) -> DataPosition {
        self.pos
    }

    pub fn restore(&mut self, pos: DataPosition) {
        self.batches = self.epoch_batches(pos.epoch);
        self.pos = pos;
    }

    /// The next batch, moving into the next epoch when this one is done.
    pub fn next_batch(&mut self) -> Vec<usize> {
        if self.pos.cursor >= self.batches.len() {
            self.pos = DataPosition {
                epoch: self.pos.epoch + 1,
                cursor: 0,
            };
            self.batches = self.epoch_batches(self.pos.epoch);
        }
        let b = self
            .batches
            .get(self.pos.cursor)
            .cloned()
            .unwrap_or_default();
        self.pos.cursor += 1;
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_masks_prompt_and_pads() {
        let a = Example {
            tokens: vec![1, 2, 3, 4, 5],
            prompt_len: 3,
        };
        let b = Example {
            tokens: vec![7, 8, 9],
            prompt_len: 2,
        };
        let batch = Batch::from_examples(&[&a, &b], 0);
        assert_eq!(batch.len, 4);
        assert_eq!(batch.tokens, vec![1, 2, 3, 4, 7, 8, 0, 0]);
        // a: positions 2, 3 predict 4, 5; b: position 1 predicts 9.
        assert_eq!(batch.positions, vec![2, 3, 5]);
        assert_eq!(batch.targets, vec![4, 5, 9]);
        assert_eq!(a.targets() + b.targets(), batch.target_count());
    }

    #[test]
    fn order_is_seeded_complete_and_resumable() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 300).collect();
        let mut o = DataOrder::new(lengths.clone(), 8, 3);
        let epoch0: Vec<Vec<usize>> = (0..125).map(|_| o.next_batch()).collect();
        let mut seen: Vec<usize> = epoch0.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Buckets: batches are length-homogeneous compared with random batches.
        let spread: usize = epoch0
            .iter()
            .map(|b| {
                let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
                l.iter().max().unwrap() - l.iter().min().unwrap()
            })
            .sum();
        assert!(spread / 125 < 60, "mean spread {}", spread / 125);
        let pos = o.position();
        let next: Vec<Vec<usize>> = (0..5).map(|_| o.next_batch()).collect();
        let mut r = DataOrder::new(lengths.clone(), 8, 3);
        r.restore(pos);
        let again: Vec<Vec<usize>> = (0..5).map(|_| r.next_batch()).collect();
        assert_eq!(next, again);
        assert_ne!(epoch0[0], DataOrder::new(lengths, 8, 4).next_batch());
    }
}
