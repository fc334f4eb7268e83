//! The generated CRD: committed file up to date, structural, CEL rules compile and are bounded,
//! names and columns as documented, schema defaults equal the Rust defaults.

use std::path::PathBuf;

use pruneforge_api::crd::{crd, crd_yaml, open_api_v3_schema, CRD_FILE};
use pruneforge_api::spec::PruneDistillJobSpec;
use pruneforge_api::validate::structural::{cel_bound_violations, structural_violations};
use serde_json::{json, Value};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE)
}

#[test]
fn committed_crd_is_up_to_date() {
    let generated = crd_yaml().expect("CRD serializes");
    let path = committed_path();
    if std::env::var_os("UPDATE_CRD").is_some() {
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, &generated).expect("write temp CRD");
        std::fs::rename(&tmp, &path).expect("rename CRD into place");
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale or missing. Regenerate it with\n  cargo run -p pruneforge-api --bin crdgen > crds/{CRD_FILE}\nor\n  UPDATE_CRD=1 cargo test -p pruneforge-api --release --test crd",
        path.display()
    );
}

#[test]
fn generated_yaml_parses_back_to_the_same_definition() {
    let yaml = crd_yaml().expect("CRD serializes");
    let parsed: Value = serde_yaml::from_str(&yaml).expect("generated CRD is YAML");
    assert!(
        parsed == serde_json::to_value(crd()).unwrap(),
        "YAML round trip changed the CRD"
    );
}

#[test]
fn schema_is_structural() {
    let v = structural_violations(&open_api_v3_schema());
    assert!(v.is_empty(), "non-structural schema:\n{}", v.join("\n"));
}

#[test]
fn cel_rules_read_only_bounded_values() {
    let v = cel_bound_violations(&open_api_v3_schema());
    assert!(v.is_empty(), "CEL cost bounds missing:\n{}", v.join("\n"));
}

#[test]
fn cel_rules_compile_and_have_messages() {
    let schema = open_api_v3_schema();
    let compiled = kube::core::cel::compile_schema(&schema);
    let errors: Vec<String> = compiled
        .compilation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "CEL rules do not compile: {errors:#?}");

    let mut rules = Vec::new();
    collect_rules(&schema, &mut rules);
    assert!(
        rules.len() >= 20,
        "expected the documented rules, found {}",
        rules.len()
    );
    for r in &rules {
        let message = r.get("message").and_then(Value::as_str).unwrap_or("");
        assert!(
            !message.is_empty() && !message.contains('\n'),
            "rule without a one-line message: {r}"
        );
        for f in ["oldSelf", "sortBy", "cel.bind"] {
            let rule = r["rule"].as_str().unwrap_or("");
            assert!(!rule.contains(f), "{f} in {rule}");
        }
    }
}

#[test]
fn cel_rules_pass_static_analysis() {
    // kube-cel's scope check (only self/oldSelf and the root variables) and its coarse cost
    // estimate, run on the schema node that carries each rule.
    let mut nodes = Vec::new();
    rule_nodes(&open_api_v3_schema(), &mut nodes);
    assert!(!nodes.is_empty());
    for node in nodes {
        let compiled = kube::core::cel::compile_schema(&node);
        for rule in node["x-kubernetes-validations"].as_array().unwrap() {
            let rule = rule["rule"].as_str().unwrap();
            let warnings = kube::core::cel::analyze_rule(
                rule,
                &compiled,
                kube::core::cel::ScopeContext::CrdValidation,
            );
            // kube-cel's scope check also reports comprehension variables (`m` in
            // `list.all(m, ...)`); those are bound by the macro, not free.
            let bound: Vec<String> = comprehension_vars(rule);
            let real: Vec<_> = warnings
                .iter()
                .filter(|w| {
                    !(w.kind == kube::core::cel::WarningKind::WrongScope
                        && bound
                            .iter()
                            .any(|v| w.message.contains(&format!("variable '{v}'"))))
                })
                .collect();
            assert!(real.is_empty(), "{rule}: {real:?}");
        }
    }
}

fn comprehension_vars(rule: &str) -> Vec<String> {
    let re = regex::Regex::new(
        r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,",
    )
    .unwrap();
    re.captures_iter(rule).map(|c| c[1].to_string()).collect()
}

fn rule_nodes(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.contains_key("x-kubernetes-validations") {
                out.push(v.clone());
            }
            m.values().for_each(|c| rule_nodes(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| rule_nodes(c, out)),
        _ => {}
    }
}

fn collect_rules(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
                out.extend(rules.iter().cloned());
            }
            m.values().for_each(|c| collect_rules(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_rules(c, out)),
        _ => {}
    }
}

#[test]
fn names_scope_subresources_and_printer_columns() {
    let crd = crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("prunedistilljobs.pruneforge.dev")
    );
    assert_eq!(crd.spec.group, "pruneforge.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "PruneDistillJob");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pdj".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(version.served && version.storage);
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some(), "status subresource");
    let columns: Vec<(String, String)> = version
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| (c.name.clone(), c.json_path.clone()))
        .collect();
    let expected = [
        ("Phase", ".status.phase"),
        ("Stage", ".status.currentStage"),
        ("Pruned", ".status.prunedBlocks"),
        ("Recovery", ".status.bestRecovery.percent"),
        ("Age", ".metadata.creationTimestamp"),
    ];
    assert_eq!(
        columns,
        expected
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec()
    );
    // Every column path exists in the status schema.
    let schema = open_api_v3_schema();
    for p in ["phase", "currentStage", "prunedBlocks", "bestRecovery"] {
        assert!(
            schema
                .pointer(&format!("/properties/status/properties/{p}"))
                .is_some(),
            "{p}"
        );
    }
}

#[test]
fn every_field_has_a_description() {
    let schema = open_api_v3_schema();
    let mut missing = Vec::new();
    described(&schema["properties"]["spec"], "spec", &mut missing);
    described(&schema["properties"]["status"], "status", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without description:\n{}",
        missing.join("\n")
    );
}

fn described(node: &Value, path: &str, missing: &mut Vec<String>) {
    if node
        .get("description")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        missing.push(path.to_string());
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            described(v, &format!("{path}.{k}"), missing);
        }
    }
    if let Some(items) = node.get("items") {
        if items.get("properties").is_some() {
            for (k, v) in items["properties"].as_object().into_iter().flatten() {
                described(v, &format!("{path}[].{k}"), missing);
            }
        }
    }
}

#[test]
fn documented_defaults_are_in_the_schema() {
    let s = open_api_v3_schema();
    let spec = "/properties/spec/properties";
    let cases = [
        ("/model/properties/source", json!("embedded")),
        ("/calibration/properties/sequences", json!(64)),
        ("/calibration/properties/seqLen", json!(128)),
        (
            "/calibration/properties/dataset/default/uri",
            json!("builtin:alpaca"),
        ),
        ("/pruning/properties/metric", json!("angular-last-token")),
        ("/pruning/properties/blockSizes", json!([6])),
        ("/pruning/properties/excludeFirstLayer", json!(true)),
        ("/pruning/properties/excludeLastLayer", json!(true)),
        (
            "/distillation/properties/answerCheck/properties/bannedPhrases",
            json!([
                "reference answer",
                "your response",
                "my response",
                "your own response",
                "now it's your turn"
            ]),
        ),
        (
            "/distillation/properties/answerCheck/properties/bannedPrefixes",
            json!(["Your turn"]),
        ),
        (
            "/recovery/properties/lora/properties/targetModules",
            json!([
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj"
            ]),
        ),
        ("/speculative/properties/draftTokens", json!(4)),
        (
            "/runner/properties/gpu/properties/resourceName",
            json!("nvidia.com/gpu"),
        ),
        ("/storage/properties/retention", json!("Retain")),
        ("/maxParallelStages", json!(2)),
    ];
    for (path, expected) in cases {
        let node = s
            .pointer(&format!("{spec}{path}"))
            .unwrap_or_else(|| panic!("{path} missing"));
        let got = if path.contains("/default/") {
            node.clone()
        } else {
            node["default"].clone()
        };
        assert_eq!(got, expected, "default of {path}");
    }
}

#[test]
fn schema_defaults_equal_rust_defaults() {
    // A minimal manifest defaulted by the schema must decode to the same spec as the Rust
    // defaults, and serialize identically: the two default paths never drift apart.
    let schema = open_api_v3_schema();
    let minimal = json!({
        "apiVersion": "pruneforge.dev/v1alpha1",
        "kind": "PruneDistillJob",
        "metadata": {"name": "x"},
        "spec": {"storage": {"uri": "file://./out"}}
    });
    let defaulted = kube::core::cel::apply_defaults(&schema, &minimal);
    let rust = serde_json::to_value(PruneDistillJobSpec::with_storage("file://./out")).unwrap();
    assert_eq!(defaulted["spec"], rust);
}

#[test]
fn enums_are_kebab_case_strings() {
    let s = open_api_v3_schema();
    let methods =
        &s["properties"]["spec"]["properties"]["recovery"]["properties"]["methods"]["items"];
    assert_eq!(methods["type"], "string");
    assert_eq!(
        methods["enum"],
        json!([
            "none",
            "sft",
            "self-distill",
            "logit-kd",
            "sft+logit-kd",
            "self-distill+logit-kd"
        ])
    );
    let metric = &s["properties"]["spec"]["properties"]["pruning"]["properties"]["metric"];
    assert_eq!(
        metric["enum"],
        json!([
            "angular-last-token",
            "angular-all-tokens",
            "block-influence",
            "perplexity"
        ])
    );
}

#[test]
fn names_longer_than_a_label_value_are_rejected() {
    // The name is copied into the `pruneforge.dev/job` label (values ≤ 63 characters): a
    // longer (but valid DNS subdomain) name must fail validation, not every create later.
    use pruneforge_api::validate::{ErrorOrigin, ManifestValidator};
    let doc = |name: &str| {
        json!({
            "apiVersion": "pruneforge.dev/v1alpha1",
            "kind": "PruneDistillJob",
            "metadata": {"name": name},
            "spec": {"storage": {"uri": "file:///data/out"}, "recovery": {"methods": ["none"]}}
        })
    };
    let validator = ManifestValidator::new();
    if let Err(r) = validator.validate(&doc(&"a".repeat(63))) {
        panic!("{r}");
    }
    for len in [64, 100, 253] {
        let report = validator
            .validate(&doc(&"a".repeat(len)))
            .expect_err("a name longer than 63 characters is invalid");
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.origin == ErrorOrigin::Cel && e.message.contains("63 characters")),
            "{report}"
        );
    }
    // generateName-only documents are named by the apiserver (which checks the final name).
    let mut generated = doc("x");
    generated["metadata"] = json!({"generateName": "quickstart-"});
    assert!(validator.validate(&generated).is_ok());
    // The rule is in the CRD the apiserver gets.
    let rules = &open_api_v3_schema()["x-kubernetes-validations"];
    assert!(
        rules.to_string().contains("size(self.metadata.name) <= 63"),
        "{rules}"
    );
}

#[test]
fn preference_rules_hold_in_the_schema() {
    use pruneforge_api::validate::{ErrorOrigin, ManifestValidator};
    let doc = |preference: Value| {
        json!({
            "apiVersion": "pruneforge.dev/v1alpha1",
            "kind": "PruneDistillJob",
            "metadata": {"name": "pref"},
            "spec": {
                "storage": {"uri": "file:///data/out"},
                "distillation": {"datasets": [{"name": "a", "uri": "builtin:alpaca", "format": "alpaca"}]},
                "recovery": {"methods": ["none", "sft"], "preference": preference}
            }
        })
    };
    let validator = ManifestValidator::new();
    let ok = validator
        .validate(&doc(
            json!({"spin": {}, "dpo": {"dataset": {"uri": "s3://b/p.jsonl"}}}),
        ))
        .unwrap_or_else(|r| panic!("{r}"));
    let pref = ok.spec.recovery.preference.expect("preference");
    assert_eq!(pref.after, [pruneforge_api::spec::RecoveryMethod::Sft]);
    let spin = pref.spin.expect("spin");
    assert_eq!((spin.iterations, spin.beta), (2, 0.1));
    for (preference, needle) in [
        (json!({}), "set dpo, spin or both"),
        (
            json!({"dpo": {"dataset": {"uri": "s3://b/p.jsonl"}, "loss": "ipo", "labelSmoothing": 0.1}}),
            "labelSmoothing applies",
        ),
        (
            json!({"spin": {"loss": "ipo"}}),
            "SPIN uses sigmoid or hinge",
        ),
    ] {
        let report = validator
            .validate(&doc(preference.clone()))
            .expect_err("invalid preference");
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.origin == ErrorOrigin::Cel && e.message.contains(needle)),
            "{preference}: {report}"
        );
    }
    let report = validator
        .validate(&doc(json!({"spin": {"iterations": 9}})))
        .expect_err("too many iterations");
    assert!(report.to_string().contains("iterations"), "{report}");
}
