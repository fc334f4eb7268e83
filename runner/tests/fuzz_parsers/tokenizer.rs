//! Tokenizer files: `tokenizer.json` (selector 0), `tokenizer_config.json` (1) and
//! `chat_template.jinja` (2), each hostile while the others are valid; the tokenizer is built
//! as a model directory's is and then used (encode, decode, chat template).

use pruneforge::tokenizer::gguf::from_gguf;
use pruneforge::tokenizer::{ChatMessage, Tokenizer};
use pruneforge_api::fuzz::Verdict;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::OnceLock;

use super::common::tiny::tokenizer_json;
use super::gguf;

/// `tokenizer.json` rebuilt from the GGUF seed's metadata: BPE with merges, a `Sequence`
/// pre-tokenizer with `Digits`, a template post-processor.
fn bpe_tokenizer_json() -> &'static String {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("seed.gguf");
        std::fs::write(&path, &gguf::seeds()[0]).expect("seed GGUF");
        let f = pruneforge::model::gguf::GgufFile::open(&path).expect("seed GGUF parses");
        let files = from_gguf(&f).expect("seed GGUF has a tokenizer");
        serde_json::to_string(&files.tokenizer_json).expect("JSON")
    })
}

const TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

fn default_config() -> Value {
    json!({"bos_token": "<|endoftext|>", "eos_token": {"content": "<|im_end|>", "special": true},
           "pad_token": "<|im_end|>", "add_bos_token": true, "chat_template": TEMPLATE})
}

fn tagged(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(bytes);
    out
}

pub fn seeds() -> Vec<Vec<u8>> {
    let config = serde_json::to_vec(&default_config()).expect("JSON");
    let listed = serde_json::to_vec(&json!({"eos_token": "<|im_end|>",
        "chat_template": [{"name": "default", "template": TEMPLATE}, {"name": "tool_use", "template": "x"}]}))
    .expect("JSON");
    vec![
        tagged(0, tokenizer_json().to_string().as_bytes()),
        tagged(0, bpe_tokenizer_json().as_bytes()),
        tagged(1, &config),
        tagged(1, &listed),
        tagged(2, TEMPLATE.as_bytes()),
    ]
}

/// Builds the tokenizer from the files and uses it.
pub fn check(input: &[u8]) -> Verdict {
    let Some((&selector, body)) = input.split_first() else {
        return Verdict::Rejected("empty".into());
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
    let (json, config, template) = match selector % 3 {
        0 => match text(body) {
            Ok(t) => (t, default_config(), None),
            Err(e) => return Verdict::Rejected(e),
        },
        1 => match serde_json::from_slice::<Value>(body) {
            Ok(c) => (bpe_tokenizer_json().clone(), c, None),
            Err(e) => return Verdict::Rejected(e.to_string()),
        },
        _ => match text(body) {
            Ok(t) => (bpe_tokenizer_json().clone(), default_config(), Some(t)),
            Err(e) => return Verdict::Rejected(e),
        },
    };
    let tok = match Tokenizer::from_parts(json, config, template, &[1], Path::new("fuzz")) {
        Ok(t) => t,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    let vocab = tok.vocab_size() as u32;
    for s in [
        "",
        "Hello world 123",
        "<|im_end|><|endoftext|>",
        "ä…😀\u{0}\r\n\t  x",
    ] {
        for special in [false, true] {
            if let Ok(ids) = tok.encode(s, special) {
                let _ = tok.decode(&ids, true);
                let _ = tok.decode(&ids, false);
            }
        }
    }
    let _ = tok.decode(&[0, vocab, vocab.wrapping_add(1), u32::MAX], false);
    let _ = tok.token_to_id("<|im_end|>");
    if tok.has_chat_template() {
        let messages = [
            ChatMessage::system("sys"),
            ChatMessage::user("{{ raise_exception('x') }} {% for %}"),
            ChatMessage::assistant("a"),
        ];
        for prompt in [false, true] {
            let _ = tok.apply_chat_template(&messages, prompt);
            let _ = tok.encode_chat(&messages[1..2], prompt);
            let _ = tok.apply_chat_template(&[], prompt);
        }
    }
    Verdict::Accepted
}
