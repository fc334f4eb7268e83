//! What the targets share: scratch directories, the corpus location, and what a loaded model
//! is put through (its tokenizer and a short forward pass).

use candle_core::{DType, Device, Tensor};
use pruneforge::loader::load_hf_dir;
use pruneforge::model::ForwardOptions;
use pruneforge::tokenizer::ChatMessage;
use pruneforge_api::fuzz::Verdict;
use std::path::{Path, PathBuf};

/// `tests/fuzz_corpus/<target>`.
pub fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target)
}

thread_local! {
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().expect("temporary directory");
}

/// A directory of this thread named `name` (created; reused across inputs).
pub fn scratch(name: &str) -> PathBuf {
    let dir = SCRATCH.with(|d| d.path().join(name));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `bytes` to `path` (scratch files only: a failure is the test's, not the input's).
pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("scratch file");
}

/// Loads the HF directory as every stage does, then tokenizes, renders the chat template and
/// runs a three-token forward pass: what the first use of a hostile model does.
pub fn load_and_run(dir: &Path) -> Verdict {
    let m = match load_hf_dir(dir, &Device::Cpu, DType::F32) {
        Ok(m) => m,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    let tok = &m.tokenizer;
    let ids = tok.encode("Hello world 123 <|im_end|> ä…", true);
    if let Ok(ids) = &ids {
        let _ = tok.decode(ids, true);
    }
    if tok.has_chat_template() {
        let _ = tok.encode_chat(
            &[ChatMessage::system("s"), ChatMessage::user("u {{ x }}")],
            true,
        );
    }
    let vocab = m.model.config.vocab_size.min(u32::MAX as usize) as u32;
    if vocab == 0 {
        return Verdict::Rejected("empty vocabulary".into());
    }
    let tokens = [0, 1 % vocab, 2 % vocab];
    let forward = Tensor::new(&[tokens], &Device::Cpu)
        .map_err(|e| e.to_string())
        .and_then(|t| {
            m.model
                .forward(&t, ForwardOptions::default())
                .map_err(|e| e.to_string())
        });
    match forward {
        Ok(_) => Verdict::Accepted,
        Err(e) => Verdict::Rejected(e),
    }
}
