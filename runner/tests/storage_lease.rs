//! One writer per artifact prefix, on local storage: writer leases (conditional create, heartbeat,
//! takeover after the ttl, loss detected before commit) and the conditionally created `_SUCCESS`.

mod storage_common;

use pruneforge::storage::{
    LeaseOptions, LeaseOutcome, Manifest, ManifestFile, Storage, StorageError, UploadEvent,
    UploadOptions, WriterLease, LEASES_DIR, MANIFEST_FILE,
};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage_common::*;

const PREFIX: &str = "finetune/0123abcd";

fn open(dir: &std::path::Path) -> Storage {
    let env: [(&str, &str); 0] = [];
    Storage::open_with_env(dir.to_str().unwrap(), env).unwrap()
}

async fn acquire(storage: &Storage, holder: &str, ttl: Duration) -> WriterLease {
    match storage
        .acquire_writer_lease(PREFIX, holder, &LeaseOptions::with_ttl(ttl))
        .await
        .unwrap()
    {
        LeaseOutcome::Acquired(lease) => *lease,
        LeaseOutcome::Unsupported => panic!("local storage supports conditional create"),
    }
}

/// Acquires on a separate thread (its own runtime) and reports when it got the lease.
fn acquire_in_background(
    storage: &Storage,
    holder: &'static str,
    ttl: Duration,
) -> mpsc::Receiver<WriterLease> {
    let storage = storage.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lease = runtime.block_on(acquire(&storage, holder, ttl));
        let _ = tx.send(lease);
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_the_second_writer_waiting_until_it_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(tmp.path());
    let ttl = Duration::from_millis(400);
    let first = acquire(&storage, "pod-a", ttl).await;
    assert_eq!(first.generation(), 1);
    assert_eq!(first.waited_for(), None);

    let second = acquire_in_background(&storage, "pod-b", ttl);
    // Three ttls pass: the heartbeat keeps the first lease alive, so the second still waits.
    assert!(
        second.recv_timeout(ttl * 3).is_err(),
        "the second writer must wait while the first one's heartbeat runs"
    );
    first.check_held().await.unwrap();

    let started = Instant::now();
    first.release();
    let second = second
        .recv_timeout(Duration::from_secs(10))
        .expect("the second writer gets the lease once the first releases it");
    assert!(
        started.elapsed() < ttl,
        "a released lease is taken at once, not after the ttl ({:?})",
        started.elapsed()
    );
    assert_eq!(second.generation(), 2);
    assert_eq!(second.waited_for(), Some("pod-a"));
    second.check_held().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_is_taken_over_after_the_ttl_and_may_not_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(tmp.path());
    let ttl = Duration::from_millis(300);
    let mut stalled = acquire(&storage, "pod-frozen", ttl).await;
    // The process freezes (or is killed): no more heartbeats, nothing released.
    stalled.abandon();

    let started = Instant::now();
    let taker = acquire(&storage, "pod-new", ttl).await;
    let waited = started.elapsed();
    assert!(
        waited >= ttl,
        "taken over only after the ttl, took {waited:?}"
    );
    assert_eq!(taker.generation(), 2);
    assert_eq!(taker.waited_for(), Some("pod-frozen"));

    match stalled.check_held().await {
        Err(StorageError::LeaseLost {
            generation: 1,
            current: 2,
            ..
        }) => {}
        other => panic!("the stalled writer must learn it lost the lease, got {other:?}"),
    }
    taker.check_held().await.unwrap();
    // The stalled writer's release (when it wakes up) does not free the taker's lease.
    drop(stalled);
    taker.check_held().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_writers_hold_the_lease_one_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(tmp.path());
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for i in 0..6 {
        let storage = storage.clone();
        let inside = inside.clone();
        threads.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let holder = format!("pod-{i}");
            let lease = runtime.block_on(acquire(&storage, &holder, Duration::from_secs(30)));
            let others = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let generation = lease.generation();
            lease.release();
            (others, generation)
        }));
    }
    let mut generations: Vec<u64> = Vec::new();
    for t in threads {
        let (others, generation) = t.join().unwrap();
        assert_eq!(others, 0, "two writers held the lease at once");
        generations.push(generation);
    }
    generations.sort_unstable();
    assert_eq!(generations, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn deleting_the_prefix_deletes_its_lease_generations() {
    let tmp = tempfile::tempdir().unwrap();
    let storage = open(tmp.path());
    let src = tmp.path().join("src");
    make_artifact(&src, 1000, 3);
    let lease = acquire(&storage, "pod-a", Duration::from_secs(30)).await;
    storage.upload_dir(&src, PREFIX).await.unwrap();
    lease.release();
    let lease_dir = tmp.path().join(LEASES_DIR).join(PREFIX);
    assert!(lease_dir.join(format!("{:020}", 1)).is_file());
    storage.delete_prefix(PREFIX).await.unwrap();
    assert!(!lease_dir.exists() || std::fs::read_dir(&lease_dir).unwrap().next().is_none());
    // The artifact directory holds no lease bookkeeping: readers that list it see only files.
    storage.upload_dir(&src, PREFIX).await.unwrap();
    assert!(!tmp.path().join(PREFIX).join(LEASES_DIR).exists());
}

/// Writes a `_SUCCESS` into the local prefix while an upload is in flight, as another writer
/// without the lease would.
fn commit_behind_the_uploaders_back(root: &std::path::Path, manifest: Manifest) -> UploadOptions {
    let path = root.join(PREFIX).join(MANIFEST_FILE);
    let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
    UploadOptions {
        progress: Some(Arc::new(move |event: &UploadEvent| {
            if matches!(event, UploadEvent::FileUploaded { .. })
                && !written.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                std::fs::write(&path, manifest.to_json()).unwrap();
            }
        })),
        ..UploadOptions::default()
    }
}

fn manifest_of(files: &[(String, Vec<u8>)]) -> Manifest {
    Manifest::new(
        files
            .iter()
            .map(|(path, bytes)| ManifestFile {
                path: path.clone(),
                size: bytes.len() as u64,
                sha256: sha256_hex(bytes),
            })
            .collect(),
    )
}

#[tokio::test]
async fn the_commit_marker_never_overwrites_another_writers_different_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let storage = open(&root);
    let src = tmp.path().join("src");
    let mut other = make_artifact(&src, 2000, 5);
    other[0].1.push(b'!');
    let options = commit_behind_the_uploaders_back(&root, manifest_of(&other));
    match storage.upload_dir_with(&src, PREFIX, &options).await {
        Err(StorageError::CommitConflict { key }) => assert!(key.ends_with(MANIFEST_FILE)),
        other => panic!("expected a commit conflict, got {other:?}"),
    }
    // The other writer's commit stands.
    let kept = storage.read_manifest(PREFIX).await.unwrap();
    assert_eq!(kept.files, manifest_of(&other).files);
}

#[tokio::test]
async fn the_same_content_committed_by_another_writer_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let storage = open(&root);
    let src = tmp.path().join("src");
    let files = make_artifact(&src, 2000, 6);
    let theirs = manifest_of(&files);
    let options = commit_behind_the_uploaders_back(&root, theirs.clone());
    let report = storage
        .upload_dir_with(&src, PREFIX, &options)
        .await
        .unwrap();
    assert_eq!(
        report.manifest, theirs,
        "the first commit is kept, not rewritten"
    );
    let dest = tmp.path().join("dest");
    storage.download_dir(PREFIX, &dest).await.unwrap();
    assert_tree(&dest, &files);
}
