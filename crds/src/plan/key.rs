//! Content-addressed cache keys and artifact paths.
//!
//! A stage's key is the sha256 of the canonical JSON (object keys sorted, no whitespace) of
//! `{"salt": KEY_SALT, "kind": ..., "params": <cache material>, "inputs": {name: key}}`. A stage
//! whose kind, parameters and input keys are equal produces equal output, so its artifacts are
//! stored under a path derived from the key and shared by every job using the same storage.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::StageKind;
use crate::params::StageParams;

/// Salt of every cache key; bump the trailing number when a stage's output format or semantics
/// change so old artifacts are no longer reused.
pub const KEY_SALT: &str = "pruneforge.dev/v1alpha1 stage-key 1";

/// Hex digits of the key used in artifact paths.
pub const KEY_PATH_HEX: usize = 16;

/// Serializes `value` with object keys sorted recursively and no whitespace.
pub fn canonical_json(value: &Value) -> String {
    sorted(value).to_string()
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The cache key (64 hex digits) of a stage with these parameters and input keys
/// (input name → key of the producing stage). `compute_dtype` (e.g. `bf16`) enters the key of
/// a model-computing stage as `"dtype"`; `None` (f32) leaves the material as it always was.
pub fn cache_key(
    params: &StageParams,
    inputs: &BTreeMap<String, String>,
    compute_dtype: Option<&str>,
) -> String {
    let mut material = serde_json::json!({
        "salt": KEY_SALT,
        "kind": params.kind().as_str(),
        "params": params.cache_material(),
        "inputs": inputs,
    });
    if let (Some(dtype), Some(obj)) = (compute_dtype, material.as_object_mut()) {
        if params.kind().computes_with_model() {
            obj.insert("dtype".into(), dtype.into());
        }
    }
    hex::encode(Sha256::digest(canonical_json(&material).as_bytes()))
}

/// `<storage root>/<kind>/<first 16 hex of key>/`.
pub fn artifact_uri(storage_root: &str, kind: StageKind, key: &str) -> String {
    let prefix = key.get(..KEY_PATH_HEX).unwrap_or(key);
    format!(
        "{}/{}/{}/",
        storage_root.trim_end_matches('/'),
        kind.as_str(),
        prefix
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_nested_keys() {
        let a = serde_json::json!({"b": 1, "a": {"y": [ {"d": 1, "c": 2} ], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"c":2,"d":1}]},"b":1}"#
        );
    }

    #[test]
    fn artifact_uri_trims_slashes() {
        let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            artifact_uri("s3://bucket/prefix/", StageKind::Prune, key),
            "s3://bucket/prefix/prune/0123456789abcdef/"
        );
    }
}
