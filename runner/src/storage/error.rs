//! The typed error of the storage layer. Every variant says what went wrong and what to do.

use std::path::PathBuf;

/// Result alias for the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or writing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URI names a scheme we do not support.
    #[error(
        "unsupported storage URI scheme `{scheme}` in `{uri}`: use file:///abs/path, a plain local path, \
         s3://bucket/prefix, gs://bucket/prefix or az://container/prefix (azure:// also works)"
    )]
    UnsupportedScheme { uri: String, scheme: String },

    /// The URI has a supported scheme but cannot be used as written.
    #[error("malformed storage URI `{uri}`: {reason}")]
    MalformedUri { uri: String, reason: String },

    /// An artifact prefix or key given by the caller is not a valid relative key.
    #[error("invalid storage key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },

    /// Upload options that cannot work.
    #[error("invalid upload options: {reason}")]
    InvalidOptions { reason: String },

    /// The object store for a backend could not be built from the environment.
    #[error("cannot open {backend} storage for `{uri}`: {source}. {hint}")]
    Configure {
        backend: &'static str,
        uri: String,
        hint: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },

    /// S3 endpoint is plain http:// but http was not allowed.
    #[error(
        "S3 endpoint `{endpoint}` uses http:// but plain http is not allowed: set AWS_ALLOW_HTTP=true \
         (only for local S3-compatible servers such as MinIO or moto) or use an https:// endpoint"
    )]
    HttpNotAllowed { endpoint: String },

    /// The prefix has no `_SUCCESS` manifest: the writer never finished.
    #[error(
        "artifact `{prefix}` is not committed (no `_SUCCESS` manifest): the stage that writes it did not \
         finish or is still running; re-run that stage"
    )]
    NotCommitted { prefix: String },

    /// A downloaded file's sha256 differs from the one recorded in the manifest.
    #[error(
        "sha256 mismatch for `{key}`: manifest records {expected}, stored object hashes to {actual}; the \
         object was changed after the artifact was committed — re-run the stage that wrote it"
    )]
    DigestMismatch {
        key: String,
        expected: String,
        actual: String,
    },

    /// A downloaded file's size differs from the one recorded in the manifest.
    #[error(
        "size mismatch for `{key}`: manifest records {expected} bytes, stored object has {actual}; the \
         object was changed after the artifact was committed — re-run the stage that wrote it"
    )]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },

    /// The `_SUCCESS` manifest cannot be parsed or breaks a rule.
    #[error("invalid artifact manifest `{key}`: {reason}")]
    InvalidManifest { key: String, reason: String },

    /// A local file or directory cannot be stored as an artifact file.
    #[error("cannot store local file `{path}`: {reason}")]
    InvalidLocalFile { path: PathBuf, reason: String },

    /// A requested object does not exist.
    #[error("object `{key}` not found")]
    NotFound { key: String },

    /// Local filesystem I/O failed.
    #[error("local I/O error on `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The object store reported an error.
    #[error("object store error on `{key}`: {source}")]
    Store {
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// Another writer took over the artifact prefix while this one held its lease (this one
    /// stalled past the lease ttl); this writer must not commit.
    #[error(
        "lost the writer lease of `{prefix}` (held generation {generation}, current {current}): \
         another writer took over after this one stalled; its result is discarded, the other \
         writer's commit counts"
    )]
    LeaseLost {
        prefix: String,
        generation: u64,
        current: u64,
    },

    /// Another writer committed different content at the same prefix in the meantime.
    #[error(
        "another writer committed `{key}` with different content while this one uploaded; the \
         objects under it may be mixed: delete the prefix and run the stage again"
    )]
    CommitConflict { key: String },

    /// The runtime for the blocking wrappers could not be created.
    #[error("cannot start the storage runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    /// Maps an object store error on `key`, turning "not found" into [`StorageError::NotFound`].
    pub(crate) fn store(key: impl std::fmt::Display, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound {
                key: key.to_string(),
            },
            source => StorageError::Store {
                key: key.to_string(),
                source: Box::new(source),
            },
        }
    }
}
