//! The RBAC rules the operator needs (`pruneforge-operator rbac` prints them as a ClusterRole
//! for the Helm chart; with `--namespace` a Role with the same rules suffices).

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// The rules the operator needs in every namespace it watches (a ClusterRole when it watches
/// all of them), each with its reason. The Helm chart's `pruneforge.operatorRules` must equal
/// these (a test in tests/tests/chart.rs compares them), and they must equal the requests the
/// operator actually makes, plus [`NOT_REQUESTS`] (operator/tests/rbac.rs records them on the
/// fake apiserver).
pub fn operator_rules() -> Vec<PolicyRule> {
    vec![
        // Watch jobs; add and remove the finalizer (JSON patch).
        rule(
            "pruneforge.dev",
            &["prunedistilljobs"],
            &["list", "watch", "patch"],
        ),
        // Server-side apply of the status.
        rule("pruneforge.dev", &["prunedistilljobs/status"], &["patch"]),
        // Owner references with blockOwnerDeletion on Jobs and ConfigMaps (checked by the
        // OwnerReferencesPermissionEnforcement admission plugin, not a request of its own).
        rule(
            "pruneforge.dev",
            &["prunedistilljobs/finalizers"],
            &["update"],
        ),
        // Stage Jobs (list/watch/create/delete) and the clean-up Job (get by name).
        rule(
            "batch",
            &["jobs"],
            &["get", "list", "watch", "create", "delete"],
        ),
        // Request ConfigMaps: server-side apply (which may create them) and deleted after
        // their stage succeeded or its key changed.
        rule("", &["configmaps"], &["create", "patch", "delete"]),
        // Termination messages and failure reasons of stage pods (watched and listed).
        rule("", &["pods"], &["list", "watch"]),
        // Events about jobs (kube-runtime's Recorder: create, then patch for a series).
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// Grants that no request of the operator exercises directly, with the reason each is needed:
/// `(apiGroup, resource, verb, why)`.
pub const NOT_REQUESTS: [(&str, &str, &str, &str); 2] = [
    (
        "pruneforge.dev",
        "prunedistilljobs/finalizers",
        "update",
        "owner references with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    ),
    (
        "",
        "configmaps",
        "create",
        "server-side apply of a ConfigMap that does not exist yet creates it",
    ),
];

/// The leader-election rule (a Role in the operator's namespace in the chart).
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )]
}

/// Every rule: [`operator_rules`] and [`leader_election_rules`].
pub fn rules() -> Vec<PolicyRule> {
    let mut all = operator_rules();
    all.extend(leader_election_rules());
    all
}

/// The rules as a ClusterRole named `name`.
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [(
                    crate::labels::MANAGED_BY.to_string(),
                    "pruneforge".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        rules: Some(rules()),
        aggregation_rule: None,
    }
}

/// The ClusterRole as YAML.
pub fn cluster_role_yaml(name: &str) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&cluster_role(name))
}
