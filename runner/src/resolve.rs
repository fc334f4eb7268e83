//! One place where a reference a user wrote becomes a local path: `builtin:NAME` (a data set
//! shipped with pruneforge, under the data root), a plain path or `file://PATH`, or an
//! object-store URI (`s3://`, `gs://`, `az://`/`azure://`) downloaded into a cache directory.
//!
//! Every data set reference (calibration, SFT sets, eval tasks, drift and speculation
//! prompts) and every model source of `import` goes through [`Resolver::resolve`]. An
//! object-store URI may name one object (a file) or a prefix (a directory, e.g. MMLU's
//! per-subject CSV files or an HF model directory); a prefix committed by pruneforge (with a
//! `_SUCCESS` manifest) is downloaded with every file's digest verified.

use crate::data::{DataError, DataRoot};
use crate::storage::{BlockingStorage, StorageError};
use crate::util::fs::{write_atomic, StagingDir};
use pruneforge_api::builtin::{BuiltinDataset, BUILTIN_PREFIX};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Object-store URI schemes the resolver downloads from.
pub const REMOTE_SCHEMES: [&str; 4] = ["s3://", "gs://", "az://", "azure://"];

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No data root.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    UnknownBuiltin(#[from] pruneforge_api::builtin::UnknownBuiltin),
    #[error("{uri}: {source}")]
    Storage {
        uri: String,
        #[source]
        source: StorageError,
    },
    #[error("{uri}: nothing is stored there (no object, and no object below it as a prefix)")]
    NotFound { uri: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{uri}`: {message}")]
    Invalid { uri: String, message: String },
}

pub type Result<T, E = ResolveError> = std::result::Result<T, E>;

/// Where references become local paths: the data root for `builtin:` names and a cache
/// directory for downloads.
#[derive(Debug, Clone)]
pub struct Resolver {
    data_root: Option<DataRoot>,
    cache: PathBuf,
}

/// Whether `uri` names object storage (and is downloaded).
pub fn is_remote(uri: &str) -> bool {
    REMOTE_SCHEMES.iter().any(|s| uri.starts_with(s))
}

impl Resolver {
    /// `data_root`: where `builtin:` data sets live (`None`: found by [`DataRoot::discover`] on
    /// first use); `cache`: where downloads go.
    pub fn new(data_root: Option<DataRoot>, cache: impl Into<PathBuf>) -> Self {
        Resolver {
            data_root,
            cache: cache.into(),
        }
    }

    /// For commands on this machine: the data root discovered, downloads under the user cache
    /// (`$PRUNEFORGE_CACHE/data`).
    pub fn local() -> Self {
        Self::new(None, crate::util::fs::cache_dir().join("data"))
    }

    /// The same resolver with another data root.
    pub fn with_data_root(mut self, data_root: Option<DataRoot>) -> Self {
        self.data_root = data_root;
        self
    }

    /// The data root: the one given, else the discovered one.
    pub fn data_root(&self) -> Result<DataRoot> {
        match &self.data_root {
            Some(root) => Ok(root.clone()),
            None => Ok(DataRoot::discover()?),
        }
    }

    /// The file (or directory) of a shipped data set.
    pub fn builtin(&self, dataset: BuiltinDataset) -> Result<PathBuf> {
        Ok(self.data_root()?.join(dataset.relative_path()))
    }

    /// A local path for `uri`: a `builtin:` name, a plain path, `file://PATH`, or an
    /// object-store URI (downloaded; a prefix becomes a directory).
    pub fn resolve(&self, uri: &str) -> Result<PathBuf> {
        if let Some(parsed) = BuiltinDataset::from_uri(uri) {
            return self.builtin(parsed?);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if path.is_empty() {
                return Err(invalid(uri, "no path after file://"));
            }
            return Ok(PathBuf::from(path));
        }
        if is_remote(uri) {
            return self.download(uri);
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(invalid(
                uri,
                &format!(
                    "scheme {scheme}:// is not supported; use builtin:NAME, a path, file://PATH, \
                     s3://, gs:// or az://"
                ),
            ));
        }
        if uri.is_empty() {
            return Err(invalid(uri, "empty reference"));
        }
        Ok(PathBuf::from(uri))
    }

    /// The file `file_name` beside what `uri` names (e.g. PIQA's labels beside its items),
    /// resolved like `uri`.
    pub fn resolve_sibling(&self, uri: &str, file_name: &str) -> Result<PathBuf> {
        if uri.starts_with(BUILTIN_PREFIX) {
            let path = self.resolve(uri)?;
            return Ok(path.with_file_name(file_name));
        }
        match uri.trim_end_matches('/').rsplit_once('/') {
            Some((parent, _)) if !parent.ends_with(':') && !parent.ends_with(":/") => {
                self.resolve(&format!("{parent}/{file_name}"))
            }
            _ => Ok(Path::new(uri).with_file_name(file_name)),
        }
    }

    /// Downloads the object or prefix at `uri` into the cache and returns its local path. A
    /// fresh copy is fetched every time (a changed object is never served stale); it replaces
    /// the old one atomically.
    fn download(&self, uri: &str) -> Result<PathBuf> {
        let trimmed = uri.trim_end_matches('/');
        let (parent, key) =
            match trimmed.rsplit_once('/') {
                Some((p, k)) if !p.ends_with(':') && !p.ends_with(":/") && !k.is_empty() => (p, k),
                _ => return Err(invalid(
                    uri,
                    "name an object or a prefix below the bucket, e.g. s3://bucket/data/set.jsonl",
                )),
            };
        let digest = hex::encode(Sha256::digest(trimmed.as_bytes()));
        let local = self.cache.join(&digest[..16]).join(key);
        let st = |source| ResolveError::Storage {
            uri: uri.to_string(),
            source,
        };
        let store = BlockingStorage::open(parent).map_err(st)?;
        // One object at the URI?
        match store.get_bytes(key) {
            Ok(bytes) => {
                write_atomic(&local, &bytes).map_err(|e| io(&local, e))?;
                tracing::debug!(uri, path = %local.display(), bytes = bytes.len(), "downloaded");
                return Ok(local);
            }
            Err(StorageError::NotFound { .. }) => {}
            Err(source) => return Err(st(source)),
        }
        // A prefix: a directory of objects (verified against its manifest when committed).
        let staging = StagingDir::new(&local).map_err(|e| io(&local, e))?;
        if store.is_committed(key).map_err(st)? {
            store.download_dir(key, staging.path()).map_err(st)?;
        } else {
            let objects = store.list(key).map_err(st)?;
            if objects.is_empty() {
                return Err(ResolveError::NotFound {
                    uri: uri.to_string(),
                });
            }
            let below = format!("{key}/");
            for o in objects {
                let Some(rel) = o.key.strip_prefix(&below) else {
                    continue;
                };
                let bytes = store.get_bytes(&o.key).map_err(st)?;
                let path = staging.path().join(rel);
                write_atomic(&path, &bytes).map_err(|e| io(&path, e))?;
            }
        }
        let local = staging.commit().map_err(|e| io(&local, e))?;
        tracing::debug!(uri, path = %local.display(), "downloaded a prefix");
        Ok(local)
    }
}

fn invalid(uri: &str, message: &str) -> ResolveError {
    ResolveError::Invalid {
        uri: uri.to_string(),
        message: message.to_string(),
    }
}

fn io(path: &Path, source: std::io::Error) -> ResolveError {
    ResolveError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(root: &Path) -> Resolver {
        Resolver::new(Some(DataRoot::new(root)), root.join("cache"))
    }

    #[test]
    fn local_references() {
        let r = resolver(Path::new("/data"));
        assert_eq!(
            r.resolve("builtin:alpaca").unwrap(),
            PathBuf::from("/data/alpaca/alpaca_5000.json")
        );
        assert_eq!(
            r.resolve("file:///x/y.jsonl").unwrap(),
            PathBuf::from("/x/y.jsonl")
        );
        assert_eq!(
            r.resolve("rel/y.jsonl").unwrap(),
            PathBuf::from("rel/y.jsonl")
        );
        let err = r.resolve("builtin:dolly").unwrap_err().to_string();
        assert!(err.contains("dolly"), "{err}");
        let err = r.resolve("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("ftp:// is not supported"), "{err}");
        assert!(r.resolve("").is_err());
        assert!(r.resolve("file://").is_err());
    }

    #[test]
    fn siblings() {
        let r = resolver(Path::new("/data"));
        assert_eq!(
            r.resolve_sibling("/d/valid.jsonl", "valid-labels.lst")
                .unwrap(),
            PathBuf::from("/d/valid-labels.lst")
        );
        assert_eq!(
            r.resolve_sibling("builtin:piqa", "valid-labels.public.lst")
                .unwrap(),
            PathBuf::from("/data/piqa/valid-labels.public.lst")
        );
    }

    #[test]
    fn files_and_prefixes_in_object_storage() {
        // A local object store reached through file:// works like S3 (tested against moto in
        // tests/storage_s3.rs); here the same code paths run on the `fs` backend.
        let tmp = tempfile::tempdir().unwrap();
        let store_dir = tmp.path().join("bucket");
        std::fs::create_dir_all(store_dir.join("sets/mmlu")).unwrap();
        std::fs::write(store_dir.join("sets/a.jsonl"), "{\"x\":1}\n").unwrap();
        std::fs::write(store_dir.join("sets/mmlu/a_test.csv"), "q,a,b,c,d,A\n").unwrap();
        let r = resolver(tmp.path());
        let root = crate::storage::StorageUri::Local { root: store_dir }.to_string();
        let file = r.download(&format!("{root}/sets/a.jsonl")).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"x\":1}\n");
        let dir = r.download(&format!("{root}/sets/mmlu")).unwrap();
        assert!(dir.join("a_test.csv").is_file());
        let err = r.download(&format!("{root}/sets/none")).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
    }
}
