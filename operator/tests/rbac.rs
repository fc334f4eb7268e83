//! The RBAC rules are derived from what the operator does: the fake apiserver records every
//! request (verb and resource, as RBAC authorizes it) while the operator runs its scenarios —
//! a full pipeline with a retry, a spec edit, deletion with `retention: Delete`, a permanent API
//! error (repeated Events become series), leader election and the controller's watches. The
//! granted rules must equal those requests plus the documented [`rbac::NOT_REQUESTS`]: nothing
//! used is missing, nothing granted is unused.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use pruneforge_api::status::JobPhase;
use pruneforge_api::{PruneDistillJob, PruneDistillJobSpec};
use pruneforge_operator::fake::cluster::{PodOutcome, BATCH};
use pruneforge_operator::fake::FakeApiServer;
use pruneforge_operator::leader::{LeaderElector, LeaseConfig};
use pruneforge_operator::metrics::Metrics;
use pruneforge_operator::reconcile::reconcile;
use pruneforge_operator::{labels, rbac, Context, Operator, Scope, Settings};
use serde_json::json;

const NS: &str = "team-a";
const PDJ: &str = "/apis/pruneforge.dev/v1alpha1";

const SPEC: &str = r#"
pruning:
  blockSizes: [2]
recovery:
  methods: [none]
evaluation:
  tasks:
    - name: arc_easy
      limit: 10
storage:
  uri: s3://bucket/runs
  secretRef: s3-creds
  retention: Delete
maxParallelStages: 2
"#;

type Grant = (String, String, String);

fn put(server: &FakeApiServer, name: &str, spec: &str) {
    let spec: PruneDistillJobSpec = serde_yaml::from_str(spec).expect("spec");
    let mut value = serde_json::to_value(PruneDistillJob::new(name, spec)).expect("json");
    value["metadata"]["namespace"] = json!(NS);
    server.with(|s| s.put(PDJ, "prunedistilljobs", value));
}

/// The object as stored (read without a request, so only the operator's requests count).
fn stored(server: &FakeApiServer, name: &str) -> Option<PruneDistillJob> {
    server
        .get(PDJ, "prunedistilljobs", NS, name)
        .map(|v| serde_json::from_value(v).expect("PruneDistillJob"))
}

async fn reconcile_once(server: &FakeApiServer, ctx: &Arc<Context>, name: &str) {
    if let Some(obj) = stored(server, name) {
        let _ = reconcile(Arc::new(obj), ctx.clone()).await;
    }
}

fn granted() -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rbac::rules() {
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                for v in &rule.verbs {
                    out.insert((g.clone(), r.clone(), v.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn granted_rules_equal_the_requests_the_operator_makes() {
    let (server, client, _task) = FakeApiServer::start();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Settings::default(),
        Arc::new(Metrics::default()),
        None,
    ));

    // A pipeline with one failed attempt, run to Ready.
    put(&server, "full", SPEC);
    for round in 0..30 {
        reconcile_once(&server, &ctx, "full").await;
        if round == 0 {
            let import = server
                .list(BATCH, "jobs", Some(NS))
                .into_iter()
                .find_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
                .expect("import job");
            server.run_job_to_end(NS, &import, &PodOutcome::failed(1, "Error", "boom"));
            continue;
        }
        let phase = stored(&server, "full").and_then(|o| o.status.and_then(|s| s.phase));
        if phase == Some(JobPhase::Succeeded) {
            break;
        }
        server.succeed_running_jobs(NS);
    }
    assert_eq!(
        stored(&server, "full").and_then(|o| o.status.and_then(|s| s.phase)),
        Some(JobPhase::Succeeded)
    );
    // A spec edit: stale Jobs and their request ConfigMaps are deleted, a stage reruns.
    server.with(|s| {
        let mut v = s
            .get(PDJ, "prunedistilljobs", Some(NS), "full")
            .cloned()
            .expect("job");
        v["spec"]["evaluation"]["tasks"] = json!([{"name": "arc_easy", "limit": 30}]);
        v["metadata"]["generation"] = json!(2);
        s.put(PDJ, "prunedistilljobs", v);
    });
    reconcile_once(&server, &ctx, "full").await;
    // Deletion with retention Delete: running Jobs first, then the clean-up Job, then the
    // finalizer.
    server.with(|s| {
        let mut v = s
            .get(PDJ, "prunedistilljobs", Some(NS), "full")
            .cloned()
            .expect("job");
        v["metadata"]["deletionTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
        s.put(PDJ, "prunedistilljobs", v);
    });
    for _ in 0..5 {
        reconcile_once(&server, &ctx, "full").await;
        let gc: Vec<String> = server
            .list(BATCH, "jobs", Some(NS))
            .into_iter()
            .filter(|j| j["metadata"]["labels"][labels::ROLE] == labels::ROLE_GC)
            .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        for name in gc {
            server.run_job_to_end(NS, &name, &PodOutcome::succeeded(""));
        }
    }
    assert!(stored(&server, "full").is_none(), "deleted");

    // A permanent API error, twice: the status, an Event and its series.
    let long = "a".repeat(70);
    put(&server, &long, SPEC);
    reconcile_once(&server, &ctx, &long).await;
    reconcile_once(&server, &ctx, &long).await;

    // Leader election: create, then get and update.
    let elector = LeaderElector::new(client.clone(), LeaseConfig::new("lease", NS, "me"));
    assert!(elector.try_acquire_or_renew().await.expect("acquire"));
    assert!(elector.try_acquire_or_renew().await.expect("renew"));

    // The controller's watches (list, then watch) of jobs, their Jobs and Pods.
    let operator = Operator::new(
        client.clone(),
        Settings::default(),
        Scope::Namespace(NS.into()),
    );
    let run = tokio::spawn(operator.run(tokio::time::sleep(Duration::from_millis(500))));
    let _ = tokio::time::timeout(Duration::from_secs(10), run).await;

    let used: BTreeSet<Grant> = server.requests().iter().filter_map(|r| r.rbac()).collect();
    let not_requests: BTreeSet<Grant> = rbac::NOT_REQUESTS
        .iter()
        .map(|(g, r, v, _)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let granted = granted();
    let missing: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted
        .difference(&used)
        .filter(|g| !not_requests.contains(*g))
        .collect();
    assert!(missing.is_empty(), "requests without a grant: {missing:?}");
    assert!(unused.is_empty(), "grants no request uses: {unused:?}");
    for g in &not_requests {
        assert!(granted.contains(g), "{g:?} is documented but not granted");
    }
}
