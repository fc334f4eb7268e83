//! GitOps: the Argo CD health check docs/argocd/health.lua, run with a real Lua 5.1 interpreter
//! (PyPI `lupa`, via scripts/argocd_health.py; Argo CD's gopher-lua is Lua 5.1) against job
//! objects whose status is serialised by pruneforge-api's own status types, and the Argo CD
//! manifests of docs/gitops.md.

mod support;

use pruneforge_api::PruneDistillJobStatus;
use serde_json::{json, Value};
use support::{
    fenced_blocks, read_repo_file, repo_path, require_tools, run_in_repo, yaml_documents,
};

const HEALTH_LUA: &str = "docs/argocd/health.lua";

/// A condition as the operator writes it.
fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1
    })
}

/// A job object whose status went through `PruneDistillJobStatus` (so the field names the Lua
/// script reads are the ones the operator's types serialise).
fn job(generation: i64, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "pruneforge.dev/v1alpha1",
        "kind": "PruneDistillJob",
        "metadata": {"name": "quickstart", "namespace": "ml-team-a", "generation": generation},
        "spec": {"storage": {"uri": "s3://bucket/pruneforge"}}
    });
    if let Some(status) = status {
        let typed: PruneDistillJobStatus =
            serde_json::from_value(status.clone()).expect("status decodes into the API type");
        let round_trip = serde_json::to_value(&typed).expect("status encodes");
        assert_eq!(
            round_trip, status,
            "status fields the health check reads must be the API's"
        );
        obj["status"] = round_trip;
    }
    obj
}

fn run_health(objects: &[Value]) -> Vec<(String, String)> {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("argocd-health");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let input = dir.join("objects.json");
    std::fs::write(&input, serde_json::to_vec(objects).expect("json")).expect("write");
    let input = input.to_string_lossy().to_string();
    let out = run_in_repo(
        &support::python(),
        &["scripts/argocd_health.py", HEALTH_LUA, &input],
    );
    require_tools("scripts/argocd_health.py", &out);
    assert!(
        out.status.success(),
        "the health check failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON results");
    results
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or_default().to_string(),
                r["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn health_follows_the_kstatus_conditions() {
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "no status yet",
            job(1, None),
            "Progressing",
            "Waiting for the pruneforge operator to report status",
        ),
        (
            "ready",
            job(
                2,
                Some(json!({
                    "conditions": [
                        condition("Ready", "True", "Succeeded", "All 12 stages succeeded"),
                        condition("Reconciling", "False", "Succeeded", "Nothing to do"),
                        condition("Stalled", "False", "Succeeded", "Nothing to do")
                    ],
                    "observedGeneration": 2,
                    "phase": "Succeeded"
                })),
            ),
            "Healthy",
            "All 12 stages succeeded",
        ),
        (
            "stalled",
            job(
                1,
                Some(json!({
                    "conditions": [
                        condition("Ready", "False", "StageFailed", "stage prune-n6 failed"),
                        condition("Stalled", "True", "StageFailed", "stage prune-n6 failed after 3 attempts: out of memory"),
                    ],
                    "observedGeneration": 1,
                    "phase": "Failed"
                })),
            ),
            "Degraded",
            "stage prune-n6 failed after 3 attempts: out of memory",
        ),
        (
            "reconciling",
            job(
                1,
                Some(json!({
                    "conditions": [
                        condition("Ready", "False", "Running", "2 of 12 stages done"),
                        condition("Reconciling", "True", "Running", "running score"),
                    ],
                    "observedGeneration": 1,
                    "phase": "Running",
                    "currentStage": "score"
                })),
            ),
            "Progressing",
            "running score",
        ),
        (
            "spec changed, status not yet observed",
            job(
                3,
                Some(json!({
                    "conditions": [condition("Ready", "True", "Succeeded", "done")],
                    "observedGeneration": 2
                })),
            ),
            "Progressing",
            "Waiting for the pruneforge operator to observe generation 3",
        ),
        (
            "stalled wins over reconciling",
            job(
                1,
                Some(json!({
                    "conditions": [
                        condition("Reconciling", "True", "Retrying", "retrying"),
                        condition("Stalled", "True", "InvalidSpec", "spec.merge.models: needs two models"),
                    ],
                    "observedGeneration": 1
                })),
            ),
            "Degraded",
            "spec.merge.models: needs two models",
        ),
        (
            "not ready, no other condition",
            job(
                1,
                Some(json!({
                    "conditions": [condition("Ready", "False", "Pending", "")],
                    "observedGeneration": 1,
                    "phase": "Pending"
                })),
            ),
            "Progressing",
            "Pending",
        ),
        (
            "status without conditions",
            job(
                1,
                Some(json!({"observedGeneration": 1, "phase": "Pending"})),
            ),
            "Progressing",
            "Waiting for the pruneforge operator",
        ),
    ];
    let objects: Vec<Value> = cases.iter().map(|c| c.1.clone()).collect();
    let results = run_health(&objects);
    assert_eq!(results.len(), cases.len());
    for ((name, _, status, message), (got_status, got_message)) in cases.iter().zip(&results) {
        assert_eq!(
            (got_status.as_str(), got_message.as_str()),
            (*status, *message),
            "case {name}"
        );
    }
}

#[test]
fn gitops_md_embeds_the_tested_health_check() {
    let lua = read_repo_file(HEALTH_LUA);
    let doc = read_repo_file("docs/gitops.md");
    let key = "resource.customizations.health.pruneforge.dev_PruneDistillJob";
    let config_map = fenced_blocks(&doc, "yaml")
        .into_iter()
        .flat_map(|(_, block)| yaml_documents(&block))
        .find(|d| d["kind"] == "ConfigMap" && d["data"].get(key).is_some())
        .unwrap_or_else(|| panic!("docs/gitops.md has no argocd-cm ConfigMap with {key}"));
    assert_eq!(config_map["metadata"]["name"], "argocd-cm");
    assert!(
        config_map["data"][key].as_str() == Some(lua.as_str()),
        "the health check in docs/gitops.md differs from {HEALTH_LUA}: paste the file into the ConfigMap (indented 4 spaces)"
    );
}

#[test]
fn argocd_applications_point_at_the_chart_with_valid_values() {
    let doc = read_repo_file("docs/gitops.md");
    let apps: Vec<Value> = fenced_blocks(&doc, "yaml")
        .into_iter()
        .flat_map(|(_, block)| yaml_documents(&block))
        .filter(|d| d["kind"] == "Application")
        .collect();
    assert_eq!(apps.len(), 2, "the operator and the jobs Applications");
    for app in &apps {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        for field in ["repoURL", "targetRevision", "path"] {
            assert!(
                app["spec"]["source"][field].is_string(),
                "{field} of {}",
                app["metadata"]["name"]
            );
        }
        assert!(app["spec"]["destination"]["namespace"].is_string());
        let options: Vec<&str> = app["spec"]["syncPolicy"]["syncOptions"]
            .as_array()
            .map(|o| o.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert!(options.contains(&"ServerSideApply=true"), "{options:?}");
    }
    let operator = &apps[0];
    let path = operator["spec"]["source"]["path"].as_str().expect("path");
    assert!(
        repo_path(path).join("Chart.yaml").is_file(),
        "{path} is not a chart"
    );
    // The Helm values of the Application pass the chart's schema and Helm itself.
    let values = &operator["spec"]["source"]["helm"]["valuesObject"];
    assert!(values.is_object());
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gitops-values");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("values.yaml");
    std::fs::write(&file, serde_yaml::to_string(values).expect("yaml")).expect("write");
    let file = file.to_string_lossy().to_string();
    let report = support::chart_tool_json(&["check-values", &file]);
    assert_eq!(report[&file]["jsonschema"], json!([]), "{report}");
    assert!(report[&file]["helm"].is_null(), "{report}");
}
