//! Plain object operations: small blobs, listing and prefix deletion.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, PutPayload};

use super::error::{Result, StorageError};
use super::manifest::MANIFEST_FILE;
use super::store::Storage;

/// One stored object, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the storage root, `/`-separated (segments as stored, i.e. percent-encoded
    /// where `object_store` encodes unusual characters).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: chrono::DateTime<chrono::Utc>,
}

impl Storage {
    /// Writes a small object in one request (atomic: readers see the old or the new content).
    ///
    /// Meant for small JSON results; use [`Storage::upload_dir`] for model files.
    pub async fn put_bytes(&self, key: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let path = self.key(key)?;
        if path.as_ref().is_empty() {
            return Err(StorageError::InvalidKey {
                key: key.to_string(),
                reason: "an object key must not be empty".to_string(),
            });
        }
        self.object_store()
            .put(&path, PutPayload::from(bytes.into()))
            .await
            .map_err(|e| StorageError::store(&path, e))?;
        Ok(())
    }

    /// Reads a whole object into memory. Missing objects give [`StorageError::NotFound`].
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let path = self.key(key)?;
        let result = self
            .object_store()
            .get(&path)
            .await
            .map_err(|e| StorageError::store(&path, e))?;
        result
            .bytes()
            .await
            .map_err(|e| StorageError::store(&path, e))
    }

    /// Lists every object under `prefix` (recursively), sorted by key. `""` lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let path = self.key(prefix)?;
        let metas: Vec<object_store::ObjectMeta> = self
            .object_store()
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(&path, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.relative(&m.location),
                size: m.size,
                last_modified: m.last_modified,
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes every object under an artifact prefix; returns how many were deleted.
    ///
    /// The `_SUCCESS` manifest is deleted first, so an interrupted deletion leaves an
    /// uncommitted prefix, never a committed artifact with missing files.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let base = self.artifact_key(prefix)?;
        let manifest = base.clone().join(MANIFEST_FILE);
        let mut deleted = 0;
        match self.object_store().delete(&manifest).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(StorageError::store(&manifest, e)),
        }
        let locations = self
            .object_store()
            .list(Some(&base))
            .map_ok(|m| m.location)
            .filter(move |location| {
                let keep = !matches!(location, Ok(l) if *l == manifest);
                std::future::ready(keep)
            })
            .boxed();
        let mut results = self.object_store().delete_stream(locations);
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StorageError::store(&base, e)),
            }
        }
        if let Some(root) = self.local_root() {
            super::local::remove_stale_uploads(&root.join(base.as_ref()))?;
        }
        // The prefix's writer lease generations go with it.
        let leases = self.lease_dir(prefix)?;
        let lease_keys: Vec<object_store::ObjectMeta> = self
            .object_store()
            .list(Some(&leases))
            .try_collect()
            .await
            .map_err(|e| StorageError::store(&leases, e))?;
        for meta in lease_keys {
            match self.object_store().delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(StorageError::store(&meta.location, e)),
            }
        }
        tracing::info!(storage = %self.uri(), prefix, deleted, "deleted artifact prefix");
        Ok(deleted)
    }
}
