//! Moving stage artifacts between storage and local directories.
//!
//! An artifact is the directory a stage writes, stored under the stage's artifact URI and
//! committed by a `_SUCCESS` manifest. Sharded stages (distill) commit one sub-artifact per
//! shard under `shards/<index>/`. On local storage, inputs are read in place (after checking
//! the commit); on object storage they are downloaded (digests verified) into a cache.

use crate::storage::{
    holder_id, BlockingStorage, LeaseOptions, LeaseOutcome, StorageError, WriterLease,
};
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

/// An artifact: the store it lives in and its prefix there (`<kind>/<key>`, the last two path
/// segments of the planner's artifact URI).
pub struct Artifact {
    pub store: BlockingStorage,
    pub prefix: String,
}

impl Artifact {
    /// `<prefix>/<rel>` (or the prefix itself).
    pub fn key(&self, rel: &str) -> String {
        if rel.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }
}

/// Splits an artifact URI into its store root and a two-segment prefix.
pub fn split_uri(uri: &str) -> Result<(String, String), ArtifactError> {
    let trimmed = uri.trim_end_matches('/');
    let mut parts = trimmed.rsplitn(3, '/');
    let (last, second, root) = (parts.next(), parts.next(), parts.next());
    match (last, second, root) {
        (Some(a), Some(b), Some(r))
            if !a.is_empty() && !b.is_empty() && !r.ends_with(':') && !r.ends_with(":/") =>
        {
            Ok((r.to_string(), format!("{b}/{a}")))
        }
        _ => Err(ArtifactError::Io(format!(
            "artifact URI {uri} must end in <kind>/<key> below a storage root"
        ))),
    }
}

pub fn open(uri: &str) -> Result<Artifact, ArtifactError> {
    let (root, prefix) = split_uri(uri)?;
    let store = BlockingStorage::open(&root).map_err(st(uri))?;
    Ok(Artifact { store, prefix })
}

/// Whether the artifact is committed.
pub fn is_committed(uri: &str) -> Result<bool, ArtifactError> {
    let a = open(uri)?;
    a.store.is_committed(&a.prefix).map_err(st(uri))
}

/// Indices of committed shards under `<uri>/shards/`.
pub fn committed_shards(uri: &str) -> Result<Vec<usize>, ArtifactError> {
    let a = open(uri)?;
    let mut out = Vec::new();
    for o in a.store.list(&a.key("shards")).map_err(st(uri))? {
        let key = o.key.to_string();
        let parts: Vec<&str> = key.rsplit('/').take(3).collect();
        // <prefix>/shards/<index>/_SUCCESS
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
    let a = open(uri)?;
    let committed = a.store.is_committed(&a.prefix).map_err(st(uri))?;
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
    if let Some(root) = a.store.storage().local_root() {
        return Ok(root.join(&a.prefix));
    }
    let local = cache_dir_for(cache, uri);
    if committed {
        a.store.download_dir(&a.prefix, &local).map_err(st(uri))?;
    } else {
        for i in shards {
            let sub = format!("shards/{i:05}");
            a.store
                .download_dir(&a.key(&sub), &local.join(&sub))
                .map_err(st(uri))?;
        }
    }
    Ok(local)
}

/// Uploads `local_dir` to `<uri>/<sub>` and commits it.
pub fn commit(local_dir: &Path, uri: &str, sub: &str) -> Result<(), ArtifactError> {
    let a = open(uri)?;
    a.store
        .upload_dir(local_dir, &a.key(sub))
        .map_err(st(uri))?;
    Ok(())
}

/// This process's claim to be the only writer of an artifact (or shard sub-artifact): the
/// storage layer's writer lease, held from before the stage runs until after it commits.
/// Dropping the claim releases it.
pub struct WriterClaim {
    uri: String,
    artifact: Artifact,
    lease: Option<WriterLease>,
}

/// Takes the writer lease of `<uri>/<sub>`, waiting while another live pod writes it.
pub fn claim_writer(uri: &str, sub: &str) -> Result<WriterClaim, ArtifactError> {
    let artifact = open(uri)?;
    let options = LeaseOptions::from_env().map_err(st(uri))?;
    let lease = match artifact
        .store
        .acquire_writer_lease(&artifact.key(sub), &holder_id(), &options)
        .map_err(st(uri))?
    {
        LeaseOutcome::Acquired(lease) => Some(*lease),
        LeaseOutcome::Unsupported => {
            tracing::warn!(
                %uri,
                "the store has no conditional put: concurrent writers of this artifact are not \
                 serialised (on S3, do not set AWS_CONDITIONAL_PUT=disabled unless the store \
                 rejects If-None-Match)"
            );
            None
        }
    };
    Ok(WriterClaim {
        uri: uri.to_string(),
        artifact,
        lease,
    })
}

impl WriterClaim {
    /// The holder this claim waited for, if any: the artifact may be committed by now.
    pub fn waited_for(&self) -> Option<&str> {
        self.lease.as_ref().and_then(|l| l.waited_for())
    }

    /// Fails when another writer took the artifact over (this process stalled past the lease
    /// ttl): then this process must not commit.
    pub fn check_held(&self) -> Result<(), ArtifactError> {
        match &self.lease {
            Some(lease) => self
                .artifact
                .store
                .check_lease_held(lease)
                .map_err(st(&self.uri)),
            None => Ok(()),
        }
    }

    /// Releases the lease: a waiting writer proceeds at once.
    pub fn release(self) {
        if let Some(lease) = self.lease {
            lease.release();
        }
    }
}

/// Deletes the artifact (its manifest first, so it never looks committed half-deleted).
pub fn delete(uri: &str) -> Result<usize, ArtifactError> {
    let a = open(uri)?;
    a.store.delete_prefix(&a.prefix).map_err(st(uri))
}

/// The stored, successful result of the artifact at `uri` (or of its shard sub-artifact
/// `sub`, e.g. `shards/00003`), when it is committed: the stage need not run again.
pub fn committed_result(uri: &str, sub: &str) -> Option<pruneforge_api::contract::StageResult> {
    let a = open(uri).ok()?;
    if !a.store.is_committed(&a.key(sub)).ok()? {
        return None;
    }
    let name = if sub.is_empty() {
        "result.json".to_string()
    } else {
        format!("{sub}/result.json")
    };
    let bytes = a.store.get_bytes(&a.key(&name)).ok()?;
    let r =
        pruneforge_api::contract::StageResult::from_json(std::str::from_utf8(&bytes).ok()?).ok()?;
    r.is_ok().then_some(r)
}

/// Reads a small file of a committed artifact (e.g. `result.json`).
pub fn read_file(uri: &str, name: &str) -> Result<Vec<u8>, ArtifactError> {
    let a = open(uri)?;
    Ok(a.store.get_bytes(&a.key(name)).map_err(st(uri))?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::split_uri;

    #[test]
    fn artifact_uris_split_into_root_and_prefix() {
        assert_eq!(
            split_uri("s3://bucket/runs/score/0123abcd/").unwrap(),
            ("s3://bucket/runs".to_string(), "score/0123abcd".to_string())
        );
        assert_eq!(
            split_uri("file:///tmp/out/import/ab/").unwrap(),
            ("file:///tmp/out".to_string(), "import/ab".to_string())
        );
        assert!(split_uri("s3://bucket/x/").is_err());
    }
}
