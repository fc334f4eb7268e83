//! The data root (where the shipped datasets live) and the resolution of `builtin:` dataset
//! names under it. The names and their paths are the API's ([`BuiltinDataset`]).
//!
//! The data root is, in order: `$PRUNEFORGE_DATA_DIR`; `../shared/data` relative to the
//! current directory; `../shared/data` relative to the repository root (the nearest ancestor of
//! the current directory holding `.git`); `/usr/share/pruneforge/data` (the runner image).

use std::path::{Path, PathBuf};

pub use pruneforge_api::builtin::{BuiltinDataset, BUILTIN_PREFIX};

use super::error::{DataError, Result};

/// Environment variable naming the data root.
pub const DATA_DIR_ENV: &str = "PRUNEFORGE_DATA_DIR";
/// Data root inside the runner image.
pub const IMAGE_DATA_DIR: &str = "/usr/share/pruneforge/data";

/// A directory holding the datasets in the layout of `shared/data` (alpaca/, gsm8k/, arc/, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    dir: PathBuf,
}

impl DataRoot {
    /// Uses `dir` as the data root (not checked).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DataRoot { dir: dir.into() }
    }

    /// Finds the data root (see the module docs). When `PRUNEFORGE_DATA_DIR` is set it must
    /// name an existing directory; the other places are only used when it is not set.
    pub fn discover() -> Result<Self> {
        let tried = Self::candidates();
        match tried.iter().find(|dir| dir.is_dir()) {
            Some(dir) => Ok(DataRoot::new(dir.clone())),
            None => Err(DataError::DataRootNotFound { tried }),
        }
    }

    /// The places `discover` looks at, in order.
    pub fn candidates() -> Vec<PathBuf> {
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
            return vec![PathBuf::from(dir)];
        }
        let mut out = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            out.push(cwd.join("../shared/data"));
            if let Some(repo) = cwd.ancestors().find(|dir| dir.join(".git").exists()) {
                out.push(repo.join("../shared/data"));
            }
        }
        out.push(PathBuf::from(IMAGE_DATA_DIR));
        let mut unique: Vec<PathBuf> = Vec::new();
        for dir in out {
            if !unique.contains(&dir) {
                unique.push(dir);
            }
        }
        unique
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path below the data root.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.dir.join(relative)
    }

    /// The file (or directory) of a bundled data set.
    pub fn dataset(&self, dataset: BuiltinDataset) -> PathBuf {
        self.join(dataset.relative_path())
    }

    /// The label file of a bundled data set that keeps its labels apart (PIQA).
    pub fn labels(&self, dataset: BuiltinDataset) -> Option<PathBuf> {
        dataset.labels_relative_path().map(|p| self.join(p))
    }
}
