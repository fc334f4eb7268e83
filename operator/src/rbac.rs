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

/// Every rule, with the reason in the order used.
pub fn rules() -> Vec<PolicyRule> {
    vec![
        // Watch jobs, add/remove the finalizer.
        rule(
            "pruneforge.dev",
            &["prunedistilljobs"],
            &["get", "list", "watch", "patch", "update"],
        ),
        // Server-side apply of the status.
        rule(
            "pruneforge.dev",
            &["prunedistilljobs/status"],
            &["get", "patch", "update"],
        ),
        // Owner references with blockOwnerDeletion on Jobs and ConfigMaps.
        rule(
            "pruneforge.dev",
            &["prunedistilljobs/finalizers"],
            &["update"],
        ),
        // Stage and clean-up Jobs.
        rule(
            "batch",
            &["jobs"],
            &["get", "list", "watch", "create", "delete"],
        ),
        // Request ConfigMaps (server-side apply).
        rule(
            "",
            &["configmaps"],
            &[
                "get", "list", "watch", "create", "patch", "update", "delete",
            ],
        ),
        // Termination messages and failure reasons of stage pods.
        rule("", &["pods"], &["get", "list", "watch"]),
        // Events about jobs.
        rule("events.k8s.io", &["events"], &["create", "patch"]),
        // Leader election.
        rule(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
        ),
    ]
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
