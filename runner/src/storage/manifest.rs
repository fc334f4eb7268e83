//! The `_SUCCESS` manifest: the commit record of an artifact.
//!
//! An artifact prefix counts as committed exactly when `<prefix>/_SUCCESS` exists. It is written
//! last, after every file it lists, and lists each file's relative path, size and sha256.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::{Result, StorageError};
use super::store::Storage;
use super::uri::check_segment;

/// Name of the manifest object under an artifact prefix.
pub const MANIFEST_FILE: &str = "_SUCCESS";
/// Name of the directory holding per-file upload receipts while an upload is in progress.
pub const RECEIPTS_DIR: &str = "_pruneforge_receipts";
/// Format tag written into every manifest.
pub const MANIFEST_FORMAT: &str = "pruneforge.artifact/v1";
/// The writer recorded in manifests written by this build.
pub const WRITER: &str = concat!("pruneforge ", env!("CARGO_PKG_VERSION"));

/// The committed content of an artifact prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Program and version that wrote the artifact.
    pub writer: String,
    /// Commit time, RFC 3339 UTC.
    pub created: String,
    /// Files of the artifact, sorted by path.
    pub files: Vec<ManifestFile>,
}

/// One file of an artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path relative to the artifact prefix, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
}

impl Manifest {
    /// A manifest for `files`, stamped with the current time and this writer.
    pub fn new(mut files: Vec<ManifestFile>) -> Self {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest {
            format: MANIFEST_FORMAT.to_string(),
            writer: WRITER.to_string(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            files,
        }
    }

    /// Sum of all file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The entry for `path`, if listed.
    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Parses and validates manifest JSON read from `key`.
    pub fn from_json(key: &str, bytes: &[u8]) -> Result<Self> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| StorageError::InvalidManifest {
                key: key.to_string(),
                reason: format!("not valid manifest JSON: {e}"),
            })?;
        manifest.validate(key)?;
        Ok(manifest)
    }

    /// Checks the format tag, that paths are safe relative paths, unique and not reserved, and
    /// that digests are 64 lower-case hex digits.
    pub fn validate(&self, key: &str) -> Result<()> {
        let invalid = |reason: String| StorageError::InvalidManifest {
            key: key.to_string(),
            reason,
        };
        if self.format != MANIFEST_FORMAT {
            return Err(invalid(format!(
                "format is `{}`, expected `{MANIFEST_FORMAT}`: it was written by an incompatible \
                 writer; re-run the stage with this version",
                self.format
            )));
        }
        let mut seen = HashSet::new();
        for file in &self.files {
            validate_relative_path(&file.path).map_err(&invalid)?;
            if !seen.insert(file.path.as_str()) {
                return Err(invalid(format!("file `{}` is listed twice", file.path)));
            }
            if file.sha256.len() != 64
                || !file
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(invalid(format!(
                    "sha256 of `{}` is `{}`, not 64 lower-case hex digits",
                    file.path, file.sha256
                )));
            }
        }
        Ok(())
    }

    /// Pretty JSON for storage.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// A file path inside an artifact: relative, `/`-separated, no `.`/`..`/empty segments, and not
/// one of the reserved top-level names.
pub(crate) fn validate_relative_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "path `{path}` must be a non-empty relative path without leading or trailing `/`"
        ));
    }
    for segment in path.split('/') {
        check_segment(segment).map_err(|e| format!("path `{path}`: {e}"))?;
        if segment.contains('\\') {
            return Err(format!("path `{path}` must use `/` separators, not `\\`"));
        }
    }
    let top = path.split('/').next().unwrap_or(path);
    if top == MANIFEST_FILE || top == RECEIPTS_DIR {
        return Err(format!(
            "`{top}` is reserved for the storage layer's own bookkeeping: rename that file"
        ));
    }
    Ok(())
}

impl Storage {
    /// Whether `prefix` holds a committed artifact (its `_SUCCESS` manifest exists).
    pub async fn is_committed(&self, prefix: &str) -> Result<bool> {
        let key = self.artifact_key(prefix)?.join(MANIFEST_FILE);
        match object_store::ObjectStoreExt::head(self.object_store().as_ref(), &key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StorageError::store(&key, source)),
        }
    }

    /// Reads and validates the manifest of a committed artifact.
    ///
    /// Errors with [`StorageError::NotCommitted`] when `prefix` has no manifest.
    pub async fn read_manifest(&self, prefix: &str) -> Result<Manifest> {
        let key = self.artifact_key(prefix)?.join(MANIFEST_FILE);
        let rel = self.relative(&key);
        match self.get_bytes(&rel).await {
            Ok(bytes) => Manifest::from_json(&rel, &bytes),
            Err(StorageError::NotFound { .. }) => Err(StorageError::NotCommitted {
                prefix: prefix.to_string(),
            }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size: 1,
            sha256: "a".repeat(64),
        }
    }

    #[test]
    fn round_trip_and_validation() {
        let m = Manifest::new(vec![entry("b/c.json"), entry("a.bin")]);
        assert_eq!(m.files[0].path, "a.bin");
        let parsed = Manifest::from_json("k", &m.to_json()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.total_bytes(), 2);

        for bad in [
            "../x",
            "/abs",
            "a//b",
            "_SUCCESS",
            "_pruneforge_receipts/x",
            "a\\b",
        ] {
            let m = Manifest::new(vec![entry(bad)]);
            assert!(m.validate("k").is_err(), "{bad} accepted");
        }
        let dup = Manifest::new(vec![entry("x"), entry("x")]);
        assert!(dup.validate("k").unwrap_err().to_string().contains("twice"));
        let mut wrong = Manifest::new(vec![entry("x")]);
        wrong.files[0].sha256 = "XYZ".into();
        assert!(wrong.validate("k").is_err());
        assert!(Manifest::from_json("k", b"{").is_err());
    }
}
