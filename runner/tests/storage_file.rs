//! Storage layer against the local filesystem (`file://` and plain paths).

mod storage_common;

use std::path::Path;

use pruneforge::storage::{
    BlockingStorage, Storage, StorageError, UploadEvent, UploadOptions, MANIFEST_FILE,
    MANIFEST_FORMAT, RECEIPTS_DIR, WRITER,
};
use storage_common::*;

const PREFIX: &str = "runs/job-1/prune";

fn open(root: &Path) -> Storage {
    Storage::open(&format!("file://{}", root.display())).expect("open local storage")
}

/// Every file under `dir` whose name marks it as a temporary or staging file.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                out.extend(leftovers(&path));
            } else if name.contains(".partial-") || name.contains('#') {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn round_trip_with_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 1_000_000, 1);
    let storage = open(&tmp.path().join("store"));

    assert!(!storage.is_committed(PREFIX).await.unwrap());
    let report = storage.upload_dir(&src, PREFIX).await.unwrap();
    assert_eq!(report.uploaded.len(), 4);
    assert!(report.skipped.is_empty());
    assert!(storage.is_committed(PREFIX).await.unwrap());

    let manifest = storage.read_manifest(PREFIX).await.unwrap();
    assert_eq!(manifest, report.manifest);
    assert_eq!(manifest.format, MANIFEST_FORMAT);
    assert_eq!(manifest.writer, WRITER);
    assert!(chrono::DateTime::parse_from_rfc3339(&manifest.created).is_ok());
    let listed: Vec<(String, u64, String)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), f.size, f.sha256.clone()))
        .collect();
    let expected: Vec<(String, u64, String)> = files
        .iter()
        .map(|(p, c)| (p.clone(), c.len() as u64, sha256_hex(c)))
        .collect();
    assert_eq!(listed, expected);

    // Receipts are gone after the commit; the manifest is the last word.
    let keys: Vec<String> = storage
        .list(PREFIX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(keys.contains(&format!("{PREFIX}/{MANIFEST_FILE}")));
    assert!(!keys.iter().any(|k| k.contains(RECEIPTS_DIR)), "{keys:?}");
    assert_eq!(keys.len(), files.len() + 1);

    let dest = tmp.path().join("dest");
    let down = storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_eq!(down.downloaded.len(), 4);
    assert_tree(&dest, &files);

    // A second download reuses verified local files.
    let again = storage.download_dir(PREFIX, &dest).await.unwrap();
    assert!(again.downloaded.is_empty());
    assert_eq!(again.reused.len(), 4);

    // Re-uploading identical content is a no-op that keeps the commit.
    let same = storage.upload_dir(&src, PREFIX).await.unwrap();
    assert!(same.uploaded.is_empty());
    assert_eq!(same.skipped.len(), 4);
    assert_eq!(same.manifest.created, manifest.created);
}

#[tokio::test]
async fn plain_relative_path_and_blocking_api() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 10_000, 2);
    // A relative path resolves against the current directory.
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(&tmp.path().join("store"), &cwd);
    let storage = tokio::task::spawn_blocking(move || {
        let storage = BlockingStorage::open(&rel).unwrap();
        storage.upload_dir(&src, PREFIX).unwrap();
        storage
    })
    .await
    .unwrap();
    assert!(tmp
        .path()
        .join("store")
        .join(PREFIX)
        .join(MANIFEST_FILE)
        .is_file());
    // Blocking calls from async code still work (on a helper thread) instead of panicking.
    assert!(storage.is_committed(PREFIX).unwrap());
    let dest = tmp.path().join("dest");
    let dest2 = dest.clone();
    let file_count = files.len();
    tokio::task::spawn_blocking(move || {
        assert!(storage.is_committed(PREFIX).unwrap());
        storage.download_dir(PREFIX, &dest2).unwrap();
        storage
            .put_bytes("runs/job-1/eval/result.json", &b"{\"arc\": 0.5}"[..])
            .unwrap();
        assert_eq!(
            &storage.get_bytes("runs/job-1/eval/result.json").unwrap()[..],
            b"{\"arc\": 0.5}"
        );
        assert!(matches!(
            storage.get_bytes("runs/job-1/eval/missing.json"),
            Err(StorageError::NotFound { .. })
        ));
        let deleted = storage.delete_prefix(PREFIX).unwrap();
        assert_eq!(deleted, file_count + 1);
        assert!(!storage.is_committed(PREFIX).unwrap());
        assert!(storage.list(PREFIX).unwrap().is_empty());
        assert_eq!(storage.list("runs").unwrap().len(), 1);
    })
    .await
    .unwrap();
    assert_tree(&dest, &files);
}

/// `target` relative to `base` (both absolute), via `..` steps.
fn pathdiff(target: &Path, base: &Path) -> String {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        t[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().to_string()),
    );
    parts.join("/")
}

#[tokio::test]
async fn corrupted_object_is_detected_and_nothing_is_clobbered() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 200_000, 3);
    let root = tmp.path().join("store");
    let storage = open(&root);
    storage.upload_dir(&src, PREFIX).await.unwrap();

    // A previous good copy sits at the destination.
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    let original = std::fs::read(dest.join("model.safetensors")).unwrap();
    std::fs::remove_file(dest.join("config.json")).unwrap();
    std::fs::write(dest.join("model.safetensors"), b"stale local copy").unwrap();

    // Same size, different content, behind the manifest's back.
    let stored = root.join(PREFIX).join("model.safetensors");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1234] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let err = storage.download_dir(PREFIX, &dest).await.unwrap_err();
    match &err {
        StorageError::DigestMismatch {
            key,
            expected,
            actual,
        } => {
            assert_eq!(key, &format!("{PREFIX}/model.safetensors"));
            assert_eq!(expected, &sha256_hex(&original));
            assert_eq!(actual, &sha256_hex(&bytes));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("re-run the stage"), "{err}");
    // The failed file left no partial file and did not replace the old local file.
    assert_eq!(
        std::fs::read(dest.join("model.safetensors")).unwrap(),
        b"stale local copy"
    );
    assert!(leftovers(&dest).is_empty(), "{:?}", leftovers(&dest));

    // A truncated object is a size mismatch.
    std::fs::write(&stored, &bytes[..1000]).unwrap();
    let err = storage
        .download_dir(PREFIX, &tmp.path().join("dest2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SizeMismatch { expected, actual: 1000, .. } if expected == 200_000),
        "{err}"
    );
    assert!(leftovers(&tmp.path().join("dest2")).is_empty());
    // Other files are unaffected.
    assert_eq!(files[0].0, "config.json");
    assert!(dest.join("config.json").is_file());
}

#[tokio::test]
async fn uncommitted_prefix_is_not_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(&tmp.path().join("store"));
    storage
        .put_bytes(&format!("{PREFIX}/model.safetensors"), vec![1u8; 10])
        .await
        .unwrap();
    assert!(!storage.is_committed(PREFIX).await.unwrap());
    assert!(matches!(
        storage.read_manifest(PREFIX).await,
        Err(StorageError::NotCommitted { .. })
    ));
    let err = storage
        .download_dir(PREFIX, &tmp.path().join("dest"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotCommitted { .. }), "{err}");
    assert!(err.to_string().contains("re-run that stage"));
    assert!(!tmp.path().join("dest").exists() || leftovers(&tmp.path().join("dest")).is_empty());

    // A manifest that is not ours is rejected with a reason, not trusted.
    storage
        .put_bytes(&format!("{PREFIX}/{MANIFEST_FILE}"), &b"{}"[..])
        .await
        .unwrap();
    assert!(matches!(
        storage.read_manifest(PREFIX).await,
        Err(StorageError::InvalidManifest { .. })
    ));
}

#[tokio::test]
async fn large_file_uses_streamed_multipart() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 20 * 1024 * 1024 + 17, 4);
    let storage = open(&tmp.path().join("store"));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut options = multipart_options();
    let sink = events.clone();
    options.progress = Some(std::sync::Arc::new(move |e: &UploadEvent| {
        sink.lock().unwrap().push(e.clone())
    }));
    let report = storage
        .upload_dir_with(&src, PREFIX, &options)
        .await
        .unwrap();
    assert_eq!(report.multipart, vec!["model.safetensors".to_string()]);
    let progress: Vec<u64> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            UploadEvent::FileProgress { path, bytes } if path == "model.safetensors" => {
                Some(*bytes)
            }
            _ => None,
        })
        .collect();
    // 20 MiB + 17 bytes in 5 MiB parts: five reads, the last one short.
    let part = 5 * 1024 * 1024u64;
    assert_eq!(
        progress,
        vec![part, 2 * part, 3 * part, 4 * part, 4 * part + 17]
    );
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_tree(&dest, &files);
}

#[tokio::test]
async fn resume_after_interrupted_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 12 * 1024 * 1024, 5);
    let root = tmp.path().join("store");
    let storage = open(&root);

    let events = upload_and_cut(&storage, &src, PREFIX, "model.safetensors").await;
    assert!(events.contains(&UploadEvent::FileUploaded {
        path: "config.json".into()
    }));
    assert!(!storage.is_committed(PREFIX).await.unwrap());
    // A staging file as left by a process killed mid-multipart.
    std::fs::write(root.join(PREFIX).join("model.safetensors#7"), b"partial").unwrap();

    let report = resume(&storage, &src, PREFIX).await;
    assert_eq!(report.skipped, vec!["config.json".to_string()]);
    assert_eq!(
        report.uploaded,
        vec![
            "model.safetensors".to_string(),
            "plots/layer_scores.svg".to_string(),
            "tokenizer.json".to_string()
        ]
    );
    assert!(storage.is_committed(PREFIX).await.unwrap());
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_tree(&dest, &files);
}

#[tokio::test]
async fn changed_local_file_is_not_skipped_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_artifact(&src, 6 * 1024 * 1024, 6);
    let storage = open(&tmp.path().join("store"));
    upload_and_cut(&storage, &src, PREFIX, "model.safetensors").await;
    // config.json has a receipt; change it with the same size before the re-run.
    let config = std::fs::read(src.join("config.json")).unwrap();
    let mut changed = config.clone();
    changed[2] = b'X';
    std::fs::write(src.join("config.json"), &changed).unwrap();
    let report = resume(&storage, &src, PREFIX).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let entry = report.manifest.file("config.json").unwrap();
    assert_eq!(entry.sha256, sha256_hex(&changed));
    assert_eq!(
        &storage
            .get_bytes(&format!("{PREFIX}/config.json"))
            .await
            .unwrap()[..],
        &changed[..]
    );
}

#[tokio::test]
async fn replacing_a_committed_artifact_uncommits_it_first() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_artifact(&src, 100_000, 7);
    let root = tmp.path().join("store");
    let storage = open(&root);
    storage.upload_dir(&src, PREFIX).await.unwrap();
    let files = make_artifact(&src, 100_000, 8);

    let manifest_path = root.join(PREFIX).join(MANIFEST_FILE);
    let seen_committed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen_committed.clone();
    let options = UploadOptions {
        progress: Some(std::sync::Arc::new(move |e: &UploadEvent| {
            if let UploadEvent::FileStarted { path, .. } = e {
                sink.lock()
                    .unwrap()
                    .push((path.clone(), manifest_path.exists()));
            }
        })),
        ..UploadOptions::default()
    };
    let report = storage
        .upload_dir_with(&src, PREFIX, &options)
        .await
        .unwrap();
    let seen = seen_committed.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|(_, committed)| !committed), "{seen:?}");
    // The SVG did not change and is reused; the rest is new.
    assert_eq!(report.skipped, vec!["plots/layer_scores.svg".to_string()]);
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_tree(&dest, &files);
}

#[tokio::test]
async fn bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(&tmp.path().join("store"));
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(MANIFEST_FILE), b"x").unwrap();
    let err = storage.upload_dir(&src, PREFIX).await.unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidLocalFile { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("reserved"), "{err}");

    let err = storage
        .upload_dir(&tmp.path().join("missing"), PREFIX)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    let err = storage.upload_dir(&src, "").await.unwrap_err();
    assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    let err = storage.upload_dir(&src, "runs/../x").await.unwrap_err();
    assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    assert!(matches!(
        Storage::open("ftp://host/x"),
        Err(StorageError::UnsupportedScheme { .. })
    ));
    assert!(!storage.is_committed(PREFIX).await.unwrap());
}
