//! Cluster helpers: client, CRD install, namespaces, waiting.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use pruneforge_api::PruneDistillJob;

/// Field manager of the test's writes.
pub const MANAGER: &str = "pruneforge-e2e";

/// Errors of the helpers.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Reading the kubeconfig failed.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Building the client failed.
    #[error("client: {0}")]
    Client(#[from] kube::Error),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest did not parse.
    #[error("{path}: {source}")]
    Yaml {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// Waiting timed out.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// A client for the kubeconfig at `path` (its current context).
pub async fn client(path: &Path) -> Result<Client, ClusterError> {
    let kc = Kubeconfig::read_from(path).map_err(|source| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        source,
    })?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| ClusterError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Client::try_from(config)?)
}

/// Installs (server-side applies) the committed CRD and waits until it is Established.
pub async fn install_crd(client: &Client, file: &Path) -> Result<(), ClusterError> {
    let text = std::fs::read_to_string(file).map_err(|source| ClusterError::Io {
        path: file.display().to_string(),
        source,
    })?;
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).map_err(|source| ClusterError::Yaml {
            path: file.display().to_string(),
            source,
        })?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let crd = api.get(&name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout(
                Duration::from_secs(60),
                format!("CRD {name} Established"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates a namespace (ignoring AlreadyExists).
pub async fn create_namespace(client: &Client, name: &str) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .map_err(|e| ClusterError::Client(kube::Error::SerdeError(e)))?;
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// For an e2e test: a client from `PRUNEFORGE_E2E_KUBECONFIG`, the CRD installed, and a fresh
/// namespace `<prefix>-<pid>`; `None` (after saying so) when the variable is unset.
pub async fn e2e_namespace(prefix: &str) -> Option<(Client, String)> {
    let Some(kubeconfig) = crate::env::kubeconfig() else {
        println!("skipped: PRUNEFORGE_E2E_KUBECONFIG not set");
        return None;
    };
    let client = client(&kubeconfig)
        .await
        .expect("client from PRUNEFORGE_E2E_KUBECONFIG");
    install_crd(
        &client,
        &crate::env::repo_root().join("crds/pruneforge.dev_prunedistilljobs.yaml"),
    )
    .await
    .expect("install CRD");
    let ns = format!("{prefix}-{}", std::process::id());
    create_namespace(&client, &ns).await.expect("namespace");
    Some((client, ns))
}

/// Deletes a namespace (best effort).
pub async fn delete_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
}

/// Polls `job` until `done` holds, up to `timeout`; returns the last object.
pub async fn wait_for(
    api: &Api<PruneDistillJob>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&PruneDistillJob) -> bool,
) -> Result<PruneDistillJob, ClusterError> {
    let deadline = Instant::now() + timeout;
    loop {
        let obj = api.get(name).await?;
        if done(&obj) {
            return Ok(obj);
        }
        if Instant::now() > deadline {
            return Err(ClusterError::Timeout(timeout, format!("{name}: {what}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether condition `type_` is True.
pub fn condition_true(obj: &PruneDistillJob, type_: &str) -> bool {
    obj.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}
