//! Writer leases: one writer per artifact prefix, whichever pod, resource or namespace asks.
//!
//! Artifacts are content-addressed, so two resources (or two attempts of one Job) can want to
//! write the same prefix at once. A writer first takes the prefix's lease; a second writer
//! waits until the first has released it (and then finds the artifact committed) or died.
//!
//! Lease objects live beside the artifact, not in it: `_pruneforge_leases/<prefix>/<generation>`
//! (20-digit, zero-padded). Each generation is created with a conditional put
//! (`PutMode::Create`: `If-None-Match: *` on S3, a no-clobber link on local disks), so exactly
//! one writer wins it; the highest generation is the current lease. Its holder rewrites the
//! body every `ttl / 4` (a heartbeat counter). A waiter declares the holder dead when the body
//! has not changed for `ttl` on the waiter's own monotonic clock — clocks of different machines
//! are never compared — and then creates the next generation. A finished holder writes
//! `released` into its generation, so the next writer need not wait. Generations are not
//! deleted while the artifact lives, so a holder that was paused past its ttl and wakes up finds
//! a higher generation and learns that it lost the lease ([`WriterLease::check_held`]).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::error::{Result, StorageError};
use super::store::Storage;

/// Top-level directory (below the storage root) holding every prefix's lease generations.
pub const LEASES_DIR: &str = "_pruneforge_leases";
/// Environment variable overriding the lease ttl in seconds (default 120).
pub const LEASE_TTL_ENV: &str = "PRUNEFORGE_WRITER_LEASE_TTL_SECONDS";

const DEFAULT_TTL: Duration = Duration::from_secs(120);
/// How often a waiter says that it is still waiting.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Timing of writer leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// A holder whose lease body has not changed for this long is taken for dead.
    pub ttl: Duration,
    /// How often a waiter looks at the lease again.
    pub poll: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions::with_ttl(DEFAULT_TTL)
    }
}

impl LeaseOptions {
    /// `ttl`, with a poll interval of `ttl / 8` between 20 ms and 1 s.
    pub fn with_ttl(ttl: Duration) -> Self {
        LeaseOptions {
            ttl,
            poll: (ttl / 8).clamp(Duration::from_millis(20), Duration::from_secs(1)),
        }
    }

    /// The default, or the ttl in [`LEASE_TTL_ENV`] when set.
    pub fn from_env() -> Result<Self> {
        match std::env::var(LEASE_TTL_ENV) {
            Err(_) => Ok(LeaseOptions::default()),
            Ok(value) => match value.trim().parse::<f64>() {
                Ok(seconds) if seconds.is_finite() && (0.05..=86_400.0).contains(&seconds) => {
                    Ok(LeaseOptions::with_ttl(Duration::from_secs_f64(seconds)))
                }
                _ => Err(StorageError::InvalidOptions {
                    reason: format!(
                        "{LEASE_TTL_ENV}={value:?}: give the writer lease ttl in seconds, \
                         between 0.05 and 86400"
                    ),
                }),
            },
        }
    }

    fn heartbeat(&self) -> Duration {
        self.ttl / 4
    }
}

/// A name for this process as a lease holder: host (the pod name in Kubernetes), pid, and a
/// per-call nonce.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{host}/{}/{nonce:x}", std::process::id())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LeaseState {
    Held,
    Released,
}

/// The body of one lease generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    generation: u64,
    state: LeaseState,
    /// Incremented by every heartbeat: the liveness signal.
    beat: u64,
    /// When the holder took the lease (RFC 3339, the holder's clock; informational only).
    acquired: String,
}

impl LeaseRecord {
    fn payload(&self) -> PutPayload {
        // Strings and integers always serialise.
        PutPayload::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What [`Storage::acquire_writer_lease`] got.
#[derive(Debug)]
pub enum LeaseOutcome {
    /// This process is now the only writer of the prefix.
    Acquired(Box<WriterLease>),
    /// The store cannot create objects conditionally (e.g. S3 with `AWS_CONDITIONAL_PUT=disabled`):
    /// no lease is possible, writers are not serialised.
    Unsupported,
}

enum Stop {
    Release,
    Abandon,
}

/// The lease on one artifact prefix. Dropping it releases it.
#[derive(Debug)]
pub struct WriterLease {
    storage: Storage,
    prefix: String,
    dir: Path,
    generation: u64,
    holder: String,
    waited_for: Option<String>,
    heartbeat: Option<(mpsc::Sender<Stop>, JoinHandle<()>)>,
}

impl WriterLease {
    /// The generation this lease holds (1 for the first writer of a prefix).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// This holder's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The holder this writer waited for before it got the lease, if any: the artifact may
    /// have been committed meanwhile, so look again before doing the work.
    pub fn waited_for(&self) -> Option<&str> {
        self.waited_for.as_deref()
    }

    /// Ok while this lease is still the current generation; [`StorageError::LeaseLost`] when
    /// another writer took the prefix over (this one stalled past the ttl). Call before
    /// committing.
    pub async fn check_held(&self) -> Result<()> {
        let current = top_generation(&self.storage, &self.dir).await?;
        if current == Some(self.generation) {
            Ok(())
        } else {
            Err(StorageError::LeaseLost {
                prefix: self.prefix.clone(),
                generation: self.generation,
                current: current.unwrap_or(0),
            })
        }
    }

    /// Marks the lease released (the next writer need not wait) and stops the heartbeat.
    pub fn release(mut self) {
        self.stop(Stop::Release);
    }

    /// Stops the heartbeat without releasing: what a killed or frozen process leaves behind.
    /// Other writers take over after the ttl; [`WriterLease::check_held`] still works.
    pub fn abandon(&mut self) {
        self.stop(Stop::Abandon);
    }

    fn stop(&mut self, how: Stop) {
        if let Some((tx, thread)) = self.heartbeat.take() {
            let _ = tx.send(how);
            if thread.join().is_err() {
                tracing::warn!(prefix = %self.prefix, "the writer lease heartbeat thread panicked");
            }
        }
    }
}

impl Drop for WriterLease {
    fn drop(&mut self) {
        self.stop(Stop::Release);
    }
}

impl Storage {
    /// Takes the writer lease of `prefix`, waiting while another live holder has it.
    ///
    /// Returns once this process holds the lease (see the [module docs](self)), or
    /// [`LeaseOutcome::Unsupported`] when the store has no conditional put. A holder that
    /// stays alive keeps a waiter waiting: that is the point (the second writer would redo
    /// the same work).
    pub async fn acquire_writer_lease(
        &self,
        prefix: &str,
        holder: &str,
        options: &LeaseOptions,
    ) -> Result<LeaseOutcome> {
        let dir = self.lease_dir(prefix)?;
        // The generation and body last seen, and since when (our clock) it has not changed.
        let mut watched: Option<(u64, Option<LeaseRecord>, Instant)> = None;
        let mut waited_for: Option<String> = None;
        let mut last_log = Instant::now();
        loop {
            let next = match top_generation(self, &dir).await? {
                None => Some(1),
                Some(current) => {
                    let record = read_record(self, &dir, current).await?;
                    let released = record
                        .as_ref()
                        .is_some_and(|r| r.state == LeaseState::Released);
                    let now = Instant::now();
                    let stale = match &watched {
                        Some((g, body, since)) if *g == current && *body == record => {
                            now.duration_since(*since) >= options.ttl
                        }
                        _ => {
                            watched = Some((current, record.clone(), now));
                            false
                        }
                    };
                    if !released {
                        let other = record
                            .as_ref()
                            .map(|r| r.holder.clone())
                            .unwrap_or_else(|| format!("generation {current}"));
                        if stale {
                            tracing::warn!(
                                storage = %self.uri(), prefix, holder = %other,
                                ttl_s = options.ttl.as_secs_f64(),
                                "writer lease holder stopped its heartbeat; taking over"
                            );
                        }
                        waited_for = Some(other);
                    }
                    (released || stale).then_some(current + 1)
                }
            };
            let Some(generation) = next else {
                if last_log.elapsed() >= WAIT_LOG_EVERY {
                    tracing::info!(
                        storage = %self.uri(), prefix, holder = waited_for.as_deref().unwrap_or("?"),
                        "waiting for the writer of this artifact to finish"
                    );
                    last_log = Instant::now();
                }
                tokio::time::sleep(options.poll).await;
                continue;
            };
            let record = LeaseRecord {
                holder: holder.to_string(),
                generation,
                state: LeaseState::Held,
                beat: 0,
                acquired: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            };
            let key = generation_key(&dir, generation);
            let create = PutOptions::from(PutMode::Create);
            match self
                .object_store()
                .put_opts(&key, record.payload(), create)
                .await
            {
                Ok(_) => {
                    tracing::debug!(storage = %self.uri(), prefix, generation, "writer lease taken");
                    let heartbeat = start_heartbeat(self, key, record, options.heartbeat())?;
                    return Ok(LeaseOutcome::Acquired(Box::new(WriterLease {
                        storage: self.clone(),
                        prefix: prefix.to_string(),
                        dir,
                        generation,
                        holder: holder.to_string(),
                        waited_for,
                        heartbeat: Some(heartbeat),
                    })));
                }
                // Another writer won this generation: look again.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(object_store::Error::NotImplemented { .. }) => {
                    return Ok(LeaseOutcome::Unsupported);
                }
                Err(e) => return Err(StorageError::store(&key, e)),
            }
        }
    }

    /// `_pruneforge_leases/<prefix>` below the root.
    pub(crate) fn lease_dir(&self, prefix: &str) -> Result<Path> {
        let prefix = prefix.trim_matches('/');
        self.key(&format!("{LEASES_DIR}/{prefix}"))
    }
}

fn generation_key(dir: &Path, generation: u64) -> Path {
    dir.clone().join(format!("{generation:020}"))
}

/// The highest generation under `dir`, if any.
async fn top_generation(storage: &Storage, dir: &Path) -> Result<Option<u64>> {
    let metas: Vec<object_store::ObjectMeta> = storage
        .object_store()
        .list(Some(dir))
        .try_collect()
        .await
        .map_err(|e| StorageError::store(dir, e))?;
    Ok(metas
        .iter()
        .filter(|m| m.location.parts().count() == dir.parts().count() + 1)
        .filter_map(|m| m.location.filename()?.parse::<u64>().ok())
        .max())
}

/// The body of a generation; `None` when it vanished or does not parse.
async fn read_record(
    storage: &Storage,
    dir: &Path,
    generation: u64,
) -> Result<Option<LeaseRecord>> {
    let key = generation_key(dir, generation);
    let bytes = match storage.object_store().get(&key).await {
        Ok(result) => result
            .bytes()
            .await
            .map_err(|e| StorageError::store(&key, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(StorageError::store(&key, e)),
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// A thread that rewrites the lease body every `every`, with its own runtime and client (the
/// caller's runtime may be idle while the stage computes).
fn start_heartbeat(
    storage: &Storage,
    key: Path,
    mut record: LeaseRecord,
    every: Duration,
) -> Result<(mpsc::Sender<Stop>, JoinHandle<()>)> {
    let storage = storage.reopen()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StorageError::Runtime)?;
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("writer-lease".to_string())
        .spawn(move || loop {
            let stop = match rx.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Ok(Stop::Abandon) => return,
                Ok(Stop::Release) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Some(Stop::Release)
                }
            };
            record.beat += 1;
            if stop.is_some() {
                record.state = LeaseState::Released;
            }
            let put = runtime.block_on(storage.object_store().put(&key, record.payload()));
            if let Err(e) = put {
                tracing::warn!(%key, error = %e, "could not renew the writer lease");
            }
            if stop.is_some() {
                return;
            }
        })
        .map_err(StorageError::Runtime)?;
    Ok((tx, thread))
}
