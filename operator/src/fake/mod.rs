//! An in-memory Kubernetes apiserver for tests and benchmarks, served through tower-test's mock
//! service (as kube-rs's controller-rs fixtures do, but stateful): create, get, list (label and
//! `metadata.name` field selectors), watch (streamed, resumable from a resourceVersion), merge,
//! JSON and apply patches (apply approximated as a merge; on `/status` it replaces the status),
//! replace with resourceVersion checks, delete with finalizers and an immediate
//! ownerReference garbage collector. Every request is recorded for assertions.
//!
//! It has no Job controller and no kubelet; [`cluster`] has helpers that play them.

mod body;
pub mod cluster;
pub mod http;
mod path;
pub mod results;
mod store;

pub use body::FakeBody;
pub use path::{ApiPath, Selector};
pub use store::{Recorded, Store};

use std::sync::{Arc, Mutex};

use ::http::{Request, Response};
use kube::client::Body;
use kube::Client;
use tokio::task::JoinHandle;

/// A running fake apiserver.
#[derive(Clone)]
pub struct FakeApiServer {
    store: Arc<Mutex<Store>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        FakeApiServer::new()
    }
}

impl FakeApiServer {
    /// Starts a server and returns it with a client talking to it (default namespace
    /// `default`). Must be called inside a tokio runtime.
    pub fn start() -> (FakeApiServer, Client, JoinHandle<()>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<FakeBody>>();
        let server = FakeApiServer::new();
        let store = server.store.clone();
        let task = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let response = match store.lock() {
                    Ok(mut s) => s.handle(&parts, &bytes),
                    Err(_) => store::error_response(500, "InternalError", "store poisoned"),
                };
                respond.send_response(response);
            }
        });
        (server, Client::new(service, "default"), task)
    }

    /// A server with an empty store that records requests, not yet serving anything (see
    /// [`FakeApiServer::start`] and [`http::serve`]).
    pub fn new() -> FakeApiServer {
        FakeApiServer {
            store: Arc::new(Mutex::new(Store::recording())),
        }
    }

    /// Answers one request.
    pub fn handle(&self, parts: &::http::request::Parts, body: &[u8]) -> Response<FakeBody> {
        self.with(|s| s.handle(parts, body))
    }

    /// Runs `f` with the store locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut guard = match self.store.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Recorded requests so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.with(|s| s.requests.clear())
    }

    /// An object by API prefix, resource, namespace and name.
    pub fn get(
        &self,
        prefix: &str,
        resource: &str,
        ns: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        self.with(|s| s.get(prefix, resource, Some(ns), name).cloned())
    }

    /// Objects of one resource in a namespace (all namespaces with `None`).
    pub fn list(&self, prefix: &str, resource: &str, ns: Option<&str>) -> Vec<serde_json::Value> {
        self.with(|s| s.list(prefix, resource, ns, &Selector::default()))
    }
}
