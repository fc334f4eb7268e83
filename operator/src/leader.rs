//! Leader election on a `coordination.k8s.io/v1` Lease (kube-runtime 5 has none): one replica
//! holds the Lease and runs the controller; the others wait. The holder renews every
//! `retry_period`; when it cannot renew within `renew_deadline` it steps down. A released Lease
//! (graceful shutdown) is taken over at once; an expired one after `lease_duration`.
//!
//! Expiry never compares another node's `renewTime` with the local clock (clocks drift): as
//! client-go's leaderelection does, a Lease held by another replica is expired when its record
//! has not changed for `leaseDurationSeconds` as measured on the local monotonic clock since this
//! replica observed the change.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// Step down when not renewed for this long.
    pub renew_deadline: Duration,
    /// Interval between acquire/renew attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Acquires, renews and releases the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease record last seen and when (local monotonic clock) it was first seen so.
    observed: Mutex<Option<(LeaseSpec, Instant)>>,
}

/// Whether another replica holds the Lease: it names a holder other than `identity` and its
/// record changed less than `leaseDurationSeconds` ago, measured locally from `observed_at`
/// (when this replica saw the record change) to `now`. The remote `renewTime` is not read.
pub fn held_by_other(spec: &LeaseSpec, identity: &str, observed_at: Instant, now: Instant) -> bool {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if holder == identity {
        return false;
    }
    let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(15).max(1)).unwrap_or(15);
    now.saturating_duration_since(observed_at) < Duration::from_secs(seconds)
}

impl LeaderElector {
    /// An elector for `config` using `client`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    /// Records `spec` as seen now unless it equals the record seen before; returns when (local
    /// clock) the current record was first seen.
    fn observe(&self, spec: &LeaseSpec, now: Instant) -> Instant {
        let mut observed = match self.observed.lock() {
            Ok(o) => o,
            Err(poisoned) => poisoned.into_inner(),
        };
        match observed.as_ref() {
            Some((record, at)) if record == spec => *at,
            _ => {
                *observed = Some((spec.clone(), now));
                now
            }
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(15)
    }

    /// One acquire-or-renew round; `Ok(true)` when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let id = &self.config.identity;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(id.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        let local_now = Instant::now();
        let observed_at = self.observe(&spec, local_now);
        if held_by_other(&spec, id, observed_at, local_now) {
            return Ok(false);
        }
        if spec.holder_identity.as_deref() != Some(id.as_str()) {
            spec.holder_identity = Some(id.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.lease_seconds());
        lease.spec = Some(spec.clone());
        // replace carries the resourceVersion: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observe(&spec, Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease; `false` when `stop` fired first.
    pub async fn acquire(&self, stop: &mut watch::Receiver<bool>) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
                    return true;
                }
                Ok(false) => debug!(lease = %self.config.name, "lease held by another replica"),
                Err(e) => warn!(error = %e, "acquiring lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
        }
    }

    /// Renews the Lease until `stop` fires or renewal fails for `renew_deadline`; returns
    /// whether leadership was lost (as opposed to stopped).
    pub async fn keep_renewing(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> bool {
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return false,
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.config.name, "lease taken by another replica");
                    return true;
                }
                Err(e) => warn!(error = %e, "renewing lease failed"),
            }
            if last_renewal.elapsed() > self.config.renew_deadline {
                warn!(lease = %self.config.name, "could not renew the lease in time");
                return true;
            }
        }
    }

    /// Gives the Lease up (graceful shutdown) so another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        info!(lease = %self.config.name, "released lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn lease_expiry_is_measured_on_the_local_clock() {
        let now = Instant::now();
        let ago = |s: u64| now.checked_sub(Duration::from_secs(s)).unwrap_or(now);
        let remote = Timestamp::now();
        let mut spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            // The holder's clock runs an hour behind ours: its renewTime looks long expired.
            renew_time: Some(MicroTime(remote - SignedDuration::from_secs(3600))),
            ..LeaseSpec::default()
        };
        assert!(held_by_other(&spec, "b", ago(5), now), "changed 5 s ago");
        assert!(!held_by_other(&spec, "a", ago(5), now), "our own lease");
        assert!(
            !held_by_other(&spec, "b", ago(16), now),
            "unchanged for 16 s"
        );
        // An hour ahead: still expires once unchanged for the lease duration.
        spec.renew_time = Some(MicroTime(remote + SignedDuration::from_secs(3600)));
        assert!(!held_by_other(&spec, "b", ago(16), now));
        spec.holder_identity = None;
        assert!(!held_by_other(&spec, "b", now, now), "released");
    }
}
