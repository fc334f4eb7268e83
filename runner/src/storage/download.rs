//! `download_dir`: fetch a committed artifact, verifying every file against its manifest.
//!
//! Each file streams into a hidden temp file beside its destination while being hashed; only a
//! file whose size and sha256 match the manifest is renamed into place. A mismatch removes the
//! temp file and fails with [`StorageError::DigestMismatch`] / [`StorageError::SizeMismatch`].
//! Files already present locally with the right size and digest are reused, so an interrupted
//! download resumes file by file.

use std::path::Path as FsPath;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::{Result, StorageError};
use super::local::{self, TempFile};
use super::manifest::{Manifest, ManifestFile};
use super::store::Storage;
use super::upload::child_key;

/// What [`Storage::download_dir`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadReport {
    /// The manifest the download was verified against.
    pub manifest: Manifest,
    /// Files fetched from the store.
    pub downloaded: Vec<String>,
    /// Files already present locally with the right digest.
    pub reused: Vec<String>,
}

impl Storage {
    /// Downloads the committed artifact at `prefix` into `local_dir` (created if missing).
    ///
    /// Fails with [`StorageError::NotCommitted`] when the prefix has no manifest.
    pub async fn download_dir(&self, prefix: &str, local_dir: &FsPath) -> Result<DownloadReport> {
        let manifest = self.read_manifest(prefix).await?;
        let base = self.artifact_key(prefix)?;
        tokio::fs::create_dir_all(local_dir)
            .await
            .map_err(|e| StorageError::io(local_dir, e))?;
        let mut downloaded = Vec::new();
        let mut reused = Vec::new();
        for entry in &manifest.files {
            let dest = local::join_relative(local_dir, &entry.path);
            if already_present(&dest, entry).await {
                reused.push(entry.path.clone());
                continue;
            }
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| StorageError::io(parent, e))?;
            }
            let key = child_key(&base, &entry.path);
            self.fetch_verified(&key, entry, &dest).await?;
            downloaded.push(entry.path.clone());
        }
        tracing::info!(
            storage = %self.uri(), prefix, files = manifest.files.len(),
            downloaded = downloaded.len(), reused = reused.len(), "artifact downloaded"
        );
        Ok(DownloadReport {
            manifest,
            downloaded,
            reused,
        })
    }

    async fn fetch_verified(
        &self,
        key: &object_store::path::Path,
        entry: &ManifestFile,
        dest: &FsPath,
    ) -> Result<()> {
        let rel_key = self.relative(key);
        let temp = TempFile::beside(dest);
        let mut out = tokio::fs::File::create(temp.path())
            .await
            .map_err(|e| StorageError::io(temp.path(), e))?;
        let result = self
            .object_store()
            .get(key)
            .await
            .map_err(|e| StorageError::store(&rel_key, e))?;
        let mut stream = result.into_stream();
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| StorageError::store(&rel_key, e))?;
            hasher.update(&chunk);
            total += chunk.len() as u64;
            if total > entry.size {
                // Stop early: no need to stream a replaced multi-GB object to the end.
                return Err(StorageError::SizeMismatch {
                    key: rel_key,
                    expected: entry.size,
                    actual: total,
                });
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| StorageError::io(temp.path(), e))?;
        }
        if total != entry.size {
            return Err(StorageError::SizeMismatch {
                key: rel_key,
                expected: entry.size,
                actual: total,
            });
        }
        let actual = hex::encode(hasher.finalize());
        if actual != entry.sha256 {
            return Err(StorageError::DigestMismatch {
                key: rel_key,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        out.flush()
            .await
            .map_err(|e| StorageError::io(temp.path(), e))?;
        out.sync_all()
            .await
            .map_err(|e| StorageError::io(temp.path(), e))?;
        drop(out);
        temp.persist(dest)
    }
}

/// A local file with the manifest's size and sha256 need not be fetched again.
async fn already_present(dest: &FsPath, entry: &ManifestFile) -> bool {
    match tokio::fs::metadata(dest).await {
        Ok(meta) if meta.is_file() && meta.len() == entry.size => {
            matches!(local::hash_file(dest).await, Ok((_, sha)) if sha == entry.sha256)
        }
        _ => false,
    }
}
