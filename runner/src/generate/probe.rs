//! A fixed decode-speed probe: greedy generation at batch 1 after the reference chat prompt,
//! the same work for every model, so that the decode speeds of variants evaluated in one run
//! can be read side by side (the eval stage records it; `pruneforge bench generate` is the
//! careful measurement).

use super::engine::{generate_all, GenerateParams};
use crate::model::error::Result;
use crate::model::Llama;
use crate::tokenizer::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};

/// The user turn of the reference chat prompt (also `pruneforge bench generate`'s).
pub const SPEED_PROMPT: &str = "Write a short story about a robot who learns to paint.";

/// New tokens the eval stage's probe decodes.
pub const PROBE_NEW_TOKENS: usize = 64;

/// One timed generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeProbe {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Tokens decoded after the first, per second of decoding (prefill excluded).
    pub decode_tokens_per_s: f64,
}

/// Greedy generation of up to `new_tokens` (bounded by the context) after the reference
/// prompt, once to warm up and once timed. `None` when the context leaves room for fewer than
/// two new tokens.
pub fn decode_probe(
    model: &Llama,
    tokenizer: &Tokenizer,
    new_tokens: usize,
) -> Result<Option<DecodeProbe>> {
    let prompt = tokenizer.encode_chat(&[ChatMessage::user(SPEED_PROMPT)], true)?;
    let room = model
        .config
        .max_position_embeddings
        .saturating_sub(prompt.len());
    let new_tokens = new_tokens.min(room);
    if new_tokens < 2 {
        return Ok(None);
    }
    let params = |n| GenerateParams {
        max_new_tokens: n,
        stop_on_eos: false,
        batch_size: 1,
        ..Default::default()
    };
    let prompts = vec![prompt];
    generate_all(model, tokenizer, &prompts, &params(2))?;
    let (_, stats) = generate_all(model, tokenizer, &prompts, &params(new_tokens))?;
    Ok(Some(DecodeProbe {
        prompt_tokens: stats.prompt_tokens,
        new_tokens: stats.generated_tokens,
        prefill_s: stats.prefill_s,
        decode_s: stats.decode_s,
        decode_tokens_per_s: stats.generated_tokens.saturating_sub(1) as f64
            / stats.decode_s.max(1e-9),
    }))
}
