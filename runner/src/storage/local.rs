//! Local filesystem helpers: walking an artifact directory, hashing files, temp-file cleanup.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::error::{Result, StorageError};
use super::manifest::validate_relative_path;

/// Read buffer for hashing and streaming.
pub(crate) const READ_CHUNK: usize = 1 << 20;

/// A regular file found under an artifact directory.
#[derive(Clone, Debug)]
pub(crate) struct LocalFile {
    /// Path relative to the artifact directory, `/`-separated.
    pub rel: String,
    /// Absolute (or caller-relative) path on disk.
    pub abs: PathBuf,
    /// Size when walked.
    pub size: u64,
}

/// Every regular file under `dir`, recursively, sorted by relative path.
///
/// Symlinks to files are followed; symlinks to directories are refused (they could loop).
pub(crate) fn walk_dir(dir: &Path) -> Result<Vec<LocalFile>> {
    let meta = std::fs::metadata(dir).map_err(|e| StorageError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(StorageError::InvalidLocalFile {
            path: dir.to_path_buf(),
            reason:
                "not a directory: upload_dir takes the directory that holds the artifact's files"
                    .to_string(),
        });
    }
    let mut out = Vec::new();
    walk_into(dir, dir, &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

fn walk_into(base: &Path, dir: &Path, out: &mut Vec<LocalFile>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let path = entry.path();
        let link_meta = entry.metadata().map_err(|e| StorageError::io(&path, e))?;
        let meta = if link_meta.file_type().is_symlink() {
            let target = std::fs::metadata(&path).map_err(|e| StorageError::io(&path, e))?;
            if target.is_dir() {
                return Err(StorageError::InvalidLocalFile {
                    path,
                    reason: "symlinks to directories are not followed: copy the directory instead"
                        .to_string(),
                });
            }
            target
        } else {
            link_meta
        };
        if meta.is_dir() {
            walk_into(base, &path, out)?;
        } else if meta.is_file() {
            let rel = relative_string(base, &path)?;
            validate_relative_path(&rel).map_err(|reason| StorageError::InvalidLocalFile {
                path: path.clone(),
                reason,
            })?;
            out.push(LocalFile {
                rel,
                abs: path,
                size: meta.len(),
            });
        } else {
            return Err(StorageError::InvalidLocalFile {
                path,
                reason: "not a regular file or directory (socket, fifo or device)".to_string(),
            });
        }
    }
    Ok(())
}

fn relative_string(base: &Path, path: &Path) -> Result<String> {
    let invalid = |reason: &str| StorageError::InvalidLocalFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let rel = path
        .strip_prefix(base)
        .map_err(|_| invalid("file is outside the artifact directory"))?;
    let mut parts = Vec::new();
    for component in rel.components() {
        let part = component
            .as_os_str()
            .to_str()
            .ok_or_else(|| invalid("file name is not valid UTF-8: rename it"))?;
        parts.push(part);
    }
    Ok(parts.join("/"))
}

/// `dir` joined with a validated `/`-separated relative path.
pub(crate) fn join_relative(dir: &Path, rel: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for segment in rel.split('/') {
        out.push(segment);
    }
    out
}

/// Streams `path` through sha256; returns (bytes read, lower-case hex digest).
pub(crate) async fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| StorageError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

/// Removes `object_store` LocalFileSystem multipart staging files (`<name>#<digits>`) under
/// `dir`, left behind when a writer process died mid-upload. Our own keys never end in
/// `#<digits>` (`#` is percent-encoded in keys), so only staging files match.
pub(crate) fn remove_stale_uploads(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| StorageError::io(&path, e))?;
        if file_type.is_dir() {
            removed += remove_stale_uploads(&path)?;
        } else if is_staging_name(&entry.file_name().to_string_lossy()) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed stale multipart staging file");
                    removed += 1;
                }
                // Its own upload's drop handler may have removed it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(&path, e)),
            }
        }
    }
    Ok(removed)
}

fn is_staging_name(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((_, suffix)) => !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// A temporary download file that is removed on drop unless [`TempFile::persist`] renamed it.
pub(crate) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// A fresh hidden name next to `dest` (same directory, so the final rename is atomic).
    pub(crate) fn beside(dest: &Path) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmp_name = format!(".{name}.partial-{}-{nanos}-{n}", std::process::id());
        TempFile {
            path: Some(dest.with_file_name(tmp_name)),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Atomically renames the temp file onto `dest`.
    pub(crate) fn persist(mut self, dest: &Path) -> Result<()> {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::rename(&path, dest) {
                let _ = std::fs::remove_file(&path);
                return Err(StorageError::io(dest, e));
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("model.safetensors#1"));
        assert!(is_staging_name("a#23"));
        assert!(!is_staging_name("a#"));
        assert!(!is_staging_name("a#b1"));
        assert!(!is_staging_name("config.json"));
    }
}
