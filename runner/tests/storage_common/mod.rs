//! Helpers shared by the storage integration tests (local and S3).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use pruneforge::storage::{Storage, UploadEvent, UploadOptions, UploadReport, MIN_PART_SIZE};
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes a model-like artifact directory; returns (relative path, content), sorted by path.
pub fn make_artifact(dir: &Path, model_size: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let files = vec![
        (
            "config.json".to_string(),
            format!("{{\"num_hidden_layers\": 30, \"seed\": {seed}}}").into_bytes(),
        ),
        (
            "model.safetensors".to_string(),
            pseudo_random(model_size, seed),
        ),
        (
            "plots/layer_scores.svg".to_string(),
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"1\" height=\"1\"/></svg>"
                .to_vec(),
        ),
        (
            "tokenizer.json".to_string(),
            pseudo_random(300_000, seed + 1),
        ),
    ];
    for (rel, content) in &files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    files
}

/// Asserts `dir` holds exactly `expected` (plus nothing else).
pub fn assert_tree(dir: &Path, expected: &[(String, Vec<u8>)]) {
    let mut found = Vec::new();
    collect(dir, dir, &mut found);
    found.sort();
    let mut names: Vec<String> = expected.iter().map(|(p, _)| p.clone()).collect();
    names.sort();
    assert_eq!(found, names, "files in {}", dir.display());
    for (rel, content) in expected {
        let got = std::fs::read(dir.join(rel)).unwrap();
        assert!(got == *content, "content of {rel} differs");
    }
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(base, &path, out);
        } else {
            out.push(
                path.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

/// Options that force the multipart path with S3's minimum part size.
pub fn multipart_options() -> UploadOptions {
    UploadOptions {
        part_size: MIN_PART_SIZE,
        multipart_threshold: MIN_PART_SIZE as u64,
        max_concurrency: 2,
        progress: None,
    }
}

/// Starts `upload_dir_with` and drops it (as a killed process would stop) as soon as `file` has
/// handed its first part to the store. Returns the events seen before the cut.
pub async fn upload_and_cut(
    storage: &Storage,
    dir: &Path,
    prefix: &str,
    file: &str,
) -> Vec<UploadEvent> {
    let cut = Arc::new(tokio::sync::Notify::new());
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut options = multipart_options();
    {
        let cut = cut.clone();
        let events = events.clone();
        let file = file.to_string();
        options.progress = Some(Arc::new(move |event: &UploadEvent| {
            events.lock().unwrap().push(event.clone());
            if matches!(event, UploadEvent::FileProgress { path, .. } if *path == file) {
                cut.notify_one();
            }
        }));
    }
    tokio::select! {
        biased;
        _ = cut.notified() => {}
        result = storage.upload_dir_with(dir, prefix, &options) => {
            panic!("upload finished before the cut: {result:?}")
        }
    }
    let seen = events.lock().unwrap().clone();
    seen
}

/// A second upload of the same directory after a cut: must resume and commit.
pub async fn resume(storage: &Storage, dir: &Path, prefix: &str) -> UploadReport {
    storage
        .upload_dir_with(dir, prefix, &multipart_options())
        .await
        .expect("resumed upload")
}
