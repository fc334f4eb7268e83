//! `upload_dir`: stream a local directory into an artifact prefix and commit it.
//!
//! Protocol (see the module docs of [`crate::storage`] for the full story):
//! 1. plan: walk the directory; collect digests already known for the prefix (the old manifest,
//!    then per-file receipts of an interrupted upload); a file is *reused* when the stored
//!    object has the local size and its known sha256 equals the local file's sha256;
//! 2. if the prefix is committed with exactly this content, return (idempotent re-run);
//! 3. otherwise delete `_SUCCESS` first (the prefix is now uncommitted), upload every file that
//!    is not reused (multipart above the threshold, streaming, hashing on the way), and write a
//!    receipt after each one;
//! 4. write `_SUCCESS` last, then drop the receipts.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::error::{Result, StorageError};
use super::local::{self, LocalFile};
use super::manifest::{Manifest, ManifestFile, MANIFEST_FILE, RECEIPTS_DIR};
use super::store::Storage;

/// Smallest part S3 accepts (all parts but the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Progress notifications from [`Storage::upload_dir_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadEvent {
    /// A file starts uploading.
    FileStarted {
        path: String,
        size: u64,
        multipart: bool,
    },
    /// `bytes` of `path` have been read, hashed and handed to the store.
    FileProgress { path: String, bytes: u64 },
    /// A file is fully stored and its receipt written.
    FileUploaded { path: String },
    /// A file was already stored with the same sha256 and is reused.
    FileSkipped { path: String },
    /// The manifest was written: the artifact is committed.
    Committed { prefix: String },
}

/// Callback receiving [`UploadEvent`]s.
pub type ProgressFn = Arc<dyn Fn(&UploadEvent) + Send + Sync>;

/// Tuning for [`Storage::upload_dir_with`].
#[derive(Clone)]
pub struct UploadOptions {
    /// Multipart part size in bytes; S3 needs at least [`MIN_PART_SIZE`] (default 8 MiB).
    pub part_size: usize,
    /// Files of at least this many bytes use a multipart upload; smaller ones a single put
    /// (read whole into memory, so keep it modest). Default: `part_size`.
    pub multipart_threshold: u64,
    /// Parts of one file in flight at once (default 4). Memory bound: about
    /// `(max_concurrency + 1) * part_size`.
    pub max_concurrency: usize,
    /// Optional progress callback.
    pub progress: Option<ProgressFn>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        let part_size = 8 * 1024 * 1024;
        UploadOptions {
            part_size,
            multipart_threshold: part_size as u64,
            max_concurrency: 4,
            progress: None,
        }
    }
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions")
            .field("part_size", &self.part_size)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("max_concurrency", &self.max_concurrency)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What [`Storage::upload_dir`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadReport {
    /// The manifest now committed at the prefix.
    pub manifest: Manifest,
    /// Files uploaded in this run (relative paths).
    pub uploaded: Vec<String>,
    /// Files of those uploaded with a multipart upload.
    pub multipart: Vec<String>,
    /// Files found already stored with the right digest and reused.
    pub skipped: Vec<String>,
}

impl UploadOptions {
    fn emit(&self, event: UploadEvent) {
        if let Some(progress) = &self.progress {
            progress(&event);
        }
    }
}

impl Storage {
    /// Uploads every file under `local_dir` to `prefix` and commits it with a `_SUCCESS`
    /// manifest, with [`UploadOptions::default`].
    pub async fn upload_dir(&self, local_dir: &FsPath, prefix: &str) -> Result<UploadReport> {
        self.upload_dir_with(local_dir, prefix, &UploadOptions::default())
            .await
    }

    /// [`Storage::upload_dir`] with explicit options.
    pub async fn upload_dir_with(
        &self,
        local_dir: &FsPath,
        prefix: &str,
        options: &UploadOptions,
    ) -> Result<UploadReport> {
        let base = self.artifact_key(prefix)?;
        if options.part_size == 0 || options.max_concurrency == 0 {
            return Err(StorageError::InvalidOptions {
                reason: "part_size and max_concurrency must be positive".to_string(),
            });
        }
        let files = local::walk_dir(local_dir)?;
        let old_manifest = self.existing_manifest(prefix).await?;
        let known = self.known_digests(&base, old_manifest.as_ref()).await?;
        let remote_sizes = self.remote_sizes(&base).await?;

        // Plan: which files are already stored with the right content?
        let mut entries: Vec<ManifestFile> = Vec::with_capacity(files.len());
        let mut to_upload: Vec<&LocalFile> = Vec::new();
        let mut skipped = Vec::new();
        for file in &files {
            let key = child_key(&base, &file.rel);
            let reusable = match known.get(&file.rel) {
                Some(known) => {
                    known.size == file.size && remote_sizes.get(&key) == Some(&file.size)
                }
                None => false,
            };
            if reusable {
                let (size, sha256) = local::hash_file(&file.abs).await?;
                if known.get(&file.rel).is_some_and(|k| k.sha256 == sha256) {
                    skipped.push(file.rel.clone());
                    entries.push(ManifestFile {
                        path: file.rel.clone(),
                        size,
                        sha256,
                    });
                    continue;
                }
            }
            to_upload.push(file);
        }

        if let Some(old) = &old_manifest {
            if to_upload.is_empty() && same_files(old, &entries) {
                tracing::info!(storage = %self.uri(), prefix, "artifact already committed with identical content");
                for path in &skipped {
                    options.emit(UploadEvent::FileSkipped { path: path.clone() });
                }
                return Ok(UploadReport {
                    manifest: old.clone(),
                    uploaded: Vec::new(),
                    multipart: Vec::new(),
                    skipped,
                });
            }
            // Un-commit before touching any file, so readers never see a manifest that
            // disagrees with the objects under it.
            let manifest_key = base.clone().join(MANIFEST_FILE);
            self.object_store()
                .delete(&manifest_key)
                .await
                .map_err(|e| StorageError::store(&manifest_key, e))?;
            tracing::info!(storage = %self.uri(), prefix, "replacing committed artifact");
        }
        if let Some(root) = self.local_root() {
            local::remove_stale_uploads(&root.join(base.as_ref()))?;
        }

        for path in &skipped {
            options.emit(UploadEvent::FileSkipped { path: path.clone() });
        }
        let mut uploaded = Vec::new();
        let mut multipart = Vec::new();
        for file in to_upload {
            let key = child_key(&base, &file.rel);
            let use_multipart = file.size >= options.multipart_threshold;
            options.emit(UploadEvent::FileStarted {
                path: file.rel.clone(),
                size: file.size,
                multipart: use_multipart,
            });
            let (size, sha256) = if use_multipart {
                self.put_multipart_file(&key, file, options).await?
            } else {
                self.put_small_file(&key, file).await?
            };
            let entry = ManifestFile {
                path: file.rel.clone(),
                size,
                sha256,
            };
            self.write_receipt(&base, &entry).await?;
            options.emit(UploadEvent::FileUploaded {
                path: file.rel.clone(),
            });
            uploaded.push(file.rel.clone());
            if use_multipart {
                multipart.push(file.rel.clone());
            }
            entries.push(entry);
        }

        let manifest = self.put_manifest(&base, Manifest::new(entries)).await?;
        options.emit(UploadEvent::Committed {
            prefix: prefix.to_string(),
        });
        tracing::info!(
            storage = %self.uri(), prefix, files = manifest.files.len(),
            bytes = manifest.total_bytes(), uploaded = uploaded.len(), skipped = skipped.len(),
            "artifact committed"
        );
        self.drop_receipts(&base).await;
        self.warn_about_strays(&base, &manifest, &remote_sizes);
        Ok(UploadReport {
            manifest,
            uploaded,
            multipart,
            skipped,
        })
    }

    /// Writes `_SUCCESS` only if it does not exist (a conditional put). If another writer
    /// committed meanwhile, its manifest is accepted when it lists the same files, and
    /// [`StorageError::CommitConflict`] is returned otherwise. Stores without conditional put
    /// get a plain put.
    async fn put_manifest(&self, base: &Path, manifest: Manifest) -> Result<Manifest> {
        let key = base.clone().join(MANIFEST_FILE);
        let payload = PutPayload::from(manifest.to_json());
        let create = PutOptions::from(PutMode::Create);
        match self
            .object_store()
            .put_opts(&key, payload.clone(), create)
            .await
        {
            Ok(_) => Ok(manifest),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let bytes = self
                    .object_store()
                    .get(&key)
                    .await
                    .map_err(|e| StorageError::store(&key, e))?
                    .bytes()
                    .await
                    .map_err(|e| StorageError::store(&key, e))?;
                let theirs = Manifest::from_json(key.as_ref(), &bytes)?;
                if same_files(&theirs, &manifest.files) {
                    tracing::info!(%key, "another writer committed identical content first");
                    Ok(theirs)
                } else {
                    Err(StorageError::CommitConflict {
                        key: key.to_string(),
                    })
                }
            }
            Err(object_store::Error::NotImplemented { .. }) => {
                self.object_store()
                    .put(&key, payload)
                    .await
                    .map_err(|e| StorageError::store(&key, e))?;
                Ok(manifest)
            }
            Err(e) => Err(StorageError::store(&key, e)),
        }
    }

    async fn existing_manifest(&self, prefix: &str) -> Result<Option<Manifest>> {
        match self.read_manifest(prefix).await {
            Ok(manifest) => Ok(Some(manifest)),
            Err(StorageError::NotCommitted { .. }) => Ok(None),
            Err(StorageError::InvalidManifest { key, reason }) => {
                tracing::warn!(%key, %reason, "ignoring unreadable manifest; re-uploading everything");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Digests recorded for the prefix: the committed manifest, overridden by receipts of a
    /// later (interrupted) upload.
    async fn known_digests(
        &self,
        base: &Path,
        manifest: Option<&Manifest>,
    ) -> Result<HashMap<String, ManifestFile>> {
        let mut known: HashMap<String, ManifestFile> = manifest
            .map(|m| {
                m.files
                    .iter()
                    .map(|f| (f.path.clone(), f.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let receipts_dir = base.clone().join(RECEIPTS_DIR);
        let receipts: Vec<object_store::ObjectMeta> = self
            .object_store()
            .list(Some(&receipts_dir))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(&receipts_dir, e))?;
        for meta in receipts {
            let bytes = match self.object_store().get(&meta.location).await {
                Ok(result) => result
                    .bytes()
                    .await
                    .map_err(|e| StorageError::store(&meta.location, e))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(StorageError::store(&meta.location, e)),
            };
            match serde_json::from_slice::<ManifestFile>(&bytes) {
                Ok(entry) if child_key(&receipts_dir, &entry.path) == meta.location => {
                    known.insert(entry.path.clone(), entry);
                }
                _ => tracing::warn!(key = %meta.location, "ignoring malformed upload receipt"),
            }
        }
        Ok(known)
    }

    async fn remote_sizes(&self, base: &Path) -> Result<HashMap<Path, u64>> {
        let metas: Vec<object_store::ObjectMeta> = self
            .object_store()
            .list(Some(base))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(base, e))?;
        Ok(metas.into_iter().map(|m| (m.location, m.size)).collect())
    }

    async fn put_small_file(&self, key: &Path, file: &LocalFile) -> Result<(u64, String)> {
        let data = tokio::fs::read(&file.abs)
            .await
            .map_err(|e| StorageError::io(&file.abs, e))?;
        let sha256 = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        self.object_store()
            .put(key, PutPayload::from(data))
            .await
            .map_err(|e| StorageError::store(key, e))?;
        Ok((size, sha256))
    }

    /// Streams a file in `part_size` parts, never holding more than the parts in flight.
    async fn put_multipart_file(
        &self,
        key: &Path,
        file: &LocalFile,
        options: &UploadOptions,
    ) -> Result<(u64, String)> {
        let mut reader = tokio::fs::File::open(&file.abs)
            .await
            .map_err(|e| StorageError::io(&file.abs, e))?;
        let upload = self
            .object_store()
            .put_multipart(key)
            .await
            .map_err(|e| StorageError::store(key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, options.part_size);
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        loop {
            if let Err(e) = writer.wait_for_capacity(options.max_concurrency).await {
                abort_quietly(writer, key).await;
                return Err(StorageError::store(key, e));
            }
            let part = match read_part(&mut reader, options.part_size).await {
                Ok(part) => part,
                Err(e) => {
                    abort_quietly(writer, key).await;
                    return Err(StorageError::io(&file.abs, e));
                }
            };
            if part.is_empty() {
                break;
            }
            hasher.update(&part);
            total += part.len() as u64;
            writer.put(part.freeze());
            options.emit(UploadEvent::FileProgress {
                path: file.rel.clone(),
                bytes: total,
            });
        }
        // `finish` aborts the upload itself when completing fails.
        writer
            .finish()
            .await
            .map_err(|e| StorageError::store(key, e))?;
        Ok((total, hex::encode(hasher.finalize())))
    }

    async fn write_receipt(&self, base: &Path, entry: &ManifestFile) -> Result<()> {
        let key = child_key(&base.clone().join(RECEIPTS_DIR), &entry.path);
        let json = serde_json::to_vec(entry).unwrap_or_default();
        self.object_store()
            .put(&key, PutPayload::from(json))
            .await
            .map_err(|e| StorageError::store(&key, e))?;
        Ok(())
    }

    /// Receipts are redundant once the manifest exists; failing to drop them is harmless.
    async fn drop_receipts(&self, base: &Path) {
        let receipts_dir = base.clone().join(RECEIPTS_DIR);
        let listed: std::result::Result<Vec<object_store::ObjectMeta>, _> = self
            .object_store()
            .list(Some(&receipts_dir))
            .try_collect()
            .await;
        match listed {
            Ok(metas) => {
                for meta in metas {
                    if let Err(e) = self.object_store().delete(&meta.location).await {
                        tracing::warn!(key = %meta.location, error = %e, "could not delete upload receipt");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(key = %receipts_dir, error = %e, "could not list upload receipts")
            }
        }
    }

    fn warn_about_strays(&self, base: &Path, manifest: &Manifest, remote: &HashMap<Path, u64>) {
        let receipts_dir = base.clone().join(RECEIPTS_DIR);
        let listed: std::collections::HashSet<Path> = manifest
            .files
            .iter()
            .map(|f| child_key(base, &f.path))
            .collect();
        let strays = remote
            .keys()
            .filter(|k| {
                !listed.contains(*k)
                    && **k != base.clone().join(MANIFEST_FILE)
                    && !k.prefix_matches(&receipts_dir)
            })
            .count();
        if strays > 0 {
            tracing::warn!(
                storage = %self.uri(), prefix = %base, strays,
                "objects under the artifact prefix are not in its manifest (left from an older \
                 upload); readers ignore them, delete_prefix removes them"
            );
        }
    }
}

/// `base` joined with a validated `/`-separated relative path.
pub(crate) fn child_key(base: &Path, rel: &str) -> Path {
    rel.split('/')
        .fold(base.clone(), |key, segment| key.join(segment))
}

fn same_files(manifest: &Manifest, entries: &[ManifestFile]) -> bool {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    manifest.files == sorted
}

/// Reads up to `size` bytes (fewer only at end of file).
async fn read_part(reader: &mut tokio::fs::File, size: usize) -> std::io::Result<BytesMut> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
    }
    Ok(buf)
}

async fn abort_quietly(writer: WriteMultipart, key: &Path) {
    if let Err(e) = writer.abort().await {
        tracing::warn!(%key, error = %e, "could not abort multipart upload; a bucket lifecycle rule will reap it");
    }
}
