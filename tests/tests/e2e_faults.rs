//! Faults against a REAL control plane (`PRUNEFORGE_E2E_KUBECONFIG`: kube-apiserver,
//! controller-manager with its Job, garbage and namespace controllers, scheduler, etcd). No
//! kubelet is needed: with no nodes, stage pods stay unschedulable, which is one of the faults.
//! Skipped (passes with a message) without the variable; CI runs the offline suites.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use pruneforge_api::status::{StagePhase, CONDITION_STALLED};
use pruneforge_api::PruneDistillJob;
use pruneforge_operator::{Operator, Scope, Settings};
use pruneforge_tests::cluster::{self, condition_true};
use pruneforge_tests::env;
use serde_json::{json, Value};
use tokio::sync::watch;

/// examples/quickstart.yaml as `name` in `namespace`, with `storage`.
fn quickstart(namespace: &str, name: &str, storage: Value) -> Value {
    let text = std::fs::read_to_string(env::repo_root().join("examples/quickstart.yaml"))
        .expect("examples/quickstart.yaml");
    let mut v: Value = serde_yaml::from_str(&text).expect("quickstart parses");
    v["metadata"] = json!({"name": name, "namespace": namespace});
    v["spec"]["storage"] = storage;
    v
}

fn start_operator(
    client: &Client,
    ns: &str,
    settings: Settings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let operator = Operator::new(client.clone(), settings, Scope::Namespace(ns.to_string()));
    let mut op_stop = stop_rx;
    let op = tokio::spawn(async move {
        let _ = operator
            .run(async move {
                let _ = op_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    (stop_tx, op)
}

async fn apply(api: &Api<PruneDistillJob>, name: &str, v: &Value) {
    api.patch(
        name,
        &PatchParams::apply(cluster::MANAGER).force(),
        &Patch::Apply(v),
    )
    .await
    .expect("apply");
}

fn stage_message(obj: &PruneDistillJob, id: &str) -> String {
    obj.status
        .iter()
        .flat_map(|s| s.stages.iter())
        .find(|s| s.id == id)
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// Item 2: pods that cannot be scheduled (no node has room: here, no node at all) fail their
/// stage at the startup deadline with the scheduler's reason and stall the job; fixing the
/// spec retries the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_unschedulable_pods_stall_at_the_startup_deadline() {
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-stuck").await else {
        return;
    };
    let settings = Settings {
        startup_deadline: Duration::from_secs(20),
        requeue_running: Duration::from_secs(5),
        ..Settings::default()
    };
    let (stop, op) = start_operator(&client, &ns, settings);
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let mut job = quickstart(&ns, "stuck", json!({"uri": "file:///data/out"}));
    apply(&api, "stuck", &job).await;

    // Before the deadline the scheduler's reason is the stage message.
    let pending = cluster::wait_for(
        &api,
        "stuck",
        Duration::from_secs(60),
        "import shows the pod's problem",
        |o| stage_message(o, "import").contains("Unschedulable"),
    )
    .await;
    let stalled = cluster::wait_for(&api, "stuck", Duration::from_secs(120), "Stalled", |o| {
        condition_true(o, CONDITION_STALLED)
    })
    .await;
    // A spec edit (here the runner image) retries the failed stage.
    let mut retried = None;
    if stalled.is_ok() {
        job["spec"]["runner"] = json!({"image": "registry.example/pruneforge-runner:fixed"});
        apply(&api, "stuck", &job).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && retried.is_none() {
            let list = jobs.list(&ListParams::default()).await.expect("jobs");
            retried = list.items.into_iter().find(|j| {
                j.spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .is_some_and(|p| {
                        p.containers[0].image.as_deref()
                            == Some("registry.example/pruneforge-runner:fixed")
                    })
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = stop.send(true);
    let _ = op.await;
    cluster::delete_namespace(&client, &ns).await;

    let pending = pending.expect("the pod's reason in the stage message");
    println!(
        "before the deadline: import: {}",
        stage_message(&pending, "import")
    );
    let stalled = stalled.expect("Stalled at the startup deadline");
    let import = stalled
        .status
        .iter()
        .flat_map(|s| s.stages.iter())
        .find(|s| s.id == "import")
        .expect("import");
    println!(
        "at the deadline: import {:?}: {}",
        import.phase,
        stage_message(&stalled, "import")
    );
    assert_eq!(import.phase, StagePhase::Failed);
    let m = stage_message(&stalled, "import");
    assert!(m.starts_with("did not start within 20 s: pod "), "{m}");
    assert!(m.contains("Unschedulable"), "{m}");
    let retried = retried.expect("a new import Job with the corrected image");
    println!(
        "after the spec edit: Job {} with the new image",
        retried.metadata.name.unwrap_or_default()
    );
}

/// Item 4: `kubectl delete namespace` with a `retention: Delete` job: the namespace controller
/// deletes the job, the apiserver refuses the clean-up Job (403, namespace terminating), and
/// the operator releases the finalizer, so the namespace goes away instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_namespace_deletion_with_delete_retention_does_not_hang() {
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-nsdel").await else {
        return;
    };
    let (stop, op) = start_operator(&client, &ns, Settings::default());
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let job = quickstart(
        &ns,
        "doomed",
        json!({"uri": "file:///data/out", "retention": "Delete"}),
    );
    apply(&api, "doomed", &job).await;
    let started = cluster::wait_for(
        &api,
        "doomed",
        Duration::from_secs(60),
        "finalizer and a started stage",
        |o| {
            o.metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == "pruneforge.dev/artifacts")
                && o.status
                    .iter()
                    .flat_map(|s| s.stages.iter())
                    .any(|s| s.attempts > 0)
        },
    )
    .await;
    cluster::delete_namespace(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let t0 = Instant::now();
    let mut gone = false;
    while t0.elapsed() < Duration::from_secs(120) {
        if namespaces
            .get_opt(&ns)
            .await
            .expect("get namespace")
            .is_none()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    let _ = op.await;
    started.expect("the job started with the finalizer");
    println!(
        "namespace {ns} gone: {gone} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(gone, "namespace {ns} still there after 120 s");
}

fn dynamic(v: &Value) -> kube::api::DynamicObject {
    serde_json::from_value(v.clone()).expect("a Kubernetes object")
}

/// Item 3: the chart's ValidatingAdmissionPolicy, rendered by Helm and enforced by the real
/// kube-apiserver (its CEL type-checked against the CRD's schema), denies what the chart does
/// not allow and admits the quickstart. The binding is narrowed to the test's namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_admission_policy_limits_what_a_job_may_put_into_pods() {
    use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-vap").await else {
        return;
    };
    let out = tempfile::tempdir().expect("tempdir");
    let render = std::process::Command::new("bash")
        .arg(env::repo_root().join("scripts/render-chart.sh"))
        .arg(out.path())
        .output()
        .expect("run scripts/render-chart.sh");
    assert!(
        render.status.success(),
        "scripts/render-chart.sh: {}",
        String::from_utf8_lossy(&render.stderr)
    );
    let text = std::fs::read_to_string(out.path().join("default.yaml")).expect("rendered chart");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .collect::<Vec<Value>>();
    let find = |kind: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("the chart renders no {kind}"))
    };
    let name = format!("pruneforge-e2e-{}", std::process::id());
    let mut policy = find("ValidatingAdmissionPolicy");
    policy["metadata"]["name"] = json!(name);
    let mut binding = find("ValidatingAdmissionPolicyBinding");
    binding["metadata"]["name"] = json!(name);
    binding["spec"]["policyName"] = json!(name);
    binding["spec"]["matchResources"] =
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let resource = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        )
    };
    let policies: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    );
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &resource(
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
    );
    let pp = PatchParams::apply(cluster::MANAGER).force();
    policies
        .patch(&name, &pp, &Patch::Apply(&policy))
        .await
        .expect("apply the policy");
    bindings
        .patch(&name, &pp, &Patch::Apply(&binding))
        .await
        .expect("apply the binding");

    let jobs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("pruneforge.dev", "v1alpha1", "PruneDistillJob"),
            "prunedistilljobs",
        ),
    );
    let storage = json!({"uri": "file:///data/out"});
    let evil = |field: &str, value: Value| {
        let mut j = quickstart(
            &ns,
            &format!("evil-{field}").to_lowercase(),
            storage.clone(),
        );
        j["spec"]["runner"][field] = value;
        j
    };
    let cases = [
        (
            "image",
            json!("docker.io/evil:1"),
            "spec.runner.image docker.io/evil:1 is not allowed",
        ),
        (
            "serviceAccountName",
            json!("admin"),
            "spec.runner.serviceAccountName admin is not allowed",
        ),
        (
            "env",
            json!([{"name": "T", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "p"}}}]),
            "spec.runner.env may take values only from the Secrets",
        ),
        (
            "priorityClassName",
            json!("system-cluster-critical"),
            "is not allowed",
        ),
        (
            "podAnnotations",
            json!({"container.apparmor.security.beta.kubernetes.io/runner": "unconfined"}),
            "AppArmor or seccomp",
        ),
        (
            "tolerations",
            json!([{"operator": "Exists"}]),
            "must name a taint key",
        ),
    ];
    // The policy takes effect within seconds of its creation: retry the first case until denied.
    let t0 = Instant::now();
    let mut outcomes = Vec::new();
    for (i, (field, value, want)) in cases.iter().enumerate() {
        let j = evil(field, value.clone());
        let result = loop {
            let r = jobs.create(&PostParams::default(), &dynamic(&j)).await;
            if r.is_err() || i > 0 || t0.elapsed() > Duration::from_secs(30) {
                break r;
            }
            let n = j["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let _ = jobs.delete(&n, &DeleteParams::default()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        // The apiserver's message, without kube's debug dump of the Status.
        let outcome = result.map(|_| ()).map_err(|e| match e {
            kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
            other => other.to_string(),
        });
        outcomes.push((field.to_string(), want.to_string(), outcome));
    }
    let allowed = jobs
        .create(
            &PostParams::default(),
            &dynamic(&quickstart(&ns, "quickstart", storage.clone())),
        )
        .await
        .map(|_| ());
    let live = policies.get(&name).await.expect("policy");
    let _ = bindings.delete(&name, &DeleteParams::default()).await;
    let _ = policies.delete(&name, &DeleteParams::default()).await;
    cluster::delete_namespace(&client, &ns).await;

    let warnings = live
        .data
        .pointer("/status/typeChecking/expressionWarnings")
        .cloned()
        .unwrap_or(json!([]));
    println!("policy type-checking warnings: {warnings}");
    assert_eq!(warnings, json!([]), "the apiserver's CEL type check");
    for (field, want, outcome) in &outcomes {
        println!("spec.runner.{field}: {outcome:?}");
        let message = outcome
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{field}: admitted"));
        assert!(message.contains(want), "{field}: {message}");
    }
    allowed.expect("the quickstart is admitted");
}

/// Server-side apply field ownership: the operator owns `.status` (field manager
/// `pruneforge-operator`, subresource `status`) and nothing of the spec; the user's manager owns
/// the spec. A user re-applying the manifest (here with one more label and a changed eval limit)
/// never conflicts with the operator and never wipes the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_server_side_apply_keeps_spec_and_status_owners_apart() {
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-ssa").await else {
        return;
    };
    let (stop, op) = start_operator(&client, &ns, Settings::default());
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let mut job = quickstart(&ns, "owned", json!({"uri": "file:///data/out"}));
    apply(&api, "owned", &job).await;
    let first = cluster::wait_for(&api, "owned", Duration::from_secs(60), "a status", |o| {
        o.status.as_ref().is_some_and(|s| !s.stages.is_empty())
    })
    .await;
    // The user applies again with changes, as `kubectl apply --server-side` would.
    job["metadata"]["labels"] = json!({"team": "search"});
    job["spec"]["evaluation"]["tasks"][0]["limit"] = json!(32);
    let reapplied = api
        .patch(
            "owned",
            &PatchParams::apply(cluster::MANAGER),
            &Patch::Apply(&job),
        )
        .await;
    let after = cluster::wait_for(
        &api,
        "owned",
        Duration::from_secs(60),
        "the new generation observed",
        |o| o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation,
    )
    .await;
    let _ = stop.send(true);
    let _ = op.await;
    cluster::delete_namespace(&client, &ns).await;

    first.expect("the operator wrote a status");
    let reapplied = reapplied.expect("re-applying without force does not conflict");
    let after = after.expect("the operator observed the new generation");
    let managers: Vec<(String, Option<String>, String)> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            let fields = m
                .fields_v1
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            (
                m.manager.clone().unwrap_or_default(),
                m.subresource.clone(),
                fields,
            )
        })
        .collect();
    for (manager, subresource, fields) in &managers {
        println!(
            "{manager} {:?}: {}",
            subresource,
            fields.chars().take(160).collect::<String>()
        );
    }
    let operator_fields: Vec<&(String, Option<String>, String)> = managers
        .iter()
        .filter(|(m, _, _)| m == pruneforge_operator::FIELD_MANAGER)
        .collect();
    assert!(!operator_fields.is_empty(), "the operator owns no field");
    for (_, subresource, fields) in &operator_fields {
        assert_eq!(
            subresource.as_deref(),
            Some("status"),
            "operator owns {fields}"
        );
        assert!(
            !fields.contains("\"f:spec\""),
            "operator owns spec fields: {fields}"
        );
    }
    let user = managers
        .iter()
        .find(|(m, s, _)| m == cluster::MANAGER && s.is_none())
        .expect("the user's manager");
    assert!(user.2.contains("\"f:spec\"") && !user.2.contains("\"f:status\""));
    assert_eq!(
        reapplied.labels().get("team").map(String::as_str),
        Some("search")
    );
    let stages = after.status.as_ref().map_or(0, |s| s.stages.len());
    assert!(stages > 0, "the status survived the user's apply");
}

/// Foreground deletion (`kubectl delete --cascade=foreground`): the garbage collector deletes
/// the stage Jobs (their owner references block the owner's deletion) before the
/// PruneDistillJob; the operator, seeing the deletion timestamp, starts nothing new, so the
/// deletion completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_foreground_deletion_removes_stage_jobs_first_and_completes() {
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-fg").await else {
        return;
    };
    let (stop, op) = start_operator(&client, &ns, Settings::default());
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job = quickstart(&ns, "fg", json!({"uri": "file:///data/out"}));
    apply(&api, "fg", &job).await;
    let running = cluster::wait_for(&api, "fg", Duration::from_secs(60), "import running", |o| {
        o.status
            .iter()
            .flat_map(|s| s.stages.iter())
            .any(|s| s.phase == StagePhase::Running)
    })
    .await;
    let before = jobs.list(&ListParams::default()).await.expect("jobs").items;
    let owner_blocks = before.iter().all(|j| {
        j.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "PruneDistillJob" && o.block_owner_deletion == Some(true))
    });
    let started = Instant::now();
    api.delete("fg", &kube::api::DeleteParams::foreground())
        .await
        .expect("delete");
    let mut gone_after = None;
    while started.elapsed() < Duration::from_secs(90) {
        if api.get_opt("fg").await.expect("get").is_none() {
            gone_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let left = jobs.list(&ListParams::default()).await.expect("jobs").items;
    let _ = stop.send(true);
    let _ = op.await;
    cluster::delete_namespace(&client, &ns).await;

    running.expect("a stage was running");
    println!(
        "{} stage Job(s) before; owner references block deletion: {owner_blocks}; \
         job gone after {gone_after:?}; Jobs left: {}",
        before.len(),
        left.len()
    );
    assert!(!before.is_empty() && owner_blocks);
    assert!(gone_after.is_some(), "foreground deletion did not complete");
    let stage_jobs_left = left
        .iter()
        .filter(|j| j.labels().get("pruneforge.dev/role").map(String::as_str) == Some("stage"))
        .count();
    assert_eq!(stage_jobs_left, 0, "stage Jobs outlived their owner");
}

/// Item 7: the resource name is copied into labels (at most 63 characters). The real apiserver
/// refuses a 64-character name at admission with the CRD's CEL message, and a 63-character name
/// (the longest allowed) gets Jobs, pods' templates and ConfigMaps whose names and labels the
/// apiserver accepts: the stage Job of the longest stage id exists with valid labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_long_resource_names_are_refused_or_fit_every_label() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let Some((client, ns)) = cluster::e2e_namespace("pruneforge-e2e-names").await else {
        return;
    };
    let api: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns);
    let too_long = "n".repeat(64);
    let refused = api
        .patch(
            &too_long,
            &PatchParams::apply(cluster::MANAGER).force(),
            &Patch::Apply(&quickstart(
                &ns,
                &too_long,
                json!({"uri": "file:///data/out"}),
            )),
        )
        .await;
    let message = match &refused {
        Err(kube::Error::Api(e)) => e.message.clone(),
        other => panic!("a 64-character name must be refused at admission, got {other:?}"),
    };
    println!("64 characters: {message}");
    assert!(message.contains("at most 63 characters"), "{message}");

    let (stop, op) = start_operator(&client, &ns, Settings::default());
    let longest = format!("q{}", "-x".repeat(31));
    assert_eq!(longest.len(), 63);
    apply(
        &api,
        &longest,
        &quickstart(&ns, &longest, json!({"uri": "file:///data/out"})),
    )
    .await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = Vec::new();
    while Instant::now() < deadline && created.is_empty() {
        created = jobs.list(&ListParams::default()).await.expect("jobs").items;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let obj = api.get(&longest).await.expect("get");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cms = configmaps
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=pruneforge-operator"))
        .await
        .expect("configmaps")
        .items;
    let _ = stop.send(true);
    let _ = op.await;
    cluster::delete_namespace(&client, &ns).await;

    let job = created
        .first()
        .unwrap_or_else(|| panic!("no stage Job for a 63-character name: {:?}", obj.status));
    let name = job.name_any();
    println!(
        "63 characters: Job {name} ({} characters), labels {:?}, {} ConfigMaps",
        name.len(),
        job.labels(),
        cms.len()
    );
    assert!(name.len() <= 63, "{name}");
    assert_eq!(
        job.labels().get("pruneforge.dev/job").map(String::as_str),
        Some(longest.as_str())
    );
    assert!(!cms.is_empty(), "the stage's request ConfigMap");
    assert!(!stage_message(&obj, "import").contains("422"), "{obj:?}");
}

/// Item 9 on the real apiserver's authorizer: the operator runs as a ServiceAccount that holds
/// exactly the chart's rules (`rbac::operator_rules` as a Role, `leader_election_rules` for the
/// Lease), by impersonation. A pipeline that creates Jobs and ConfigMaps, patches finalizers
/// and status, records Events, stalls at the startup deadline, and is deleted with
/// `retention: Delete` (the clean-up Job) runs without a single 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_the_operator_needs_no_more_than_its_rbac_rules() {
    use k8s_openapi::api::core::v1::{ConfigMap, Event, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
    use kube::api::{DeleteParams, ObjectMeta, PostParams};
    use pruneforge_operator::leader::{LeaderElector, LeaseConfig};
    use pruneforge_operator::rbac;

    let Some((admin, ns)) = cluster::e2e_namespace("pruneforge-e2e-rbac").await else {
        return;
    };
    let sa = "pruneforge-operator";
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(sa.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("service account");
    let mut rules = rbac::operator_rules();
    rules.extend(rbac::leader_election_rules());
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &Role {
                metadata: ObjectMeta {
                    name: Some(sa.into()),
                    ..ObjectMeta::default()
                },
                rules: Some(rules),
            },
        )
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: ObjectMeta {
                    name: Some(sa.into()),
                    ..ObjectMeta::default()
                },
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: sa.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: sa.into(),
                    namespace: Some(ns.clone()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .expect("role binding");

    // The operator's client: the kubeconfig's credentials, impersonating the ServiceAccount.
    let kubeconfig = env::kubeconfig().expect("PRUNEFORGE_E2E_KUBECONFIG");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{ns}:{sa}"));
    let operator_client = Client::try_from(config).expect("impersonating client");
    // Sanity: the impersonated identity really is limited (it may not list Secrets).
    let secrets =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(operator_client.clone(), &ns)
            .list(&ListParams::default())
            .await;
    assert!(
        matches!(&secrets, Err(kube::Error::Api(e)) if e.code == 403),
        "the ServiceAccount must not read Secrets: {secrets:?}"
    );

    let elector = LeaderElector::new(
        operator_client.clone(),
        LeaseConfig::new("pruneforge-operator", ns.clone(), "e2e-replica"),
    );
    // The apiserver's RBAC authorizer learns of the new RoleBinding through a watch, so the
    // first requests may still be refused (seen once on a freshly started control plane). The
    // operator's own election loop retries; so does this, for a bounded time: a rule that is
    // really missing still fails below.
    let deadline = Instant::now() + Duration::from_secs(15);
    let leading = loop {
        let attempt = elector.try_acquire_or_renew().await;
        let refused = matches!(&attempt, Err(kube::Error::Api(e)) if e.code == 403);
        if !refused || Instant::now() >= deadline {
            break attempt;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settings = Settings {
        startup_deadline: Duration::from_secs(15),
        requeue_running: Duration::from_secs(5),
        ..Settings::default()
    };
    let (stop, op) = start_operator(&operator_client, &ns, settings);
    let api: Api<PruneDistillJob> = Api::namespaced(admin.clone(), &ns);
    let job = quickstart(
        &ns,
        "rbac",
        json!({"uri": "file:///data/out", "retention": "Delete"}),
    );
    apply(&api, "rbac", &job).await;
    let stalled = cluster::wait_for(&api, "rbac", Duration::from_secs(120), "Stalled", |o| {
        condition_true(o, CONDITION_STALLED)
    })
    .await;
    let finalized = api
        .get("rbac")
        .await
        .map(|o| o.finalizers().to_vec())
        .unwrap_or_default();
    let configmaps = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=pruneforge-operator"))
        .await
        .map(|l| l.items.len())
        .unwrap_or_default();
    let events = Api::<Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();

    // Deletion with retention: Delete starts the clean-up Job.
    let _ = api.delete("rbac", &DeleteParams::background()).await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut gc_job = None;
    while Instant::now() < deadline && gc_job.is_none() {
        gc_job = jobs
            .list(&ListParams::default().labels("pruneforge.dev/role=gc"))
            .await
            .ok()
            .and_then(|l| l.items.into_iter().next());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    let _ = op.await;
    // Let the namespace go: nobody runs the clean-up Job here.
    let _ = api
        .patch(
            "rbac",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    cluster::delete_namespace(&admin, &ns).await;

    let forbidden: Vec<String> = events
        .iter()
        .filter_map(|e| e.message.clone())
        .filter(|m| m.contains("forbidden") || m.contains("403"))
        .collect();
    println!(
        "leader election: {leading:?}; finalizers {finalized:?}; {configmaps} ConfigMaps; {} Events ({} forbidden); clean-up Job {:?}",
        events.len(),
        forbidden.len(),
        gc_job.as_ref().map(|j| j.name_any())
    );
    assert!(
        matches!(leading, Ok(true)),
        "the Lease rules suffice: {leading:?}"
    );
    let stalled = stalled.expect("Stalled at the startup deadline (Jobs created, status written)");
    assert!(
        !stage_message(&stalled, "import").contains("forbidden"),
        "{}",
        stage_message(&stalled, "import")
    );
    assert!(
        finalized.iter().any(|f| f.contains("pruneforge")),
        "{finalized:?}"
    );
    assert!(configmaps > 0, "request ConfigMaps created");
    assert!(
        events.iter().any(|e| e
            .reporting_component
            .as_deref()
            .unwrap_or_default()
            .contains("pruneforge")
            || e.source
                .as_ref()
                .and_then(|s| s.component.as_deref())
                .unwrap_or_default()
                .contains("pruneforge")),
        "the operator records Events"
    );
    assert!(forbidden.is_empty(), "{forbidden:?}");
    assert!(gc_job.is_some(), "the clean-up Job was created");
}

/// Item 1 on the real control plane: two jobs in two namespaces share content-addressed
/// artifacts (same spec, same storage). Deleting the first with `retention: Delete` keeps every
/// prefix the second still references (no clean-up Job, an `ArtifactsShared` Event, the
/// finalizer released); deleting the second, now the only user, cleans them up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_shared_artifacts_are_kept_while_another_job_references_them() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::DeleteParams;
    let Some((client, ns_a)) = cluster::e2e_namespace("pruneforge-e2e-share-a").await else {
        return;
    };
    let Some((_, ns_b)) = cluster::e2e_namespace("pruneforge-e2e-share-b").await else {
        return;
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let operator = Operator::new(
        client.clone(),
        Settings::default(),
        Scope::Namespaces(vec![ns_a.clone(), ns_b.clone()]),
    );
    let mut op_stop = stop_rx;
    let op = tokio::spawn(async move {
        let _ = operator
            .run(async move {
                let _ = op_stop.wait_for(|s| *s).await;
            })
            .await;
    });
    let storage = json!({"uri": "s3://shared-bucket/runs", "retention": "Delete"});
    let api_a: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns_a);
    let api_b: Api<PruneDistillJob> = Api::namespaced(client.clone(), &ns_b);
    apply(
        &api_a,
        "first",
        &quickstart(&ns_a, "first", storage.clone()),
    )
    .await;
    apply(&api_b, "second", &quickstart(&ns_b, "second", storage)).await;
    let started = |o: &PruneDistillJob| {
        o.status
            .iter()
            .flat_map(|s| s.stages.iter())
            .any(|s| s.id == "import" && s.attempts > 0)
    };
    let a = cluster::wait_for(
        &api_a,
        "first",
        Duration::from_secs(60),
        "import started",
        started,
    )
    .await
    .expect("first job started");
    cluster::wait_for(
        &api_b,
        "second",
        Duration::from_secs(60),
        "import started",
        started,
    )
    .await
    .expect("second job started");
    let import_key = a
        .status
        .iter()
        .flat_map(|s| s.stages.iter())
        .find(|s| s.id == "import")
        .map(|s| s.key.clone())
        .expect("import key");

    api_a
        .delete("first", &DeleteParams::background())
        .await
        .expect("delete first");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut gone = false;
    while Instant::now() < deadline && !gone {
        gone = api_a.get_opt("first").await.expect("get").is_none();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let jobs_a: Api<Job> = Api::namespaced(client.clone(), &ns_a);
    let gc_a = jobs_a
        .list(&ListParams::default().labels("pruneforge.dev/role=gc"))
        .await
        .expect("jobs")
        .items;
    let events_a: Vec<String> = Api::<Event>::namespaced(client.clone(), &ns_a)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();

    api_b
        .delete("second", &DeleteParams::background())
        .await
        .expect("delete second");
    let jobs_b: Api<Job> = Api::namespaced(client.clone(), &ns_b);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut gc_b = None;
    while Instant::now() < deadline && gc_b.is_none() {
        gc_b = jobs_b
            .list(&ListParams::default().labels("pruneforge.dev/role=gc"))
            .await
            .ok()
            .and_then(|l| l.items.into_iter().next());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(true);
    let _ = op.await;
    let _ = api_b
        .patch(
            "second",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
    cluster::delete_namespace(&client, &ns_a).await;
    cluster::delete_namespace(&client, &ns_b).await;

    let gc_b_args: Vec<String> = gc_b
        .as_ref()
        .and_then(|j| j.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].command.clone().unwrap_or_default())
        .unwrap_or_default();
    println!(
        "first deleted: gone {gone}, clean-up Jobs {}, events {events_a:?}; second deleted: clean-up command {gc_b_args:?}",
        gc_a.len()
    );
    assert!(gone, "the first job's finalizer was released");
    assert!(
        gc_a.is_empty(),
        "nothing of the first job may be deleted while the second uses it"
    );
    assert!(
        events_a.iter().any(|r| r == "ArtifactsShared"),
        "{events_a:?}"
    );
    assert!(
        gc_b_args.iter().any(|a| a.contains("/import/")
            && import_key.starts_with(a.trim_end_matches('/').rsplit('/').next().unwrap_or("-"))),
        "the last user cleans the shared import artifact up: {gc_b_args:?}"
    );
}
