//! Reconcile errors.

/// Why a reconcile failed. Errors are retried (see `Settings::requeue_error`); a spec the
/// planner rejects is not an error but a Stalled condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace (the resource is namespaced; this is an apiserver bug).
    #[error("{0} has no namespace")]
    NoNamespace(String),
    /// Serializing an object failed.
    #[error("serializing {what}: {source}")]
    Serialize {
        /// What was serialized.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The stage request could not be built.
    #[error("stage request of {stage}: {source}")]
    Contract {
        /// Stage id.
        stage: String,
        /// The contract error.
        #[source]
        source: pruneforge_api::contract::ContractError,
    },
    /// The cached Job and Pod stores have not completed their first list.
    #[error("the Job and Pod cache is not ready: {0}")]
    CacheNotReady(String),
}

impl Error {
    /// Whether retrying cannot help until something changes (the spec, a quota, an admission
    /// policy, RBAC): an apiserver answer 4xx other than 408 (timeout), 409 (conflict) and 429
    /// (throttled), or a request the operator cannot build. Such errors are reported in the
    /// status and as an Event, besides being retried with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => {
                (400..500).contains(&s.code) && !matches!(s.code, 408 | 409 | 429)
            }
            Error::Kube(_) | Error::CacheNotReady(_) => false,
            Error::NoNamespace(_) | Error::Serialize { .. } | Error::Contract { .. } => true,
        }
    }

    /// A one-line description for the status and Events: the apiserver's message with its code
    /// and reason for API errors.
    pub fn describe(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(s)) => {
                format!("apiserver answered {} {}: {}", s.code, s.reason, s.message)
            }
            other => other.to_string(),
        }
    }

    /// Short label for metrics (`error` label of `reconcile_errors_total`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::NoNamespace(_) => "no_namespace",
            Error::Serialize { .. } => "serialize",
            Error::Contract { .. } => "contract",
            Error::CacheNotReady(_) => "cache_not_ready",
        }
    }
}

/// Result of reconcile steps.
pub type Result<T, E = Error> = std::result::Result<T, E>;
