//! `Storage::open`: builds the right `ObjectStore` for a [`StorageUri`] from environment variables.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3ConditionalPut};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore};

use super::error::{Result, StorageError};
use super::uri::StorageUri;

/// Environment variable that overrides the S3 endpoint (takes precedence over `AWS_ENDPOINT_URL`).
pub const PRUNEFORGE_S3_ENDPOINT: &str = "PRUNEFORGE_S3_ENDPOINT";

/// An opened storage location: an object store plus the root prefix inside it.
///
/// Cheap to clone; all methods take `&self`.
#[derive(Clone, Debug)]
pub struct Storage {
    uri: StorageUri,
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// The environment it was opened with, for [`Storage::reopen`].
    env: OpenedEnv,
}

/// The variables a storage was opened with; `Debug` shows only their names (they hold secrets).
#[derive(Clone)]
struct OpenedEnv(Arc<Vec<(String, String)>>);

impl std::fmt::Debug for OpenedEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl Storage {
    /// Opens `uri`, configuring credentials and endpoints from the process environment (see the
    /// [module docs](super) for the variables). A local root directory is created if missing.
    /// Nothing is contacted yet: bad credentials show up on the first request.
    pub fn open(uri: &str) -> Result<Self> {
        Self::open_with_env(uri, process_env())
    }

    /// Opens `uri` with an explicit environment (same variable names as [`Storage::open`]).
    ///
    /// Used where the environment is handed over as data, e.g. by tests that run several
    /// S3 servers at once, or by a caller that forwards a pod's env.
    pub fn open_with_env<I, K, V>(uri: &str, env: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::from_uri(StorageUri::parse(uri)?, env)
    }

    /// Opens an already parsed URI with an explicit environment.
    pub fn from_uri<I, K, V>(uri: StorageUri, env: I) -> Result<Self>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        let store: Arc<dyn ObjectStore> = match &uri {
            StorageUri::Local { root } => Arc::new(open_local(root)?),
            StorageUri::S3 { bucket, .. } => {
                Arc::new(s3_builder(bucket, &env)?.build().map_err(|source| {
                    configure(
                        &uri,
                        source,
                        "check the AWS_* variables (region, endpoint, credentials)",
                    )
                })?)
            }
            StorageUri::Gcs { bucket, .. } => {
                install_tls_provider();
                Arc::new(gcs_builder(bucket, &env).build().map_err(|source| {
                    configure(
                        &uri,
                        source,
                        "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a service account key file",
                    )
                })?)
            }
            StorageUri::Azure { container, .. } => {
                install_tls_provider();
                Arc::new(azure_builder(container, &env).build().map_err(|source| {
                    configure(
                        &uri,
                        source,
                        "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or another AZURE_* credential)",
                    )
                })?)
            }
        };
        // Segments were validated by the URI parser; encode them like every other key.
        let root: Path = uri.prefix().split('/').filter(|s| !s.is_empty()).collect();
        Ok(Storage {
            uri,
            store,
            root,
            env: OpenedEnv(Arc::new(
                env.into_iter()
                    .filter(|(k, _)| storage_variable(k))
                    .collect(),
            )),
        })
    }

    /// The same location opened again with the same environment: a separate client with its
    /// own connection pool, for use from another runtime (a heartbeat thread).
    pub fn reopen(&self) -> Result<Self> {
        Self::from_uri(self.uri.clone(), self.env.0.iter().cloned())
    }

    /// The URI this storage was opened with.
    pub fn uri(&self) -> &StorageUri {
        &self.uri
    }

    /// The underlying object store (keys are relative to the bucket, see [`Storage::key`]).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// For local storage, the directory that holds the objects.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        match &self.uri {
            StorageUri::Local { root } => Some(root),
            _ => None,
        }
    }

    /// The full object key for `rel` (a `/`-separated key relative to the storage root).
    ///
    /// Segments are percent-encoded the way `object_store` encodes unusual characters.
    pub fn key(&self, rel: &str) -> Result<Path> {
        let rel_trimmed = rel.trim_matches('/');
        let mut parts: Vec<object_store::path::PathPart<'_>> = self.root.parts().collect();
        if !rel_trimmed.is_empty() {
            for segment in rel_trimmed.split('/') {
                super::uri::check_segment(segment).map_err(|reason| StorageError::InvalidKey {
                    key: rel.to_string(),
                    reason,
                })?;
                parts.push(segment.into());
            }
        }
        Ok(Path::from_iter(parts))
    }

    /// Like [`Storage::key`] but refuses the storage root itself (for artifact prefixes).
    pub(crate) fn artifact_key(&self, prefix: &str) -> Result<Path> {
        if prefix.trim_matches('/').is_empty() {
            return Err(StorageError::InvalidKey {
                key: prefix.to_string(),
                reason: "an artifact prefix must not be empty: give e.g. `runs/<job>/<stage>`"
                    .to_string(),
            });
        }
        self.key(prefix)
    }

    /// `full` relative to the storage root, as a `/`-separated string.
    pub(crate) fn relative(&self, full: &Path) -> String {
        match full.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => full.to_string(),
        }
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn configure(uri: &StorageUri, source: object_store::Error, hint: &'static str) -> StorageError {
    StorageError::Configure {
        backend: uri.backend(),
        uri: uri.to_string(),
        hint,
        source: Box::new(source),
    }
}

fn open_local(root: &PathBuf) -> Result<LocalFileSystem> {
    std::fs::create_dir_all(root).map_err(|e| StorageError::io(root, e))?;
    LocalFileSystem::new_with_prefix(root)
        .map(|fs| fs.with_automatic_cleanup(true))
        .map_err(|source| StorageError::Configure {
            backend: "local",
            uri: root.display().to_string(),
            hint: "check that the directory exists and is readable",
            source: Box::new(source),
        })
}

/// reqwest is built with `rustls-no-provider`: install ring as rustls' process-wide provider.
fn install_tls_provider() {
    // An error only means a provider is already installed, which is what we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a variable configures some backend (kept for [`Storage::reopen`]).
fn storage_variable(key: &str) -> bool {
    ["AWS_", "GOOGLE_", "AZURE_", "PRUNEFORGE_"]
        .iter()
        .any(|p| key.starts_with(p))
        || key == "SERVICE_ACCOUNT"
        || key == "IDENTITY_ENDPOINT"
}

fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

fn s3_builder(bucket: &str, env: &[(String, String)]) -> Result<AmazonS3Builder> {
    install_tls_provider();
    let mut builder = AmazonS3Builder::new();
    let mut endpoint_override = None;
    // Commit markers and writer leases are created with `If-None-Match: *`, which AWS S3, MinIO
    // and moto honour. `AWS_CONDITIONAL_PUT=disabled` turns it off for stores that do not.
    if !env.iter().any(|(k, _)| k == "AWS_CONDITIONAL_PUT") {
        builder = builder.with_conditional_put(S3ConditionalPut::ETagMatch);
    }
    for (key, value) in env {
        if key == PRUNEFORGE_S3_ENDPOINT {
            endpoint_override = Some(value.clone());
        } else if key.starts_with("AWS_") {
            if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(config_key, value);
            }
        }
    }
    if let Some(endpoint) = endpoint_override.filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    builder = builder.with_bucket_name(bucket);
    if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
            .is_some_and(|v| truthy(&v));
        if endpoint.to_ascii_lowercase().starts_with("http://") && !allow_http {
            return Err(StorageError::HttpNotAllowed { endpoint });
        }
    }
    Ok(builder)
}

fn gcs_builder(bucket: &str, env: &[(String, String)]) -> GoogleCloudStorageBuilder {
    let mut builder = GoogleCloudStorageBuilder::new();
    for (key, value) in env {
        if key == "SERVICE_ACCOUNT" {
            builder = builder.with_service_account_path(value);
        } else if key.starts_with("GOOGLE_") {
            if let Ok(config_key) = key.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                builder = builder.with_config(config_key, value);
            }
        }
    }
    builder.with_bucket_name(bucket)
}

fn azure_builder(container: &str, env: &[(String, String)]) -> MicrosoftAzureBuilder {
    let mut builder = MicrosoftAzureBuilder::new();
    for (key, value) in env {
        if key == "IDENTITY_ENDPOINT" {
            builder = builder.with_msi_endpoint(value);
        } else if key.starts_with("AZURE_") {
            if let Ok(config_key) = key.to_ascii_lowercase().parse::<AzureConfigKey>() {
                builder = builder.with_config(config_key, value);
            }
        }
    }
    builder.with_container_name(container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_http_endpoint_needs_allow_http() {
        let env = [("AWS_ENDPOINT_URL", "http://127.0.0.1:9")];
        let err = Storage::open_with_env("s3://b/p", env).unwrap_err();
        assert!(matches!(err, StorageError::HttpNotAllowed { .. }), "{err}");
        let env = [
            (PRUNEFORGE_S3_ENDPOINT, "http://127.0.0.1:9"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
        ];
        let storage = Storage::open_with_env("s3://b/p", env).unwrap();
        assert_eq!(storage.key("a/b").unwrap().as_ref(), "p/a/b");
    }

    #[test]
    fn keys_are_validated_and_encoded() {
        let env: [(&str, &str); 0] = [];
        let dir = std::env::temp_dir().join(format!("pf-store-keys-{}", std::process::id()));
        let storage = Storage::open_with_env(dir.to_str().unwrap(), env).unwrap();
        assert_eq!(storage.key("/x/y/").unwrap().as_ref(), "x/y");
        assert_eq!(storage.key("a#1").unwrap().as_ref(), "a%231");
        assert!(matches!(
            storage.key("x/../y"),
            Err(StorageError::InvalidKey { .. })
        ));
        assert!(storage.artifact_key("/").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
