//! The Helm chart charts/pruneforge, rendered by Helm's own Go SDK (scripts/render-chart.sh,
//! PyPI helm-python-sdk) and validated with kubernetes-validate (Kubernetes 1.32, strict); then
//! the rendered objects are checked for what the operator needs: least-privilege RBAC, the
//! hardened pod, leader election, the watched namespaces, metrics wiring.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use support::{read_repo_file, repo_path, require_tools, run_in_repo, yaml_documents};

const CRD: &str = "crds/pruneforge.dev_prunedistilljobs.yaml";
const CHART_CRD: &str = "charts/pruneforge/crds/pruneforge.dev_prunedistilljobs.yaml";

/// Renders the chart once per test binary; returns the output directory.
fn rendered_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-render");
        let _ = std::fs::remove_dir_all(&dir);
        let dir_arg = dir.to_string_lossy().to_string();
        let out = run_in_repo("bash", &["scripts/render-chart.sh", &dir_arg]);
        require_tools("scripts/render-chart.sh", &out);
        assert!(
            out.status.success(),
            "scripts/render-chart.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// The objects of one rendered scenario (charts/pruneforge/ci/<name>-values.yaml).
fn scenario(name: &str) -> Vec<Value> {
    let path = rendered_dir().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} was not rendered: {e}", path.display()));
    yaml_documents(&text)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(objects, kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}, got {}",
        found.len()
    );
    found[0]
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// (apiGroup, resource) -> verbs, for rules without resourceNames.
fn rule_table(rules: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut table = BTreeMap::new();
    for rule in rules.as_array().expect("rules is a list") {
        for group in str_list(&rule["apiGroups"]) {
            for resource in str_list(&rule["resources"]) {
                let verbs: &mut BTreeSet<String> =
                    table.entry((group.clone(), resource)).or_default();
                verbs.extend(str_list(&rule["verbs"]));
            }
        }
    }
    table
}

/// Exactly what the operator does: `pruneforge-operator rbac` without the lease rule (the chart
/// grants that in a Role of its own namespace).
fn expected_operator_rules() -> BTreeMap<(String, String), BTreeSet<String>> {
    let rules = serde_json::to_value(pruneforge_operator::rbac::operator_rules()).expect("rules");
    rule_table(&rules)
}

fn assert_no_wildcards(object: &Value) {
    for rule in object["rules"].as_array().expect("rules") {
        for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
            assert!(
                !str_list(&rule[field]).iter().any(|s| s.contains('*')),
                "{} {}: wildcard in {field}: {rule}",
                object["kind"],
                object["metadata"]["name"]
            );
        }
    }
}

fn deployment(objects: &[Value]) -> &Value {
    one(objects, "Deployment")
}

fn container(objects: &[Value]) -> &Value {
    let containers = &deployment(objects)["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1));
    &containers[0]
}

fn args(objects: &[Value]) -> Vec<String> {
    str_list(&container(objects)["args"])
}

fn env_value<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    container(objects)["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("operator container has no env {name}"))
}

#[test]
fn chart_crd_is_the_generated_crd_byte_for_byte() {
    let generated = std::fs::read(repo_path(CRD)).expect("read the generated CRD");
    let chart = std::fs::read(repo_path(CHART_CRD)).unwrap_or_default();
    assert!(
        generated == chart,
        "{CHART_CRD} differs from {CRD}; copy it with scripts/sync-chart-crd.sh"
    );
    // And Helm installs exactly that document from crds/.
    let rendered = std::fs::read_to_string(rendered_dir().join("crds.yaml")).expect("crds.yaml");
    let docs = yaml_documents(&rendered);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0], yaml_documents(&read_repo_file(CRD))[0]);
}

#[test]
fn cluster_wide_rbac_has_exactly_the_operator_verbs() {
    let objects = scenario("default");
    let role = one(&objects, "ClusterRole");
    assert_no_wildcards(role);
    assert_eq!(rule_table(&role["rules"]), expected_operator_rules());
    let binding = one(&objects, "ClusterRoleBinding");
    let sa = &container_sa(&objects);
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], Value::String(sa.clone()));
    assert_eq!(binding["subjects"][0]["namespace"], "pruneforge-system");
    // The only namespaced Role is the leader-election one.
    let roles = of_kind(&objects, "Role");
    assert_eq!(roles.len(), 1);
    assert_leader_election_role(roles[0]);
    assert!(args(&objects).contains(&"--namespace=".to_string()));
}

fn container_sa(objects: &[Value]) -> String {
    deployment(objects)["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_string()
}

fn assert_leader_election_role(role: &Value) {
    assert_no_wildcards(role);
    assert_eq!(role["metadata"]["namespace"], "pruneforge-system");
    let rules = role["rules"].as_array().expect("rules");
    let mut seen = BTreeMap::new();
    for rule in rules {
        assert_eq!(str_list(&rule["apiGroups"]), ["coordination.k8s.io"]);
        assert_eq!(str_list(&rule["resources"]), ["leases"]);
        for verb in str_list(&rule["verbs"]) {
            seen.insert(verb, str_list(&rule["resourceNames"]));
        }
    }
    let lease = vec!["pruneforge-operator".to_string()];
    assert_eq!(
        seen,
        BTreeMap::from([
            ("create".to_string(), vec![]),
            ("get".to_string(), lease.clone()),
            ("update".to_string(), lease),
        ])
    );
}

#[test]
fn namespace_list_gets_a_role_per_namespace_and_nothing_cluster_wide() {
    let objects = scenario("namespaced");
    assert!(of_kind(&objects, "ClusterRole").is_empty());
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let sa = container_sa(&objects);
    for ns in ["ml-team-a", "ml-team-b"] {
        let role = of_kind(&objects, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no Role in {ns}"));
        assert_no_wildcards(role);
        assert_eq!(rule_table(&role["rules"]), expected_operator_rules());
        let binding = of_kind(&objects, "RoleBinding")
            .into_iter()
            .find(|b| b["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no RoleBinding in {ns}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["name"], Value::String(sa.clone()));
        assert_eq!(binding["subjects"][0]["namespace"], "pruneforge-system");
        // A runner ServiceAccount in each watched namespace, with the IRSA annotation and no token.
        let runner = of_kind(&objects, "ServiceAccount")
            .into_iter()
            .find(|s| {
                s["metadata"]["namespace"] == ns
                    && s["metadata"]["labels"]["app.kubernetes.io/component"] == "runner"
            })
            .unwrap_or_else(|| panic!("no runner ServiceAccount in {ns}"));
        assert_eq!(runner["automountServiceAccountToken"], false);
        assert_eq!(
            runner["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/pruneforge-runner"
        );
        assert_eq!(
            env_value(&objects, "PRUNEFORGE_RUNNER_SERVICE_ACCOUNT")["value"],
            runner["metadata"]["name"]
        );
    }
    // Two operator Roles plus the leader-election Role.
    assert_eq!(of_kind(&objects, "Role").len(), 3);
    let a = args(&objects);
    assert!(
        a.contains(&"--namespace=ml-team-a,ml-team-b".to_string()),
        "{a:?}"
    );
    assert_eq!(deployment(&objects)["spec"]["replicas"], 2);
    assert!(a.contains(&"--leader-election".to_string()), "{a:?}");
    assert_eq!(
        env_value(&objects, "PRUNEFORGE_STORAGE_SECRET")["value"],
        "pruneforge-s3"
    );
    let pod = &deployment(&objects)["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["example.com/owner"],
        "ml-platform"
    );
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
}

#[test]
fn admission_policy_allows_the_charts_runner_and_exempts_only_the_operator() {
    // Enforced by a real kube-apiserver in tests/tests/e2e_faults.rs (PRUNEFORGE_E2E_KUBECONFIG).
    for name in ["default", "namespaced", "servicemonitor"] {
        let objects = scenario(name);
        let policy = one(&objects, "ValidatingAdmissionPolicy");
        let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
        assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
        assert_eq!(str_list(&binding["spec"]["validationActions"]), ["Deny"]);
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        let image = policy["spec"]["validations"][0]["expression"]
            .as_str()
            .unwrap_or_default();
        let runner_image = env_value(&objects, "PRUNEFORGE_RUNNER_CUDA_IMAGE")["value"]
            .as_str()
            .unwrap_or_default();
        let repo = runner_image.rsplit_once(':').map_or("", |(r, _)| r);
        assert!(
            !repo.is_empty() && image.contains(&format!("\"{repo}:\"")),
            "{name}: {image}"
        );
        // The one exempt user is the operator's own ServiceAccount.
        let pod = &deployment(&objects)["spec"]["template"]["spec"];
        let sa = pod["serviceAccountName"].as_str().unwrap_or_default();
        let ns = deployment(&objects)["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let condition = policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap_or_default();
        assert!(
            condition.contains(&format!("'system:serviceaccount:{ns}:{sa}'")),
            "{name}: {condition}"
        );
    }
}

#[test]
fn operator_pod_is_hardened_and_probed() {
    for name in ["default", "namespaced", "servicemonitor"] {
        let objects = scenario(name);
        let pod = &deployment(&objects)["spec"]["template"]["spec"];
        let c = container(&objects);
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{name}");
        assert_eq!(psc["runAsUser"], 65532, "{name}");
        assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["runAsUser"], 65532, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(str_list(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(sc["privileged"].is_null() || sc["privileged"] == false);

        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
        let port = &c["ports"][0];
        assert_eq!(port["name"], "metrics");
        let metrics_port = port["containerPort"].as_u64().expect("containerPort");
        assert!(args(&objects).contains(&format!("--metrics-addr=0.0.0.0:{metrics_port}")));
        assert!(c["resources"]["requests"]["memory"].is_string());
        assert!(c["resources"]["limits"]["memory"].is_string());

        let ns = env_value(&objects, "POD_NAMESPACE");
        assert_eq!(
            ns["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(
            env_value(&objects, "PRUNEFORGE_GPU_RESOURCE_NAME")["value"],
            "nvidia.com/gpu"
        );
        let a = args(&objects);
        for prefix in [
            "--runner-image=ghcr.io/pruneforge/pruneforge-runner:",
            "--max-attempts=",
            "--log-format=",
        ] {
            assert!(a.iter().any(|x| x.starts_with(prefix)), "{name}: {a:?}");
        }
        assert!(env_value(&objects, "PRUNEFORGE_RUNNER_CUDA_IMAGE")["value"]
            .as_str()
            .is_some_and(|s| s.starts_with("ghcr.io/pruneforge/pruneforge-runner-cuda:")));

        // The metrics Service selects exactly the operator pods and targets the named port.
        let svc = one(&objects, "Service");
        let selector = svc["spec"]["selector"].as_object().expect("selector");
        let labels = &deployment(&objects)["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "{name}: Service selector {k}");
        }
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "metrics");
    }
}

#[test]
fn default_install_uses_leader_election_and_json_logs() {
    let objects = scenario("default");
    let a = args(&objects);
    for expected in [
        "--leader-election",
        "--lease-name=pruneforge-operator",
        "--lease-namespace=$(POD_NAMESPACE)",
        "--log-format=json",
        "--max-attempts=3",
        "--runner-image=ghcr.io/pruneforge/pruneforge-runner:0.1.0",
    ] {
        assert!(a.contains(&expected.to_string()), "{expected} not in {a:?}");
    }
    assert_eq!(
        container(&objects)["image"],
        "ghcr.io/pruneforge/pruneforge-operator:0.1.0"
    );
    assert!(of_kind(&objects, "ServiceMonitor").is_empty());
    // The runner ServiceAccount lives in the release namespace, without an API token.
    let runner: Vec<_> = of_kind(&objects, "ServiceAccount")
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "runner")
        .collect();
    assert_eq!(runner.len(), 1);
    assert_eq!(runner[0]["metadata"]["namespace"], "pruneforge-system");
    assert_eq!(runner[0]["automountServiceAccountToken"], false);
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let objects = scenario("servicemonitor");
    let monitor = one(&objects, "ServiceMonitor");
    let svc = one(&objects, "Service");
    let labels = svc["metadata"]["labels"].as_object().expect("labels");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels")
    {
        assert_eq!(labels.get(k), Some(v), "ServiceMonitor selects {k}={v}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    // Leader election off: no Lease Role, no flag; a digest-pinned image; text logs; port 9090.
    assert!(of_kind(&objects, "Role").is_empty());
    let a = args(&objects);
    assert!(!a.iter().any(|x| x.starts_with("--lease")), "{a:?}");
    assert!(!a.contains(&"--leader-election".to_string()));
    assert!(a.contains(&"--log-format=text".to_string()));
    assert!(a.contains(&"--metrics-addr=0.0.0.0:9090".to_string()));
    assert_eq!(
        container(&objects)["image"],
        "ghcr.io/pruneforge/pruneforge-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    let affinity = &deployment(&objects)["spec"]["template"]["spec"]["affinity"];
    assert!(affinity["nodeAffinity"].is_object());
}

/// Bad values: each must be rejected by values.schema.json (python jsonschema) and by Helm
/// itself (helm template), with a message naming the field.
#[test]
fn bad_values_are_rejected_by_the_schema_and_by_helm() {
    let cases: &[(&str, &str, &str)] = &[
        ("replicas-string", "replicas: two\n", "replicas"),
        ("log-format", "logFormat: xml\n", "logFormat"),
        (
            "pull-policy",
            "image:\n  pullPolicy: Sometimes\n",
            "pullPolicy",
        ),
        ("unknown-key", "replica: 2\n", "replica"),
        (
            "ha-without-lease",
            "replicas: 3\nleaderElection:\n  enabled: false\n",
            "leaderElection",
        ),
        (
            "namespace-name",
            "watchNamespaces: [Team_A]\n",
            "watchNamespaces",
        ),
        (
            "monitor-interval",
            "metrics:\n  serviceMonitor:\n    interval: 30 seconds\n",
            "interval",
        ),
        ("max-attempts", "maxAttempts: 0\n", "maxAttempts"),
        ("port-privileged", "metrics:\n  port: 80\n", "port"),
        (
            "gpu-resource",
            "runner:\n  gpuResourceName: 'nvidia.com/ gpu'\n",
            "gpuResourceName",
        ),
    ];
    let good = "replicas: 2\nwatchNamespaces: [a, b]\nrunner:\n  storageSecretName: s3-creds\n";
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chart-bad-values");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut files = Vec::new();
    for (name, yaml, _) in cases.iter().chain([&("good", good, "")]) {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("write values");
        files.push(path.to_string_lossy().to_string());
    }
    let mut cmd = vec!["scripts/chart_tool.py", "check-values"];
    cmd.extend(files.iter().map(String::as_str));
    let out = run_in_repo(&support::python(), &cmd);
    require_tools("scripts/chart_tool.py check-values", &out);
    assert!(
        out.status.success(),
        "check-values failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("check-values prints JSON");
    for ((name, _, field), file) in cases.iter().zip(&files) {
        let entry = &report[file.as_str()];
        let schema_errors = str_list(&entry["jsonschema"]);
        assert!(
            schema_errors.iter().any(|e| e.contains(field)),
            "{name}: values.schema.json (jsonschema) did not reject it naming {field}: {schema_errors:?}"
        );
        let helm = entry["helm"].as_str().unwrap_or_default();
        assert!(
            helm.contains(field),
            "{name}: helm template did not reject it naming {field}: {helm:?}"
        );
    }
    let good_entry = &report[files.last().expect("good file").as_str()];
    assert_eq!(
        good_entry["jsonschema"],
        serde_json::json!([]),
        "good values rejected"
    );
    assert!(good_entry["helm"].is_null(), "good values rejected by helm");
}

/// Every key of values.yaml (leaf paths; maps like podAnnotations count as one) is in the values
/// table of docs/install.md, and the table names no key that values.yaml lacks.
#[test]
fn every_value_is_documented_in_install_md() {
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read_repo_file("charts/pruneforge/values.yaml")).expect("values");
    let schema: Value =
        serde_json::from_str(&read_repo_file("charts/pruneforge/values.schema.json"))
            .expect("schema");
    let mut keys = BTreeSet::new();
    collect_value_keys(&values, &schema, "", &mut keys);
    let doc = read_repo_file("docs/install.md");
    let start = doc
        .find("\n## Values\n")
        .expect("docs/install.md has a `## Values` section");
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/install.md does not document these values (add a `| \\`key\\` | ...` row): {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&keys).collect();
    assert!(
        unknown.is_empty(),
        "docs/install.md documents values that values.yaml lacks: {unknown:?}"
    );
}

/// Leaf keys of values.yaml: descends into objects whose schema lists fixed `properties`
/// (free-form maps such as podAnnotations or resources are one key).
fn collect_value_keys(
    value: &serde_yaml::Value,
    schema: &Value,
    prefix: &str,
    out: &mut BTreeSet<String>,
) {
    let properties = schema["properties"].as_object();
    let fixed = schema["additionalProperties"] == false;
    match (value, properties) {
        (serde_yaml::Value::Mapping(map), Some(props)) if fixed && !map.is_empty() => {
            for (k, v) in map {
                let key = k.as_str().expect("values keys are strings");
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                let sub = props.get(key).unwrap_or_else(|| {
                    panic!("values.yaml key {path} is not in values.schema.json")
                });
                collect_value_keys(v, sub, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}
