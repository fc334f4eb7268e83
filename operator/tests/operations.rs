//! Operational pieces: leader election on a Lease, the metrics/health endpoint, RBAC rules.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use prometheus_client::registry::Registry;
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::leader::{LeaderElector, LeaseConfig};
use pruneforge_operator::metrics::Metrics;
use pruneforge_operator::rbac;
use pruneforge_operator::server::{handle, ServerState};
use tokio::sync::watch;

fn config(identity: &str) -> LeaseConfig {
    let mut c = LeaseConfig::new("pruneforge-operator", "ops", identity);
    c.retry_period = Duration::from_millis(20);
    c.renew_deadline = Duration::from_millis(500);
    c
}

#[tokio::test]
async fn one_leader_at_a_time_and_release_hands_over() {
    let (_server, client, _task) = FakeApiServer::start();
    let a = Arc::new(LeaderElector::new(client.clone(), config("replica-a")));
    let b = LeaderElector::new(client.clone(), config("replica-b"));
    assert!(a.try_acquire_or_renew().await.expect("a"));
    assert!(
        !b.try_acquire_or_renew().await.expect("b"),
        "lease is held by a"
    );
    assert!(a.try_acquire_or_renew().await.expect("a renews"));

    let leases: Api<Lease> = Api::namespaced(client.clone(), "ops");
    let lease = leases.get("pruneforge-operator").await.expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-a"));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    // b waits in acquire() until a releases.
    let (_stop_tx, stop_rx) = watch::channel(false);
    let waiter = tokio::spawn(async move {
        let mut stop = stop_rx;
        let got = b.acquire(&mut stop).await;
        (got, b)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    a.release().await.expect("release");
    let (got, b) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("b acquires after release")
        .expect("task");
    assert!(got);
    let spec = leases
        .get("pruneforge-operator")
        .await
        .expect("lease")
        .spec
        .expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    // a lost it: its renewal loop reports the loss.
    let (_stop_tx, stop_rx) = watch::channel(false);
    let lost = tokio::time::timeout(Duration::from_secs(5), a.keep_renewing(stop_rx))
        .await
        .expect("renewal loop ends");
    assert!(lost);
    drop(b);
}

#[tokio::test]
async fn lease_expiry_does_not_trust_the_holders_clock() {
    // The holder's clock is an hour behind: its fresh renewTime looks expired to the local clock.
    // A standby must still wait until the record stops changing for leaseDurationSeconds.
    let (server, client, _task) = FakeApiServer::start();
    let mut ca = config("replica-a");
    ca.lease_duration = Duration::from_secs(1);
    let a = LeaderElector::new(client.clone(), ca);
    assert!(a.try_acquire_or_renew().await.expect("a"));
    let skew = |server: &FakeApiServer| {
        server.with(|s| {
            let mut lease = s
                .get(
                    "/apis/coordination.k8s.io/v1",
                    "leases",
                    Some("ops"),
                    "pruneforge-operator",
                )
                .cloned()
                .expect("lease");
            let behind = k8s_openapi::jiff::Timestamp::now()
                - k8s_openapi::jiff::SignedDuration::from_secs(3600);
            lease["spec"]["renewTime"] = serde_json::json!(behind.to_string());
            s.put("/apis/coordination.k8s.io/v1", "leases", lease);
        })
    };
    skew(&server);
    let b = LeaderElector::new(client.clone(), config("replica-b"));
    assert!(
        !b.try_acquire_or_renew().await.expect("b"),
        "a renewed a moment ago (by b's clock, the record just changed)"
    );
    // a keeps renewing (with its skewed clock): b keeps waiting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.try_acquire_or_renew().await.expect("a renews"));
    skew(&server);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!b.try_acquire_or_renew().await.expect("b"));
    // a stops renewing: after the lease duration without a change, b takes over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(b
        .try_acquire_or_renew()
        .await
        .expect("b takes the expired lease"));
}

#[tokio::test]
async fn acquire_stops_on_shutdown() {
    let (_server, client, _task) = FakeApiServer::start();
    let a = LeaderElector::new(client.clone(), config("replica-a"));
    assert!(a.try_acquire_or_renew().await.expect("a"));
    let b = LeaderElector::new(client, config("replica-b"));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let _ = stop_tx.send(true);
    assert!(!b.acquire(&mut stop_rx).await);
}

async fn body(r: http::Response<http_body_util::Full<bytes::Bytes>>) -> String {
    String::from_utf8_lossy(&r.into_body().collect().await.expect("body").to_bytes()).into_owned()
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    {
        let _t = metrics.reconcile_timer();
    }
    metrics.set_active_jobs("ns/a", 2);
    metrics.set_active_jobs("ns/b", 1);
    metrics.set_active_jobs("ns/a", 0);
    let state = ServerState::new(registry);

    let r = handle(&state, &Method::GET, "/metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let text = body(r).await;
    assert!(
        text.contains("pruneforge_operator_reconciles_total 1"),
        "{text}"
    );
    assert!(text.contains("pruneforge_operator_active_jobs 1"), "{text}");
    assert!(
        text.contains("pruneforge_operator_reconcile_duration_seconds_count 1"),
        "{text}"
    );

    assert_eq!(
        handle(&state, &Method::GET, "/healthz").status(),
        StatusCode::OK
    );
    assert_eq!(
        handle(&state, &Method::GET, "/readyz").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        handle(&state, &Method::GET, "/readyz").status(),
        StatusCode::OK
    );
    assert_eq!(
        handle(&state, &Method::GET, "/nope").status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        handle(&state, &Method::POST, "/metrics").status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn rbac_covers_every_call_the_operator_makes() {
    let yaml = rbac::cluster_role_yaml("pruneforge-operator").expect("yaml");
    let role: k8s_openapi::api::rbac::v1::ClusterRole =
        serde_yaml::from_str(&yaml).expect("parses back");
    let rules = role.rules.expect("rules");
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    for (g, r, v) in [
        ("pruneforge.dev", "prunedistilljobs", "watch"),
        ("pruneforge.dev", "prunedistilljobs", "patch"),
        ("pruneforge.dev", "prunedistilljobs/status", "patch"),
        ("pruneforge.dev", "prunedistilljobs/finalizers", "update"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "delete"),
        ("batch", "jobs", "watch"),
        ("", "configmaps", "patch"),
        ("", "configmaps", "delete"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(allows(g, r, v), "{v} {g}/{r}");
    }
    assert!(
        !allows("", "secrets", "get"),
        "the operator never reads secrets"
    );
}
