//! The deployment docs show only manifests that would be accepted: every YAML block of
//! docs/{install,gitops,storage,gpu,images}.md is parsed, built-in kinds are validated with
//! kubernetes-validate (Kubernetes 1.32, strict), PruneDistillJobs with pruneforge-api's
//! validator (CRD schema, defaults, CEL rules), Helm values blocks (first line `# values.yaml`)
//! by values.schema.json and Helm; JSON blocks must parse.

mod support;

use pruneforge_api::validate::ManifestValidator;
use serde_json::Value;
use support::{chart_tool_json, fenced_blocks, read_repo_file, yaml_documents};

const DOCS: &[&str] = &[
    "docs/install.md",
    "docs/gitops.md",
    "docs/storage.md",
    "docs/gpu.md",
    "docs/images.md",
];

/// Kinds of other projects' CRDs: no schema here; their shape is checked where they matter
/// (tests/tests/gitops.rs for the Argo CD Applications).
const FOREIGN_GROUPS: &[&str] = &["argoproj.io/", "kueue.x-k8s.io/"];

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docs-blocks");
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir.join(name)
}

#[test]
fn yaml_blocks_are_valid_manifests_or_values() {
    let validator = ManifestValidator::new();
    let mut builtin_files = Vec::new();
    let mut values_files = Vec::new();
    let mut jobs = 0;
    for doc in DOCS {
        for (line, block) in fenced_blocks(&read_repo_file(doc), "yaml") {
            let label = format!("{doc}:{line}");
            let file = scratch(&format!("{}-{line}.yaml", doc.replace(['/', '.'], "_")));
            if block.starts_with("# values.yaml") {
                std::fs::write(&file, &block).expect("write");
                values_files.push((label, file.to_string_lossy().to_string()));
                continue;
            }
            let objects = yaml_documents(&block);
            assert!(!objects.is_empty(), "{label}: empty YAML block");
            let mut builtin = String::new();
            for object in &objects {
                let api_version = object["apiVersion"].as_str().unwrap_or_default();
                assert!(
                    !api_version.is_empty() && object["kind"].is_string(),
                    "{label}: a block that is not a Kubernetes object must start with `# values.yaml`"
                );
                if api_version.starts_with("pruneforge.dev/") {
                    if let Err(report) = validator.validate(object) {
                        panic!("{label}: invalid PruneDistillJob: {report}");
                    }
                    jobs += 1;
                } else if !FOREIGN_GROUPS.iter().any(|g| api_version.starts_with(g)) {
                    builtin.push_str("---\n");
                    builtin.push_str(&serde_yaml::to_string(object).expect("yaml"));
                }
            }
            if !builtin.is_empty() {
                std::fs::write(&file, builtin).expect("write");
                builtin_files.push((label, file.to_string_lossy().to_string()));
            }
        }
    }
    assert!(
        jobs >= 3,
        "expected the PruneDistillJob examples, found {jobs}"
    );

    let mut args = vec!["validate"];
    args.extend(builtin_files.iter().map(|(_, f)| f.as_str()));
    let report = chart_tool_json(&args);
    let entries = report.as_array().expect("list");
    assert!(entries.len() >= 6, "{report}");
    for entry in entries {
        let label = builtin_files
            .iter()
            .find(|(_, f)| entry["file"] == f.as_str())
            .map(|(l, _)| l.as_str())
            .unwrap_or("?");
        assert_eq!(
            entry["checked"], true,
            "{label}: {} {} is unknown to kubernetes-validate",
            entry["apiVersion"], entry["kind"]
        );
        assert_eq!(entry["errors"], serde_json::json!([]), "{label}: {entry}");
    }

    let mut args = vec!["check-values"];
    args.extend(values_files.iter().map(|(_, f)| f.as_str()));
    assert!(values_files.len() >= 3, "values blocks: {values_files:?}");
    let report = chart_tool_json(&args);
    for (label, file) in &values_files {
        let entry = &report[file.as_str()];
        assert_eq!(
            entry["jsonschema"],
            serde_json::json!([]),
            "{label}: {entry}"
        );
        assert!(entry["helm"].is_null(), "{label}: Helm rejects it: {entry}");
    }
}

#[test]
fn json_blocks_parse_and_the_lifecycle_rule_aborts_multipart_uploads() {
    let mut lifecycle = None;
    for doc in DOCS {
        for (line, block) in fenced_blocks(&read_repo_file(doc), "json") {
            let value: Value = serde_json::from_str(&block)
                .unwrap_or_else(|e| panic!("{doc}:{line}: invalid JSON: {e}"));
            if value.get("Rules").is_some() {
                lifecycle = Some(value);
            }
        }
    }
    let lifecycle = lifecycle.expect("docs/storage.md shows an S3 lifecycle configuration");
    let rule = &lifecycle["Rules"][0];
    assert_eq!(rule["Status"], "Enabled");
    assert!(
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
            .as_u64()
            .is_some_and(|d| d >= 1),
        "{rule}"
    );
}

#[test]
fn storage_md_names_every_variable_the_runner_reads() {
    let doc = read_repo_file("docs/storage.md");
    // The runner's storage module documents the variables it reads; these are the ones users set.
    let storage_docs = read_repo_file("runner/src/storage/mod.rs");
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "PRUNEFORGE_S3_ENDPOINT",
        "AWS_ALLOW_HTTP",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCOUNT_NAME",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_SAS_KEY",
    ] {
        assert!(
            storage_docs.contains(var),
            "runner/src/storage/mod.rs no longer mentions {var}: update docs/storage.md"
        );
        assert!(doc.contains(var), "docs/storage.md does not explain {var}");
    }
    for words in [
        "_SUCCESS",
        "AbortIncompleteMultipartUpload",
        "pvcName",
        "ReadWriteMany",
    ] {
        assert!(doc.contains(words), "docs/storage.md lacks {words}");
    }
}
