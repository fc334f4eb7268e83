//! Where a runner keeps its working files and finds its data.

use crate::data::DataRoot;
use crate::resolve::Resolver;
use pruneforge_api::contract::StageRequest;
use std::path::PathBuf;

/// Where a runner keeps its working files.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Per-stage work directories (resume state: distill journals, finetune checkpoints).
    pub work_root: PathBuf,
    /// Downloaded inputs (object storage only).
    pub cache: PathBuf,
    /// Data set references (`builtin:`, paths, object storage) to local files.
    pub resolver: Resolver,
    /// Run every shard of a sharded stage here and gather them (the local runner), instead of
    /// only the request's shard (a pod of an Indexed Job).
    pub all_shards: bool,
}

impl ExecContext {
    /// Work and caches under `work_root`; `builtin:` data under `data_root` (None: discover).
    pub fn new(work_root: PathBuf, data_root: Option<DataRoot>, all_shards: bool) -> Self {
        let cache = work_root.join(".cache");
        ExecContext {
            resolver: Resolver::new(data_root, cache.join("data")),
            cache,
            work_root,
            all_shards,
        }
    }

    pub fn work_dir(&self, req: &StageRequest) -> PathBuf {
        let key: String = req.key.chars().take(16).collect();
        let mut d = self.work_root.join(format!("{}-{key}", req.stage_id));
        if let Some(s) = req.shard {
            d = d.join(format!("shard-{:05}", s.index));
        }
        d
    }
}
