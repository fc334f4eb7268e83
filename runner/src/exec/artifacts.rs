//! Moving stage artifacts between storage and local directories.
//!
//! An artifact is the directory a stage writes, stored under the stage's artifact URI and
//! committed by a `_SUCCESS` manifest. Sharded stages (distill) commit one sub-artifact per
//! shard under `shards/<index>/`. On local storage, inputs are read in place (after checking
//! the commit); on object storage they are downloaded (digests verified) into a cache.

use crate::storage::{BlockingStorage, StorageError};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact {uri}: {source}")]
    Storage {
        uri: String,
        #[source]
        source: StorageError,
    },
    #[error("artifact {uri} is not committed (no _SUCCESS manifest): its stage has not finished")]
    NotCommitted { uri: String },
    #[error("{0}")]
    Io(String),
}

fn st(uri: &str) -> impl FnOnce(StorageError) -> ArtifactError + '_ {
    move |source| ArtifactError::Storage {
        uri: uri.to_string(),
        source,
    }
}

pub fn open(uri: &str) -> Result<BlockingStorage, ArtifactError> {
    BlockingStorage::open(uri).map_err(st(uri))
}

/// Whether the artifact (or, for sharded stages, every listed shard) is committed.
pub fn is_committed(uri: &str) -> Result<bool, ArtifactError> {
    open(uri)?.is_committed("").map_err(st(uri))
}

/// Indices of committed shards under `<uri>/shards/`.
pub fn committed_shards(uri: &str) -> Result<Vec<usize>, ArtifactError> {
    let s = open(uri)?;
    let mut out = Vec::new();
    for o in s.list("shards").map_err(st(uri))? {
        let key = o.key.to_string();
        let parts: Vec<&str> = key.rsplit('/').take(3).collect();
        if parts.len() == 3 && parts[0] == "_SUCCESS" && parts[2] == "shards" {
            if let Ok(i) = parts[1].parse::<usize>() {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn cache_dir_for(cache: &Path, uri: &str) -> PathBuf {
    let h = hex::encode(Sha256::digest(uri.as_bytes()));
    cache.join(&h[..16])
}

/// A local directory holding the artifact at `uri`: the artifact itself on local storage,
/// else a verified download under `cache`. Sharded artifacts are materialised shard by shard.
pub fn materialize(uri: &str, cache: &Path) -> Result<PathBuf, ArtifactError> {
    let s = open(uri)?;
    let committed = s.is_committed("").map_err(st(uri))?;
    let shards = if committed {
        vec![]
    } else {
        committed_shards(uri)?
    };
    if !committed && shards.is_empty() {
        return Err(ArtifactError::NotCommitted {
            uri: uri.to_string(),
        });
    }
    if let Some(root) = s.storage().local_root() {
        return Ok(root.to_path_buf());
    }
    let local = cache_dir_for(cache, uri);
    if committed {
        s.download_dir("", &local).map_err(st(uri))?;
    } else {
        for i in shards {
            let prefix = format!("shards/{i:05}");
            s.download_dir(&prefix, &local.join(&prefix))
                .map_err(st(uri))?;
        }
    }
    Ok(local)
}

/// Uploads `local_dir` to `<uri>/<sub>` and commits it.
pub fn commit(local_dir: &Path, uri: &str, sub: &str) -> Result<(), ArtifactError> {
    let s = open(uri)?;
    s.upload_dir(local_dir, sub).map_err(st(uri))?;
    Ok(())
}

/// Reads a small file of a committed artifact (e.g. `result.json`).
pub fn read_file(uri: &str, name: &str) -> Result<Vec<u8>, ArtifactError> {
    let s = open(uri)?;
    Ok(s.get_bytes(name).map_err(st(uri))?.to_vec())
}
