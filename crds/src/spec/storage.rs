//! Where stage artifacts live.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to the artifacts when the job is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Retention {
    /// Keep the artifacts (they are content-addressed and shared with other jobs).
    #[default]
    Retain,
    /// Delete the artifacts this job wrote (the operator's finalizer removes them).
    Delete,
}

/// Object storage for artifacts. Each stage writes to `<uri>/<stage kind>/<16 hex of its cache
/// key>/`, so jobs sharing the same storage reuse each other's identical work.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::uri::cel_scheme_match("self.uri")).message(format!("spec.storage.uri must start with {}", crate::uri::schemes_prose()).as_str()).field_path(".uri"),
    validation = Rule::new("!has(self.pvcName) || self.uri.startsWith('file://')").message("spec.storage.pvcName is only used with a file:// storage uri").field_path(".pvcName")
)]
pub struct StorageSpec {
    /// Artifact root: `file://<path>` (a path relative to the job file for local runs, or inside
    /// the `pvcName` volume in a cluster), `s3://bucket/prefix`, `gs://bucket/prefix` or
    /// `az://container/prefix`.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
    /// Name of a Secret in the job's namespace whose keys are passed to the runner as environment
    /// variables (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL). Credentials
    /// never go in the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub secret_ref: Option<String>,
    /// PersistentVolumeClaim mounted at the root of a `file://` uri in stage pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub pvc_name: Option<String>,
    /// Retain (default) or Delete the job's artifacts when the job is deleted.
    #[serde(default)]
    pub retention: Retention,
}

impl StorageSpec {
    /// A storage spec with the given root and default settings.
    pub fn new(uri: impl Into<String>) -> Self {
        StorageSpec {
            uri: uri.into(),
            secret_ref: None,
            pvc_name: None,
            retention: Retention::Retain,
        }
    }

    /// The root URI without trailing slashes.
    pub fn root(&self) -> &str {
        self.uri.trim_end_matches('/')
    }
}
