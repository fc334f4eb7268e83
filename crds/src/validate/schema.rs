//! A validator for the OpenAPI v3 subset Kubernetes uses in structural CRD schemas: `type`,
//! `nullable`, `required`, `properties`, `additionalProperties`, `enum`, `minimum`/`maximum`
//! (and their exclusive forms), `multipleOf`, `minLength`/`maxLength`, `pattern`,
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `items`, `allOf`/`anyOf`/`oneOf`/
//! `not`, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields` and
//! `x-kubernetes-list-type` (set / map uniqueness). Unknown fields are errors, as with
//! `kubectl apply` (strict field validation). `apiVersion`, `kind` and `metadata` at the root are checked by the caller.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use regex::Regex;
use serde_json::{Map, Value};

use super::{ErrorOrigin, FieldError};

/// Every schema violation of `value`.
pub fn validate_value(schema: &Value, value: &Value) -> Vec<FieldError> {
    let mut ctx = Ctx::default();
    walk(schema, value, "", true, &mut ctx);
    ctx.errors
}

/// Removes `null` values of fields that are not `nullable`, as the apiserver does before
/// defaulting, so that `field: null` means "use the default".
pub fn drop_non_nullable_nulls(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut out = Map::new();
            for (k, v) in obj {
                let sub = props.and_then(|p| p.get(k)).or(additional);
                match sub {
                    Some(sub) => {
                        if v.is_null() && !is_nullable(sub) {
                            continue;
                        }
                        out.insert(k.clone(), drop_non_nullable_nulls(sub, v));
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(sub) => Value::Array(
                items
                    .iter()
                    .map(|v| drop_non_nullable_nulls(sub, v))
                    .collect(),
            ),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

#[derive(Default)]
struct Ctx {
    errors: Vec<FieldError>,
    regexes: RefCell<HashMap<String, Option<Regex>>>,
}

impl Ctx {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            origin: ErrorOrigin::Schema,
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn regex_matches(&self, pattern: &str, s: &str) -> Option<bool> {
        let mut cache = self.regexes.borrow_mut();
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok());
        re.as_ref().map(|re| re.is_match(s))
    }
}

fn is_nullable(schema: &Value) -> bool {
    schema.get("nullable").and_then(Value::as_bool) == Some(true)
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(77).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn walk(schema: &Value, value: &Value, path: &str, root: bool, ctx: &mut Ctx) {
    if value.is_null() {
        if !is_nullable(schema) {
            ctx.error(path, "must not be null");
        }
        return;
    }

    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if int_or_string {
        if !(is_integer(value) || value.is_string()) {
            ctx.error(
                path,
                format!("must be an integer or a string, got {}", type_name(value)),
            );
            return;
        }
    } else if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            ctx.error(
                path,
                format!("must be of type {ty}, got {}", type_name(value)),
            );
            return;
        }
    }

    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.iter().any(|o| o == value) {
            let allowed: Vec<String> = options.iter().map(short).collect();
            ctx.error(
                path,
                format!(
                    "unsupported value {}; supported values: {}",
                    short(value),
                    allowed.join(", ")
                ),
            );
        }
    }

    match value {
        Value::String(s) => check_string(schema, s, path, ctx),
        Value::Number(_) => check_number(schema, value, path, ctx),
        Value::Array(items) => check_array(schema, items, path, ctx),
        Value::Object(obj) => check_object(schema, obj, path, root, ctx),
        _ => {}
    }

    check_junctors(schema, value, path, ctx);
}

fn check_string(schema: &Value, s: &str, path: &str, ctx: &mut Ctx) {
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            ctx.error(path, format!("must be at least {min} characters long"));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            ctx.error(path, format!("may not be longer than {max} characters"));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match ctx.regex_matches(pattern, s) {
            Some(true) => {}
            Some(false) => ctx.error(path, format!("{s:?} must match the pattern {pattern}")),
            None => ctx.error(
                path,
                format!("the schema pattern {pattern} is not a valid regex"),
            ),
        }
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, ctx: &mut Ctx) {
    let Some(x) = value.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            ctx.error(path, format!("{} must be {rel} {min}", short(value)));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = flag(schema, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            ctx.error(path, format!("{} must be {rel} {max}", short(value)));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 && ((x / m).round() * m - x).abs() > 1e-9 * x.abs().max(1.0) {
            ctx.error(path, format!("{} must be a multiple of {m}", short(value)));
        }
    }
}

fn check_array(schema: &Value, items: &[Value], path: &str, ctx: &mut Ctx) {
    let n = items.len() as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if n < min {
            ctx.error(path, format!("must have at least {min} item(s), has {n}"));
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if n > max {
            ctx.error(path, format!("must have at most {max} item(s), has {n}"));
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            walk(item_schema, item, &format!("{path}[{i}]"), false, ctx);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    ctx.error(
                        &format!("{path}[{i}]"),
                        format!("duplicate value {}", short(item)),
                    );
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let id: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(*k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(id.clone()) {
                    ctx.error(
                        &format!("{path}[{i}]"),
                        format!(
                            "duplicate entry with key ({}) = ({})",
                            keys.join(", "),
                            id.join(", ")
                        ),
                    );
                }
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, obj: &Map<String, Value>, path: &str, root: bool, ctx: &mut Ctx) {
    let n = obj.len() as u64;
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if n < min {
            ctx.error(path, format!("must have at least {min} field(s)"));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if n > max {
            ctx.error(path, format!("must have at most {max} field(s)"));
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if obj.get(field).is_none_or(Value::is_null) {
                ctx.error(&join(path, field), "Required value");
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    for (k, v) in obj {
        let sub_path = join(path, k);
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            // Type meta and ObjectMeta are checked by the apiserver itself (and by
            // `document_errors` here), not by the CRD schema.
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            walk(sub, v, &sub_path, false, ctx);
        } else if let Some(sub) = additional.filter(|a| a.is_object()) {
            walk(sub, v, &sub_path, false, ctx);
        } else if !(preserve || additional == Some(&Value::Bool(true))) {
            let mut known: Vec<&str> = props
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            known.sort_unstable();
            ctx.error(
                &sub_path,
                format!("unknown field \"{k}\"; known fields: {}", known.join(", ")),
            );
        }
    }
}

fn check_junctors(schema: &Value, value: &Value, path: &str, ctx: &mut Ctx) {
    let branch_ok = |branch: &Value, ctx: &Ctx| -> bool {
        let mut sub = Ctx {
            errors: Vec::new(),
            regexes: RefCell::new(ctx.regexes.borrow().clone()),
        };
        // Junctor branches only carry value validations, never unknown-field rules.
        let mut relaxed = branch.clone();
        if let Some(o) = relaxed.as_object_mut() {
            o.insert(
                "x-kubernetes-preserve-unknown-fields".into(),
                Value::Bool(true),
            );
        }
        walk(&relaxed, value, path, false, &mut sub);
        sub.errors.is_empty()
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for branch in all {
            let mut relaxed = branch.clone();
            if let Some(o) = relaxed.as_object_mut() {
                o.insert(
                    "x-kubernetes-preserve-unknown-fields".into(),
                    Value::Bool(true),
                );
            }
            walk(&relaxed, value, path, false, ctx);
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.is_empty() && !any.iter().any(|b| branch_ok(b, ctx)) {
            ctx.error(path, "must match at least one of the allowed forms (anyOf)");
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one.iter().filter(|b| branch_ok(b, ctx)).count();
        if !one.is_empty() && matching != 1 {
            ctx.error(
                path,
                format!("must match exactly one of the allowed forms (oneOf), matches {matching}"),
            );
        }
    }
    if let Some(not) = schema.get("not") {
        if branch_ok(not, ctx) {
            ctx.error(path, "must not match the forbidden form (not)");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(schema: &Value, value: &Value) -> Vec<String> {
        validate_value(schema, value)
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn checks_types_bounds_enums_patterns_and_unknown_fields() {
        let schema = json!({
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {"type": "integer", "minimum": 1, "maximum": 3},
                "b": {"type": "string", "enum": ["x", "y"]},
                "c": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 4},
                "d": {"type": "array", "maxItems": 2, "items": {"type": "number"},
                      "x-kubernetes-list-type": "set"},
                "e": {"type": "object", "additionalProperties": {"type": "string"}},
                "f": {"x-kubernetes-int-or-string": true},
                "g": {"type": "string", "nullable": true}
            }
        });
        assert!(paths(&schema, &json!({"a": 2, "b": "x", "c": "ab", "d": [1.5], "e": {"k": "v"}, "f": "1Gi", "g": null})).is_empty());
        let errs = paths(
            &schema,
            &json!({"a": 5, "b": "z", "c": "ABCDEF", "d": [1, 1, 2], "e": {"k": 1}, "f": 1.5, "h": 1, "g": 2}),
        );
        let joined = errs.join("\n");
        for needle in [
            "a: 5 must be less than or equal to 3",
            "b: unsupported value \"z\"",
            "c: may not be longer than 4",
            "c: \"ABCDEF\" must match the pattern",
            "d: must have at most 2 item(s)",
            "d[1]: duplicate value 1",
            "e.k: must be of type string",
            "f: must be an integer or a string",
            "h: unknown field \"h\"",
            "g: must be of type string",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        let missing = paths(&schema, &json!({}));
        assert_eq!(missing, vec!["a: Required value".to_string()]);
    }

    #[test]
    fn list_map_keys_must_be_unique() {
        let schema = json!({"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}}}});
        let errs = paths(
            &schema,
            &json!([{"name": "a"}, {"name": "b"}, {"name": "a"}]),
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("[2]: duplicate entry"), "{errs:?}");
    }

    #[test]
    fn nulls_of_non_nullable_fields_are_dropped() {
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer", "nullable": true}}});
        let out = drop_non_nullable_nulls(&schema, &json!({"a": null, "b": null}));
        assert_eq!(out, json!({"b": null}));
    }
}
