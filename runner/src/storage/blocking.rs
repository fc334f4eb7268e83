//! Synchronous wrappers for the runner's (synchronous) stage code.
//!
//! [`BlockingStorage`] owns a current-thread tokio runtime and drives every [`Storage`] call on
//! it. Keep one `BlockingStorage` per process or stage and reuse it: HTTP connection pools
//! belong to the runtime that created them.

use std::future::Future;
use std::path::Path;

use bytes::Bytes;

use super::download::DownloadReport;
use super::error::{Result, StorageError};
use super::lease::{LeaseOptions, LeaseOutcome, WriterLease};
use super::manifest::Manifest;
use super::objects::ObjectInfo;
use super::store::Storage;
use super::upload::{UploadOptions, UploadReport};

/// Runs `future` to completion on a fresh current-thread runtime.
///
/// Works from plain threads and from inside an async runtime (there it runs on a helper
/// thread, blocking the caller, instead of panicking). Prefer [`BlockingStorage`] for repeated
/// calls: connection pools live as long as the runtime that made them.
pub fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    if inside_runtime() {
        return std::thread::scope(|scope| {
            scope
                .spawn(|| Ok(new_runtime()?.block_on(future)))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
    }
    Ok(new_runtime()?.block_on(future))
}

fn inside_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StorageError::Runtime)
}

/// [`Storage`] with blocking methods.
#[derive(Debug)]
pub struct BlockingStorage {
    storage: Storage,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

impl BlockingStorage {
    /// Opens `uri` like [`Storage::open`] (credentials from the environment).
    pub fn open(uri: &str) -> Result<Self> {
        Self::new(Storage::open(uri)?)
    }

    /// Wraps an opened [`Storage`].
    pub fn new(storage: Storage) -> Result<Self> {
        Ok(BlockingStorage {
            storage,
            runtime: Some(new_runtime()?),
        })
    }

    /// The async storage inside.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Drives `future` on the owned runtime; from inside another runtime, on a helper thread.
    fn run<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is only taken in drop");
        if inside_runtime() {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| runtime.block_on(future))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        } else {
            runtime.block_on(future)
        }
    }

    /// See [`Storage::upload_dir`].
    pub fn upload_dir(&self, local_dir: &Path, prefix: &str) -> Result<UploadReport> {
        self.run(self.storage.upload_dir(local_dir, prefix))
    }

    /// See [`Storage::upload_dir_with`].
    pub fn upload_dir_with(
        &self,
        local_dir: &Path,
        prefix: &str,
        options: &UploadOptions,
    ) -> Result<UploadReport> {
        self.run(self.storage.upload_dir_with(local_dir, prefix, options))
    }

    /// See [`Storage::download_dir`].
    pub fn download_dir(&self, prefix: &str, local_dir: &Path) -> Result<DownloadReport> {
        self.run(self.storage.download_dir(prefix, local_dir))
    }

    /// See [`Storage::is_committed`].
    pub fn is_committed(&self, prefix: &str) -> Result<bool> {
        self.run(self.storage.is_committed(prefix))
    }

    /// See [`Storage::read_manifest`].
    pub fn read_manifest(&self, prefix: &str) -> Result<Manifest> {
        self.run(self.storage.read_manifest(prefix))
    }

    /// See [`Storage::put_bytes`].
    pub fn put_bytes(&self, key: &str, bytes: impl Into<Bytes>) -> Result<()> {
        let bytes: Bytes = bytes.into();
        self.run(self.storage.put_bytes(key, bytes))
    }

    /// See [`Storage::get_bytes`].
    pub fn get_bytes(&self, key: &str) -> Result<Bytes> {
        self.run(self.storage.get_bytes(key))
    }

    /// See [`Storage::list`].
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.run(self.storage.list(prefix))
    }

    /// See [`Storage::delete_prefix`].
    pub fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        self.run(self.storage.delete_prefix(prefix))
    }

    /// See [`Storage::acquire_writer_lease`].
    pub fn acquire_writer_lease(
        &self,
        prefix: &str,
        holder: &str,
        options: &LeaseOptions,
    ) -> Result<LeaseOutcome> {
        self.run(self.storage.acquire_writer_lease(prefix, holder, options))
    }

    /// See [`WriterLease::check_held`].
    pub fn check_lease_held(&self, lease: &WriterLease) -> Result<()> {
        self.run(lease.check_held())
    }
}

impl Drop for BlockingStorage {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; shut it down in the background.
        if let Some(runtime) = self.runtime.take() {
            if inside_runtime() {
                runtime.shutdown_background();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn works_inside_and_outside_a_runtime() {
        assert_eq!(block_on(async { 2 }).unwrap(), 2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inner = rt.block_on(async { block_on(async { 1 }) });
        assert_eq!(inner.unwrap(), 1);
        let dir = std::env::temp_dir().join(format!("pf-blocking-{}", std::process::id()));
        let storage = BlockingStorage::open(dir.to_str().unwrap()).unwrap();
        rt.block_on(async {
            storage.put_bytes("a/b.json", &b"{}"[..]).unwrap();
            assert_eq!(&storage.get_bytes("a/b.json").unwrap()[..], b"{}");
            drop(storage);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
