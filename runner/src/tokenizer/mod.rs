//! Tokenizer: HF `tokenizer.json` via the `tokenizers` crate, special tokens and the chat
//! template from `tokenizer_config.json` / `chat_template.jinja`, or rebuilt from GGUF metadata.

pub mod chat;
pub mod gguf;

pub use chat::{ChatMessage, ChatTemplate};

use crate::model::error::ModelError;
use serde_json::Value;
use std::path::Path;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub pad_id: Option<u32>,
    pub add_bos: bool,
    chat: Option<ChatTemplate>,
    /// The files as loaded, written back unchanged by [`Tokenizer::save_dir`].
    tokenizer_json: String,
    tokenizer_config: Value,
}

fn tok_err(file: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Tokenizer {
        file: file.display().to_string(),
        reason: reason.into(),
    }
}

/// `"<|im_end|>"` or `{"content": "<|im_end|>", ...}` (both appear in tokenizer configs).
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Builds from the JSON texts; `origin` names the files in errors.
    pub fn from_parts(
        tokenizer_json: String,
        tokenizer_config: Value,
        chat_template: Option<String>,
        eos_from_model: &[u32],
        origin: &Path,
    ) -> Result<Self, ModelError> {
        let file = origin.join("tokenizer.json");
        // The `tokenizers` crate panics on some malformed files (an untagged decoder that
        // matches no variant, a `continuing_subword_prefix` longer than a merged token): a
        // hostile file must be an error, so its panics are caught here.
        let parsed = std::panic::catch_unwind(|| {
            tokenizers::Tokenizer::from_bytes(tokenizer_json.as_bytes())
        })
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tok_err(
                &file,
                format!("cannot parse (the tokenizers library failed: {why})"),
            )
        })?;
        let inner = parsed.map_err(|e| tok_err(&file, format!("cannot parse: {e}")))?;
        let id =
            |key: &str| token_string(tokenizer_config.get(key)).and_then(|t| inner.token_to_id(&t));
        let bos_id = id("bos_token");
        let mut eos_ids: Vec<u32> = id("eos_token").into_iter().collect();
        for &e in eos_from_model {
            if !eos_ids.contains(&e) {
                eos_ids.push(e);
            }
        }
        let pad_id = id("pad_token").or(eos_ids.first().copied());
        let add_bos = tokenizer_config
            .get("add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let template = chat_template.or_else(|| match tokenizer_config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(a)) => a.iter().find_map(|t| {
                (t.get("name").and_then(Value::as_str) == Some("default"))
                    .then(|| t.get("template").and_then(Value::as_str).map(String::from))
                    .flatten()
            }),
            _ => None,
        });
        let chat = match template {
            Some(src) => {
                let bos = token_string(tokenizer_config.get("bos_token")).unwrap_or_default();
                let eos = token_string(tokenizer_config.get("eos_token")).unwrap_or_default();
                Some(ChatTemplate::new(&src, &bos, &eos).map_err(|e| {
                    tok_err(
                        &origin.join("chat_template.jinja"),
                        format!("invalid chat template: {e}"),
                    )
                })?)
            }
            None => None,
        };
        Ok(Self {
            inner,
            bos_id,
            eos_ids,
            pad_id,
            add_bos,
            chat,
            tokenizer_json,
            tokenizer_config,
        })
    }

    /// Loads `tokenizer.json` (required), `tokenizer_config.json` and `chat_template.jinja`
    /// (optional) from an HF model directory.
    pub fn load_dir(dir: &Path, eos_from_model: &[u32]) -> Result<Self, ModelError> {
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            return Err(ModelError::Missing {
                dir: dir.display().to_string(),
                name: "tokenizer.json".into(),
                hint: "the model directory needs an HF fast tokenizer; for a GGUF use `pruneforge import`".into(),
            });
        }
        let json = std::fs::read_to_string(&tj).map_err(|e| ModelError::io(&tj, e))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let config = if cfg_path.exists() {
            let text =
                std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
            serde_json::from_str(&text)
                .map_err(|e| tok_err(&cfg_path, format!("not valid JSON: {e}")))?
        } else {
            Value::Object(Default::default())
        };
        let tpl_path = dir.join("chat_template.jinja");
        let template = if tpl_path.exists() {
            Some(std::fs::read_to_string(&tpl_path).map_err(|e| ModelError::io(&tpl_path, e))?)
        } else {
            None
        };
        Self::from_parts(json, config, template, eos_from_model, dir)
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and (if any) `chat_template.jinja`.
    pub fn save_dir(&self, dir: &Path) -> Result<(), ModelError> {
        crate::util::fs::write_atomic(&dir.join("tokenizer.json"), self.tokenizer_json.as_bytes())
            .map_err(|e| ModelError::io(&dir.join("tokenizer.json"), e))?;
        let cfg = serde_json::to_vec_pretty(&self.tokenizer_config).unwrap_or_default();
        crate::util::fs::write_atomic(&dir.join("tokenizer_config.json"), &cfg)
            .map_err(|e| ModelError::io(&dir.join("tokenizer_config.json"), e))?;
        if let Some(c) = &self.chat {
            crate::util::fs::write_atomic(&dir.join("chat_template.jinja"), c.source.as_bytes())
                .map_err(|e| ModelError::io(&dir.join("chat_template.jinja"), e))?;
        }
        Ok(())
    }

    /// Token ids of `text`; `add_special` adds BOS when the tokenizer config asks for it.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| ModelError::Input(format!("tokenization failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Input(format!("detokenization failed: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    /// Renders the chat template (the prompt text, special tokens included as text).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        match &self.chat {
            Some(t) => t
                .render(messages, add_generation_prompt)
                .map_err(|e| ModelError::Input(format!("chat template failed: {e}"))),
            None => Err(ModelError::Input(
                "this tokenizer has no chat template (tokenizer_config.json `chat_template` or chat_template.jinja)".into(),
            )),
        }
    }

    /// Chat prompt token ids (no BOS added beyond what the template writes).
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, ModelError> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }
}
