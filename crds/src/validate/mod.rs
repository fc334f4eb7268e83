//! Offline validation of `PruneDistillJob` manifests, the way a kube-apiserver would check them:
//! unknown-field and type checks against the CRD's openAPIV3Schema, structural defaulting, then
//! the CRD's CEL rules (`x-kubernetes-validations`, evaluated with kube's `cel` feature), then
//! decoding into the Rust types.
//!
//! ```no_run
//! let yaml = std::fs::read_to_string("examples/quickstart.yaml").unwrap();
//! let validator = pruneforge_api::validate::ManifestValidator::new();
//! for job in validator.validate_yaml(&yaml).unwrap() {
//!     println!("{} is valid", job.metadata.name.unwrap_or_default());
//! }
//! ```

pub mod schema;
pub mod structural;

use std::fmt;

use kube::core::cel::{compile_schema, CompiledSchema, Validator};
use serde::Deserialize;
use serde_json::Value;

use crate::spec::PruneDistillJob;

/// Which check found an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorOrigin {
    /// Not a PruneDistillJob document (apiVersion, kind, metadata).
    Document,
    /// The openAPIV3Schema (types, required, enum, bounds, patterns, unknown fields).
    Schema,
    /// A CEL rule of the CRD.
    Cel,
    /// The Rust types could not decode the (valid) document.
    Decode,
}

/// One problem, located by its field path (e.g. `spec.pruning.blockSizes[0]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Which check found it.
    pub origin: ErrorOrigin,
    /// Field path, `spec.merge.models`; empty for the whole document.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationReport {
    /// `metadata.name` of the document, when it has one.
    pub name: Option<String>,
    /// The problems (never empty).
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "PruneDistillJob {name:?} is invalid:")?,
            None => write!(f, "PruneDistillJob is invalid:")?,
        }
        for e in &self.errors {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationReport {}

/// Why a YAML stream could not be validated.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not parseable as YAML.
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        /// 0-based document index.
        index: usize,
        /// Parser error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A document failed validation.
    #[error("document {index}: {report}")]
    Invalid {
        /// 0-based document index.
        index: usize,
        /// The problems.
        report: ValidationReport,
    },
}

/// Parses every document of a YAML stream into JSON values (empty documents are skipped).
pub fn load_documents(yaml: &str) -> Result<Vec<Value>, ManifestError> {
    let mut docs = Vec::new();
    for (index, de) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value =
            Value::deserialize(de).map_err(|source| ManifestError::Yaml { index, source })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Validates manifests against the CRD generated from this crate's types.
pub struct ManifestValidator {
    schema: Value,
    compiled: CompiledSchema,
    cel: Validator,
}

impl Default for ManifestValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl ManifestValidator {
    /// A validator for the current CRD.
    pub fn new() -> Self {
        Self::with_schema(crate::crd::open_api_v3_schema())
    }

    /// A validator for a given openAPIV3Schema (e.g. read from a committed CRD file).
    pub fn with_schema(schema: Value) -> Self {
        let compiled = compile_schema(&schema);
        ManifestValidator {
            schema,
            compiled,
            cel: Validator::new(),
        }
    }

    /// The schema this validator checks against.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Validates one document and decodes it.
    pub fn validate(&self, doc: &Value) -> Result<PruneDistillJob, ValidationReport> {
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fail = |errors: Vec<FieldError>| ValidationReport {
            name: name.clone(),
            errors,
        };

        let doc_errors = document_errors(doc);
        if !doc_errors.is_empty() {
            return Err(fail(doc_errors));
        }

        let pruned = schema::drop_non_nullable_nulls(&self.schema, doc);
        let defaulted = kube::core::cel::apply_defaults(&self.schema, &pruned);

        let schema_errors = schema::validate_value(&self.schema, &defaulted);
        if !schema_errors.is_empty() {
            return Err(fail(schema_errors));
        }

        if let Err(errors) = self.cel.validate_compiled(&self.compiled, &defaulted, None) {
            return Err(fail(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        origin: ErrorOrigin::Cel,
                        path: e.field_path.clone(),
                        message: e.message.clone(),
                    })
                    .collect(),
            ));
        }

        serde_json::from_value::<PruneDistillJob>(defaulted).map_err(|e| {
            fail(vec![FieldError {
                origin: ErrorOrigin::Decode,
                path: String::new(),
                message: format!("does not decode into PruneDistillJob: {e}"),
            }])
        })
    }

    /// Validates every document of a YAML stream.
    pub fn validate_yaml(&self, yaml: &str) -> Result<Vec<PruneDistillJob>, ManifestError> {
        load_documents(yaml)?
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                self.validate(doc)
                    .map_err(|report| ManifestError::Invalid { index, report })
            })
            .collect()
    }
}

/// Validates one document against the current CRD.
pub fn validate_manifest(doc: &Value) -> Result<PruneDistillJob, ValidationReport> {
    ManifestValidator::new().validate(doc)
}

fn document_errors(doc: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut err = |path: &str, message: String| {
        errors.push(FieldError {
            origin: ErrorOrigin::Document,
            path: path.to_string(),
            message,
        })
    };
    if !doc.is_object() {
        err("", "a manifest must be a YAML mapping".into());
        return errors;
    }
    let api_version = format!("{}/{}", crate::GROUP, crate::VERSION);
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v == api_version => {}
        other => err(
            "apiVersion",
            format!(
                "must be {api_version:?}, got {:?}",
                other.unwrap_or("nothing")
            ),
        ),
    }
    match doc.get("kind").and_then(Value::as_str) {
        Some(crate::KIND) => {}
        other => err(
            "kind",
            format!(
                "must be {:?}, got {:?}",
                crate::KIND,
                other.unwrap_or("nothing")
            ),
        ),
    }
    match doc.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if is_dns_subdomain(name) => {}
        Some(name) => err(
            "metadata.name",
            format!("{name:?} must be a lowercase DNS subdomain (a-z, 0-9, '-', '.'; at most 253 characters)"),
        ),
        None if doc.pointer("/metadata/generateName").is_some() => {}
        None => err("metadata.name", "Required value".into()),
    }
    errors
}

fn is_dns_subdomain(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 253
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'.')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}
