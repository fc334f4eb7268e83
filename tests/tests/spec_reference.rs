//! docs/spec-reference.md is generated from the CRD's openAPIV3Schema
//! (crds/pruneforge.dev_prunedistilljobs.yaml): one Markdown table per object with each field's
//! path, type, default, description and validation. The test fails when the committed file is
//! stale; regenerate it with
//!
//!     UPDATE_DOCS=1 cargo test -p pruneforge-tests --release --test spec_reference

mod support;

use serde_json::Value;
use support::{read_repo_file, repo_path};

const CRD: &str = "crds/pruneforge.dev_prunedistilljobs.yaml";
const DOC: &str = "docs/spec-reference.md";
const REGENERATE: &str =
    "UPDATE_DOCS=1 cargo test -p pruneforge-tests --release --test spec_reference";

/// Embedded Kubernetes types: linked to the Kubernetes API reference instead of expanded.
const KUBERNETES_TYPES: &[(&str, &str, &str)] = &[
    (
        ".spec.runner.affinity",
        "core/v1 Affinity",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling",
    ),
    (
        ".spec.runner.env[]",
        "core/v1 EnvVar",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#environment-variables",
    ),
    (
        ".spec.runner.resources",
        "core/v1 ResourceRequirements",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#resources",
    ),
    (
        ".spec.runner.tolerations[]",
        "core/v1 Toleration",
        "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling",
    ),
    (
        ".status.conditions[]",
        "meta/v1 Condition",
        "https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/",
    ),
];

/// One object of the schema and where it sits.
struct ObjectNode<'a> {
    path: String,
    schema: &'a Value,
}

fn kubernetes_type(path: &str) -> Option<(&'static str, &'static str)> {
    KUBERNETES_TYPES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, name, url)| (*name, *url))
}

/// The object (or array-of-objects / map-of-objects) schema below `schema`, with the suffix
/// its path gets (`[]` for list items, `{}` for map values).
fn object_below(schema: &Value) -> Option<(&Value, &'static str)> {
    if schema.get("properties").is_some() {
        return Some((schema, ""));
    }
    if let Some(items) = schema.get("items") {
        return object_below(items)
            .map(|(s, suffix)| (s, if suffix.is_empty() { "[]" } else { suffix }));
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        return object_below(values)
            .map(|(s, suffix)| (s, if suffix.is_empty() { "{}" } else { suffix }));
    }
    None
}

/// Every object to document, depth first in schema order (Kubernetes types not expanded).
fn collect_objects<'a>(path: &str, schema: &'a Value, out: &mut Vec<ObjectNode<'a>>) {
    out.push(ObjectNode {
        path: path.to_string(),
        schema,
    });
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, child) in properties {
        let child_path = format!("{path}.{name}");
        if let Some((object, suffix)) = object_below(child) {
            let full = format!("{child_path}{suffix}");
            if kubernetes_type(&full).is_none() && kubernetes_type(&child_path).is_none() {
                collect_objects(&full, object, out);
            }
        }
    }
}

fn anchor(path: &str) -> String {
    path.chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn scalar_type(schema: &Value) -> String {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "int-or-string".into();
    }
    let base = schema.get("type").and_then(Value::as_str).unwrap_or("any");
    match schema.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base.to_string(),
    }
}

/// The type column: scalars with their format, `[]T` for lists, `map[string]T` for maps, and
/// links to the section of nested objects or to the Kubernetes reference.
fn type_of(path: &str, schema: &Value) -> String {
    if let Some((name, url)) = kubernetes_type(path) {
        return format!("[{name}]({url})");
    }
    if let Some(items) = schema.get("items") {
        return format!("[]{}", type_of(&format!("{path}[]"), items));
    }
    if schema.get("properties").is_some() {
        return format!("[object](#{})", anchor(path));
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        return format!("map[string]{}", type_of(&format!("{path}{{}}"), values));
    }
    scalar_type(schema)
}

fn cell(text: &str) -> String {
    text.trim()
        .replace('|', "\\|")
        .replace("\n\n", "<br><br>")
        .replace('\n', " ")
}

fn code(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    format!("`{}`", text.replace('|', "\\|"))
}

/// A bound as written by a person: `16`, not `16.0`.
fn number(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => v.to_string(),
    }
}

/// The validation column: required, enum, bounds, pattern, list semantics.
fn validation(schema: &Value, required: bool) -> String {
    let mut parts = Vec::new();
    if required {
        parts.push("**required**".to_string());
    }
    if schema.get("nullable") == Some(&Value::Bool(true)) {
        parts.push("nullable".to_string());
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let list: Vec<String> = values.iter().map(code).collect();
        parts.push(format!("one of {}", list.join(", ")));
    }
    let bound = |key: &str, label: &str, parts: &mut Vec<String>| {
        if let Some(v) = schema.get(key) {
            parts.push(format!("{label} {}", number(v)));
        }
    };
    bound("minimum", "≥", &mut parts);
    bound("maximum", "≤", &mut parts);
    bound("exclusiveMinimum", ">", &mut parts);
    bound("exclusiveMaximum", "<", &mut parts);
    bound("minLength", "length ≥", &mut parts);
    bound("maxLength", "length ≤", &mut parts);
    bound("minItems", "items ≥", &mut parts);
    bound("maxItems", "items ≤", &mut parts);
    bound("minProperties", "keys ≥", &mut parts);
    bound("maxProperties", "keys ≤", &mut parts);
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        parts.push(format!("pattern `{}`", pattern.replace('|', "\\|")));
    }
    if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
        parts.push("unique items".to_string());
    }
    if let Some(list_type) = schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        let keys = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| {
                let names: Vec<String> = k
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                format!(" (keys: {})", names.join(", "))
            })
            .unwrap_or_default();
        parts.push(format!("list-type {list_type}{keys}"));
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        parts.push(format!("{} CEL rule(s), see below", rules.len()));
    }
    parts.join("; ")
}

/// The Markdown of the whole reference.
fn generate(crd: &Value) -> String {
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let group = crd["spec"]["group"].as_str().unwrap_or_default();
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
    let version_name = version["name"].as_str().unwrap_or_default();
    let mut md = String::new();
    md.push_str(&format!("# {kind} reference ({group}/{version_name})\n\n"));
    md.push_str(&format!(
        "<!-- Generated from {CRD} by `{REGENERATE}`; do not edit. -->\n\n"
    ));
    md.push_str(&format!(
        "{}\n\n",
        cell(schema["description"].as_str().unwrap_or_default())
    ));
    md.push_str(&format!(
        "Short name `{}`; scope {}; status subresource {}.\n\n",
        crd["spec"]["names"]["shortNames"][0]
            .as_str()
            .unwrap_or_default(),
        crd["spec"]["scope"].as_str().unwrap_or_default(),
        if version["subresources"]["status"].is_object() {
            "on"
        } else {
            "off"
        }
    ));
    if let Some(columns) = version["additionalPrinterColumns"].as_array() {
        md.push_str("## `kubectl get` columns\n\n| Column | JSONPath | Type | Description |\n|---|---|---|---|\n");
        for c in columns {
            md.push_str(&format!(
                "| {} | `{}` | {} | {} |\n",
                cell(c["name"].as_str().unwrap_or_default()),
                c["jsonPath"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or_default(),
                cell(c["description"].as_str().unwrap_or_default())
            ));
        }
        md.push('\n');
    }

    let mut objects = Vec::new();
    for top in ["spec", "status"] {
        if let Some(s) = schema["properties"].get(top) {
            collect_objects(&format!(".{top}"), s, &mut objects);
        }
    }
    md.push_str("## Contents\n\n");
    for o in &objects {
        let depth = o.path.matches('.').count() - 1;
        md.push_str(&format!(
            "{}- [`{}`](#{})\n",
            "  ".repeat(depth),
            o.path,
            anchor(&o.path)
        ));
    }
    md.push('\n');

    for o in &objects {
        md.push_str(&format!("## `{}`\n\n", o.path));
        if let Some(d) = o.schema["description"].as_str() {
            md.push_str(&format!("{}\n\n", cell(d)));
        }
        let required: Vec<&str> = o.schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        md.push_str(
            "| Field | Type | Default | Description | Validation |\n|---|---|---|---|---|\n",
        );
        let properties = o.schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, field) in &properties {
            let path = format!("{}.{name}", o.path);
            let default = field.get("default").map(code).unwrap_or_default();
            md.push_str(&format!(
                "| `{name}` | {} | {default} | {} | {} |\n",
                type_of(&path, field),
                cell(field["description"].as_str().unwrap_or_default()),
                validation(field, required.contains(&name.as_str()))
            ));
        }
        md.push('\n');
        let mut rules = Vec::new();
        collect_rules(&o.path, o.schema, true, &mut rules);
        if !rules.is_empty() {
            md.push_str("CEL rules:\n\n");
            for (path, rule, message) in rules {
                md.push_str(&format!("- `{path}`: `{rule}` — {message}\n"));
            }
            md.push('\n');
        }
    }
    md
}

/// CEL rules on this object and on its scalar/list fields (nested objects list their own).
fn collect_rules(
    path: &str,
    schema: &Value,
    is_object: bool,
    out: &mut Vec<(String, String, String)>,
) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in rules {
            out.push((
                path.to_string(),
                r["rule"].as_str().unwrap_or_default().replace('`', "'"),
                cell(r["message"].as_str().unwrap_or("(no message)")),
            ));
        }
    }
    if is_object {
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, field) in properties {
                if object_below(field).is_none() {
                    collect_rules(&format!("{path}.{name}"), field, false, out);
                }
            }
        }
    }
}

fn crd_value() -> Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&read_repo_file(CRD)).expect("CRD YAML");
    serde_json::to_value(yaml).expect("CRD as JSON")
}

#[test]
fn spec_reference_is_up_to_date() {
    let generated = generate(&crd_value());
    let path = repo_path(DOC);
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let tmp = path.with_extension("md.tmp");
        std::fs::write(&tmp, &generated).expect("write temp");
        std::fs::rename(&tmp, &path).expect("rename");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{DOC} is stale (or missing): the CRD changed. Regenerate it with\n    {REGENERATE}"
    );
}

#[test]
fn reference_covers_every_field_of_the_schema() {
    let crd = crd_value();
    let md = generate(&crd);
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut objects = Vec::new();
    collect_objects(".spec", &schema["properties"]["spec"], &mut objects);
    collect_objects(".status", &schema["properties"]["status"], &mut objects);
    let mut fields = 0;
    for o in &objects {
        let section = format!("## `{}`\n", o.path);
        let start = md
            .find(&section)
            .unwrap_or_else(|| panic!("no section {}", o.path));
        let body = &md[start + section.len()..];
        let body = &body[..body.find("\n## ").unwrap_or(body.len())];
        for name in o.schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
        {
            assert!(
                body.contains(&format!("| `{name}` |")),
                "{}.{name} missing",
                o.path
            );
            fields += 1;
        }
    }
    assert!(fields > 100, "only {fields} fields documented");
    // Every Kubernetes type the generator links instead of expanding exists in the schema, so
    // a renamed field cannot silently get expanded or vanish.
    for (path, name, _) in KUBERNETES_TYPES {
        assert!(
            md.contains(&format!("[{name}](")),
            "{path} ({name}) not linked"
        );
    }
    // Spot checks of rendering.
    assert!(
        md.contains(
            "| `count` | integer (uint32) | `0` | GPUs per pod; 0 runs on CPU. | ≥ 0; ≤ 16 |"
        ),
        "gpu.count row"
    );
    assert!(md.contains("## `.spec.storage`"));
    assert!(md.contains("**required**"));
}

#[test]
fn generator_renders_types_defaults_and_validation() {
    let crd = serde_json::json!({
        "spec": {
            "group": "example.dev",
            "names": {"kind": "Thing", "shortNames": ["th"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "description": "A thing.",
                    "properties": {"spec": {
                        "description": "Spec | of a thing.",
                        "required": ["size"],
                        "x-kubernetes-validations": [{"rule": "self.size > 1", "message": "size must exceed 1"}],
                        "properties": {
                            "size": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 9, "description": "Size."},
                            "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "description": "Mode."},
                            "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "description": "Tags."},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels."},
                            "inner": {"type": "object", "description": "Inner.", "properties": {
                                "name": {"type": "string", "pattern": "^[a-z]+$", "description": "Name."}
                            }}
                        }
                    }}
                }}
            }]
        }
    });
    let md = generate(&crd);
    assert!(md.contains("# Thing reference (example.dev/v1)"), "{md}");
    assert!(
        md.contains("| `size` | integer (int32) |  | Size. | **required**; ≥ 0; ≤ 9 |"),
        "{md}"
    );
    assert!(
        md.contains("| `mode` | string | `\"a\"` | Mode. | one of `\"a\"`, `\"b\"` |"),
        "{md}"
    );
    assert!(
        md.contains("| `tags` | []string |  | Tags. | list-type set |"),
        "{md}"
    );
    assert!(md.contains("| `labels` | map[string]string |"), "{md}");
    assert!(md.contains("| `inner` | [object](#specinner) |"), "{md}");
    assert!(md.contains("## `.spec.inner`"), "{md}");
    assert!(
        md.contains("| `name` | string |  | Name. | pattern `^[a-z]+$` |"),
        "{md}"
    );
    assert!(md.contains("Spec \\| of a thing."), "{md}");
    assert!(
        md.contains("- `.spec`: `self.size > 1` — size must exceed 1"),
        "{md}"
    );
}
