//! Storage layer against a real S3 server: moto, started by each test on 127.0.0.1.
//!
//! Needs `python3 -m pip install 'moto[server]'`; without it these tests fail (they never pass
//! silently).

mod storage_common;

mod moto;

use moto::{MotoServer, BUCKET};
use object_store::{ObjectStoreExt, PutPayload};
use pruneforge::storage::{
    Storage, StorageError, UploadEvent, MANIFEST_FILE, PRUNEFORGE_S3_ENDPOINT,
};
use storage_common::*;

const PREFIX: &str = "runs/job-1/prune";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_with_multipart_file() {
    let server = MotoServer::start();
    let storage = server.storage();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 12 * 1024 * 1024 + 5, 11);

    let report = storage
        .upload_dir_with(&src, PREFIX, &multipart_options())
        .await
        .unwrap();
    assert_eq!(report.multipart, vec!["model.safetensors".to_string()]);
    assert_eq!(report.uploaded.len(), 4);
    assert!(storage.is_committed(PREFIX).await.unwrap());
    let manifest = storage.read_manifest(PREFIX).await.unwrap();
    let model = manifest.file("model.safetensors").unwrap();
    assert_eq!(model.size, 12 * 1024 * 1024 + 5);
    assert_eq!(model.sha256, sha256_hex(&files[1].1));

    // The object really is in the bucket under the URI's prefix.
    let key = object_store::path::Path::from(format!("pf-test/{PREFIX}/model.safetensors"));
    let meta = storage.object_store().head(&key).await.unwrap();
    assert_eq!(meta.size, model.size);
    // S3 multipart ETags end in -<parts>: 12 MiB + 5 in 5 MiB parts is 3 parts.
    assert!(
        meta.e_tag
            .as_deref()
            .unwrap_or("")
            .trim_matches('"')
            .ends_with("-3"),
        "{meta:?}"
    );

    let dest = tmp.path().join("dest");
    let down = storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_eq!(down.downloaded.len(), 4);
    assert_tree(&dest, &files);

    storage
        .put_bytes("runs/job-1/eval/result.json", &b"{\"gsm8k\": 0.1}"[..])
        .await
        .unwrap();
    assert_eq!(
        &storage
            .get_bytes("runs/job-1/eval/result.json")
            .await
            .unwrap()[..],
        b"{\"gsm8k\": 0.1}"
    );
    let keys: Vec<String> = storage
        .list("runs/job-1")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys.len(), files.len() + 2, "{keys:?}");
    assert!(keys.contains(&format!("{PREFIX}/{MANIFEST_FILE}")));

    assert_eq!(
        storage.delete_prefix(PREFIX).await.unwrap(),
        files.len() + 1
    );
    assert!(!storage.is_committed(PREFIX).await.unwrap());
    assert!(storage.list(PREFIX).await.unwrap().is_empty());
    assert_eq!(storage.list("runs/job-1").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_interrupted_multipart_upload() {
    let server = MotoServer::start();
    let storage = server.storage();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 11 * 1024 * 1024, 12);

    // 1. A writer that died after uploading one part of the model: parts never complete.
    let key = storage.key(&format!("{PREFIX}/model.safetensors")).unwrap();
    let mut upload = storage.object_store().put_multipart(&key).await.unwrap();
    upload
        .put_part(PutPayload::from(vec![7u8; 5 * 1024 * 1024]))
        .await
        .unwrap();
    drop(upload);
    assert!(matches!(
        storage
            .get_bytes(&format!("{PREFIX}/model.safetensors"))
            .await,
        Err(StorageError::NotFound { .. })
    ));

    // 2. upload_dir itself cut off mid-multipart, after config.json was stored.
    let events = upload_and_cut(&storage, &src, PREFIX, "model.safetensors").await;
    assert!(events.contains(&UploadEvent::FileUploaded {
        path: "config.json".into()
    }));
    assert!(events.contains(&UploadEvent::FileStarted {
        path: "model.safetensors".into(),
        size: 11 * 1024 * 1024,
        multipart: true
    }));
    assert!(!storage.is_committed(PREFIX).await.unwrap());

    // 3. The re-run reuses what is verifiably there and commits a correct artifact.
    let report = resume(&storage, &src, PREFIX).await;
    assert_eq!(report.skipped, vec!["config.json".to_string()]);
    assert_eq!(
        report.uploaded,
        vec![
            "model.safetensors",
            "plots/layer_scores.svg",
            "tokenizer.json"
        ]
    );
    assert!(storage.is_committed(PREFIX).await.unwrap());
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_tree(&dest, &files);
    let keys: Vec<String> = storage
        .list(PREFIX)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        keys.len(),
        files.len() + 1,
        "receipts must be gone: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_object_is_detected() {
    let server = MotoServer::start();
    // The endpoint may also come from PRUNEFORGE_S3_ENDPOINT, which wins over AWS_ENDPOINT_URL.
    let endpoint = server.endpoint();
    let storage = Storage::open_with_env(
        &format!("s3://{BUCKET}/pf-test"),
        [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            (PRUNEFORGE_S3_ENDPOINT, endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 100_000, 13);
    storage.upload_dir(&src, PREFIX).await.unwrap();

    let mut forged = files[3].1.clone(); // tokenizer.json
    forged[10] ^= 1;
    storage
        .put_bytes(&format!("{PREFIX}/tokenizer.json"), forged.clone())
        .await
        .unwrap();
    let dest = tmp.path().join("dest");
    match storage.download_dir(PREFIX, &dest).await {
        Err(StorageError::DigestMismatch {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, format!("{PREFIX}/tokenizer.json"));
            assert_eq!(expected, sha256_hex(&files[3].1));
            assert_eq!(actual, sha256_hex(&forged));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(!dest.join("tokenizer.json").exists());
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".partial-")), "{names:?}");

    storage
        .put_bytes(&format!("{PREFIX}/tokenizer.json"), &b"short"[..])
        .await
        .unwrap();
    let err = storage.download_dir(PREFIX, &dest).await.unwrap_err();
    assert!(
        matches!(err, StorageError::SizeMismatch { actual: 5, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_prefix_is_not_committed() {
    let server = MotoServer::start();
    let storage = server.storage();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_artifact(&src, 6 * 1024 * 1024, 14);

    // Files without a manifest, e.g. a stage that died before committing.
    upload_and_cut(&storage, &src, PREFIX, "model.safetensors").await;
    assert!(!storage.list(PREFIX).await.unwrap().is_empty());
    assert!(!storage.is_committed(PREFIX).await.unwrap());
    let err = storage.read_manifest(PREFIX).await.unwrap_err();
    assert!(matches!(err, StorageError::NotCommitted { .. }), "{err}");
    let err = storage
        .download_dir(PREFIX, &tmp.path().join("dest"))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::NotCommitted { .. }), "{err}");
    // A missing bucket prefix is simply not committed either.
    assert!(!storage.is_committed("runs/other/prune").await.unwrap());
}

/// Writer leases and the commit marker need `If-None-Match: *` (a conditional create), which
/// the S3 client sends by default and moto, MinIO and AWS S3 honour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_lease_and_commit_marker_use_conditional_create() {
    use pruneforge::storage::{LeaseOptions, LeaseOutcome};
    let server = MotoServer::start();
    let storage = server.storage();
    let options = LeaseOptions::with_ttl(std::time::Duration::from_millis(500));
    let LeaseOutcome::Acquired(mut first) = storage
        .acquire_writer_lease(PREFIX, "pod-a", &options)
        .await
        .unwrap()
    else {
        panic!("moto supports conditional create");
    };
    assert_eq!(first.generation(), 1);
    // A frozen holder is taken over after the ttl; the taker wins generation 2 exactly once.
    first.abandon();
    let LeaseOutcome::Acquired(second) = storage
        .acquire_writer_lease(PREFIX, "pod-b", &options)
        .await
        .unwrap()
    else {
        panic!("moto supports conditional create");
    };
    assert_eq!(second.generation(), 2);
    assert_eq!(second.waited_for(), Some("pod-a"));
    assert!(matches!(
        first.check_held().await,
        Err(StorageError::LeaseLost { current: 2, .. })
    ));

    // `_SUCCESS` is created conditionally: a second create at the same key is refused by the
    // server, and the uploader compares instead of overwriting.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_artifact(&src, 1000, 7);
    storage.upload_dir(&src, PREFIX).await.unwrap();
    second.release();
    let key = object_store::path::Path::from(format!("pf-test/{PREFIX}/{MANIFEST_FILE}"));
    let again = storage
        .object_store()
        .put_opts(
            &key,
            PutPayload::from_static(b"{}"),
            object_store::PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
}
