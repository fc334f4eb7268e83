//! Static checks of a CRD schema that a kube-apiserver would otherwise reject at install time:
//! the structural-schema rules, and bounds on everything a CEL rule reads (the apiserver
//! estimates each rule's worst-case cost from `maxItems`/`maxLength`/`maxProperties` and rejects
//! the CRD when the estimate is too high).

use regex::Regex;
use serde_json::{Map, Value};

const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];

/// Violations of the Kubernetes structural schema rules, as `path: problem` lines:
///
/// 1. every node (root, properties, items, additionalProperties) has a non-empty `type`, except
///    nodes with `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields`;
/// 2. inside `allOf`/`anyOf`/`oneOf`/`not` there is no `type`, `description`, `default`,
///    `additionalProperties` or `nullable` (except the int-or-string pattern), and every property
///    or `items` there is also specified outside;
/// 3. no `$ref`, `definitions`/`$defs` or `const`; `items` is a single schema; arrays have
///    `items`; `additionalProperties` and `properties` are not both set;
/// 4. at the root, `metadata` restricts at most `name` and `generateName`;
/// 5. `x-kubernetes-list-type: map` lists object items with `x-kubernetes-list-map-keys` that
///    are required or defaulted.
pub fn structural_violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    node(schema, "", false, &mut out);
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let allowed = ["name", "generateName"];
        if let Some(props) = meta.get("properties").and_then(Value::as_object) {
            for k in props.keys().filter(|k| !allowed.contains(&k.as_str())) {
                out.push(format!(
                    "metadata.{k}: only name and generateName may be restricted"
                ));
            }
        }
    }
    out
}

fn node(s: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        out.push(format!("{}: schema must be an object", display(path)));
        return;
    };
    for bad in ["$ref", "definitions", "$defs", "const"] {
        if obj.contains_key(bad) {
            out.push(format!("{}: `{bad}` is not allowed", display(path)));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let ty = obj.get("type").and_then(Value::as_str).unwrap_or("");

    if in_junctor {
        for bad in [
            "type",
            "description",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if obj.contains_key(bad) && !(int_or_string_branch(obj) && bad == "type") {
                out.push(format!(
                    "{}: `{bad}` is not allowed inside allOf/anyOf/oneOf/not",
                    display(path)
                ));
            }
        }
    } else if ty.is_empty() && !int_or_string && !preserve {
        out.push(format!("{}: missing `type`", display(path)));
    }

    if obj.get("items").is_some_and(Value::is_array) {
        out.push(format!(
            "{}: `items` must be a single schema",
            display(path)
        ));
    }
    if ty == "array" && !obj.contains_key("items") && !in_junctor {
        out.push(format!("{}: an array needs `items`", display(path)));
    }
    if obj.contains_key("properties")
        && obj
            .get("additionalProperties")
            .is_some_and(Value::is_object)
    {
        out.push(format!(
            "{}: `properties` and `additionalProperties` are mutually exclusive",
            display(path)
        ));
    }

    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            node(sub, &join(path, k), in_junctor, out);
        }
    }
    if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
        node(items, &format!("{path}[]"), in_junctor, out);
    }
    if let Some(add) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        node(add, &format!("{path}{{}}"), in_junctor, out);
    }
    for j in JUNCTORS {
        let branches: Vec<&Value> = match obj.get(j) {
            Some(Value::Array(a)) => a.iter().collect(),
            Some(v @ Value::Object(_)) => vec![v],
            _ => continue,
        };
        if int_or_string && j == "anyOf" {
            continue;
        }
        for b in branches {
            node(b, path, true, out);
            junctor_fields_outside(b, obj, path, out);
        }
    }
    if obj.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        list_map(obj, path, out);
    }
}

/// `anyOf: [{type: integer}, {type: string}]` next to `x-kubernetes-int-or-string: true`.
fn int_or_string_branch(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("type").and_then(Value::as_str),
        Some("integer" | "string")
    ) && obj.len() == 1
}

fn junctor_fields_outside(
    branch: &Value,
    outer: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    if let Some(props) = branch.get("properties").and_then(Value::as_object) {
        let outer_props = outer.get("properties").and_then(Value::as_object);
        for k in props.keys() {
            if outer_props.is_none_or(|p| !p.contains_key(k)) {
                out.push(format!(
                    "{}: property set in a junctor but not outside it",
                    join(path, k)
                ));
            }
        }
    }
    if branch.get("items").is_some() && !outer.contains_key("items") {
        out.push(format!(
            "{}: items set in a junctor but not outside it",
            display(path)
        ));
    }
}

fn list_map(obj: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let keys: Vec<&str> = obj
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        out.push(format!(
            "{}: list-type map needs x-kubernetes-list-map-keys",
            display(path)
        ));
    }
    let Some(items) = obj.get("items") else {
        return;
    };
    if items.get("type").and_then(Value::as_str) != Some("object") {
        out.push(format!(
            "{}: list-type map needs object items",
            display(path)
        ));
        return;
    }
    let required: Vec<&str> = items
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for k in keys {
        let prop = items.pointer(&format!("/properties/{k}"));
        let defaulted = prop.is_some_and(|p| p.get("default").is_some());
        if prop.is_none() || !(required.contains(&k) || defaulted) {
            out.push(format!(
                "{}: list map key {k} must be a required or defaulted property",
                display(path)
            ));
        }
    }
}

/// Fields of `metadata` the apiserver lets root-level CEL rules read (not in the schema).
const ROOT_METADATA: [&str; 2] = [".metadata.name", ".metadata.generateName"];

/// Unbounded inputs of CEL rules, as `path: problem` lines. For every node carrying
/// `x-kubernetes-validations`: each enclosing list needs `maxItems` and each enclosing map
/// `maxProperties` (they multiply how often the rule runs), and every list, string or map the
/// rule reads (`self`, `self.a.b`, ...) needs `maxItems` / `maxLength` /
/// `maxProperties`, with list items of type string bounded too.
pub fn cel_bound_violations(schema: &Value) -> Vec<String> {
    let Ok(refs) = Regex::new(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\()?") else {
        return vec!["internal: bad regex".into()];
    };
    let mut out = Vec::new();
    let mut stack = Vec::new();
    cel_nodes(schema, "", &mut stack, &refs, &mut out);
    out
}

fn cel_nodes<'a>(
    s: &'a Value,
    path: &str,
    ancestors: &mut Vec<(String, &'a Value)>,
    refs: &Regex,
    out: &mut Vec<String>,
) {
    if let Some(rules) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
        for (apath, a) in ancestors.iter() {
            if a.get("type").and_then(Value::as_str) == Some("array") && a.get("maxItems").is_none()
            {
                out.push(format!(
                    "{}: list encloses CEL rules at {} but has no maxItems",
                    display(apath),
                    display(path)
                ));
            }
            if a.get("additionalProperties").is_some_and(Value::is_object)
                && a.get("maxProperties").is_none()
            {
                out.push(format!(
                    "{}: map encloses CEL rules at {} but has no maxProperties",
                    display(apath),
                    display(path)
                ));
            }
        }
        for rule in rules
            .iter()
            .filter_map(|r| r.get("rule").and_then(Value::as_str))
        {
            for cap in refs.captures_iter(rule) {
                let mut chain = cap.get(1).map_or("", |m| m.as_str());
                if cap.get(2).is_some() {
                    // `self.a.b(` calls method b on self.a.
                    chain = chain.rsplit_once('.').map_or("", |(head, _)| head);
                }
                // Root rules may read the name (the apiserver bounds it: ≤ 253 characters).
                if path.is_empty() && ROOT_METADATA.contains(&chain) {
                    continue;
                }
                let mut target = s;
                let mut target_path = path.to_string();
                let mut found = true;
                for field in chain.split('.').filter(|f| !f.is_empty()) {
                    match target.pointer(&format!("/properties/{field}")) {
                        Some(t) => {
                            target = t;
                            target_path = join(&target_path, field);
                        }
                        None => {
                            out.push(format!(
                                "{}: rule {rule:?} reads unknown field self{chain}",
                                display(path)
                            ));
                            found = false;
                            break;
                        }
                    }
                }
                if found {
                    bounded(target, &target_path, rule, out);
                }
            }
        }
    }
    let Some(obj) = s.as_object() else { return };
    ancestors.push((path.to_string(), s));
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            cel_nodes(sub, &join(path, k), ancestors, refs, out);
        }
    }
    if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
        cel_nodes(items, &format!("{path}[]"), ancestors, refs, out);
    }
    if let Some(add) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        cel_nodes(add, &format!("{path}{{}}"), ancestors, refs, out);
    }
    ancestors.pop();
}

fn bounded(node: &Value, path: &str, rule: &str, out: &mut Vec<String>) {
    let has = |k: &str| node.get(k).is_some();
    match node.get("type").and_then(Value::as_str) {
        // The apiserver's cost estimate sizes a string by its maxLength (an enum alone is not
        // always taken into account), so enum strings read by rules get a maxLength too.
        Some("string") if !has("maxLength") => {
            out.push(format!(
                "{}: string read by CEL rule {rule:?} needs maxLength",
                display(path)
            ));
        }
        Some("array") => {
            if !has("maxItems") {
                out.push(format!(
                    "{}: list read by CEL rule {rule:?} needs maxItems",
                    display(path)
                ));
            }
            if let Some(items) = node.get("items") {
                bounded(items, &format!("{path}[]"), rule, out);
            }
        }
        Some("object")
            if node
                .get("additionalProperties")
                .is_some_and(Value::is_object)
                && !has("maxProperties") =>
        {
            out.push(format!(
                "{}: map read by CEL rule {rule:?} needs maxProperties",
                display(path)
            ));
        }
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn display(path: &str) -> &str {
    if path.is_empty() {
        "<root>"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn flags_non_structural_schemas() {
        let bad = json!({
            "type": "object",
            "properties": {
                "untyped": {"description": "x"},
                "union": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
                "r": {"$ref": "#/definitions/x", "type": "object"},
                "arr": {"type": "array"}
            }
        });
        let v = structural_violations(&bad).join("\n");
        assert!(v.contains("untyped: missing `type`"), "{v}");
        assert!(v.contains("union: missing `type`"), "{v}");
        assert!(v.contains("union: `type` is not allowed inside"), "{v}");
        assert!(v.contains("union: items set in a junctor"), "{v}");
        assert!(v.contains("r: `$ref` is not allowed"), "{v}");
        assert!(v.contains("arr: an array needs `items`"), "{v}");

        let good = json!({"type": "object", "properties": {
            "q": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "any": {"x-kubernetes-preserve-unknown-fields": true}}});
        assert!(structural_violations(&good).is_empty());
    }

    #[test]
    fn flags_unbounded_cel_inputs() {
        let schema = json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.xs.all(x, x.startsWith('a')) && self.s != ''"}],
            "properties": {
                "xs": {"type": "array", "items": {"type": "string"}},
                "s": {"type": "string", "maxLength": 3},
                "list": {"type": "array", "items": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.n > 0"}],
                    "properties": {"n": {"type": "integer"}}}}
            }
        });
        let v = cel_bound_violations(&schema).join("\n");
        assert!(v.contains("xs: list read by CEL rule"), "{v}");
        assert!(v.contains("xs[]: string read by CEL rule"), "{v}");
        assert!(!v.contains("s: string"), "{v}");
        assert!(v.contains("list: list encloses CEL rules at list[]"), "{v}");
    }
}
