//! The fake apiserver's object store and request handling.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::body::FakeBody;
use super::path::{query, ApiPath, Selector};

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// JSON body.
    pub body: Option<Value>,
}

impl Recorded {
    /// Whether this is a `method` request whose path ends with `suffix`.
    pub fn is(&self, method: &str, suffix: &str) -> bool {
        self.method == method && self.path.ends_with(suffix)
    }

    /// What RBAC authorizes this request as: `(apiGroup, resource[/subresource], verb)`, e.g.
    /// `("batch", "jobs", "create")` or `("", "pods", "watch")`; `None` for non-resource paths.
    pub fn rbac(&self) -> Option<(String, String, String)> {
        let path = ApiPath::parse(&self.path)?;
        let group = match path.prefix.strip_prefix("/apis/") {
            Some(gv) => gv.split('/').next().unwrap_or_default().to_string(),
            None => String::new(),
        };
        let resource = match &path.subresource {
            Some(sub) => format!("{}/{sub}", path.resource),
            None => path.resource.clone(),
        };
        let watch = self
            .query
            .get("watch")
            .is_some_and(|w| w == "true" || w == "1");
        let verb = match (self.method.as_str(), path.name.is_some()) {
            ("GET", true) => "get",
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            _ => return None,
        };
        Some((group, resource, verb.to_string()))
    }
}

type Kind = (String, String);

struct Watcher {
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
    name: Option<String>,
    tx: UnboundedSender<Bytes>,
}

/// Most watch events kept for resuming watches.
const HISTORY: usize = 5_000;

/// Objects, watchers and the request log.
#[derive(Default)]
pub struct Store {
    objects: HashMap<Kind, BTreeMap<(String, String), Value>>,
    rv: u64,
    uid: u64,
    watchers: Vec<Watcher>,
    history: VecDeque<(u64, Kind, &'static str, Value)>,
    /// Requests received, in order.
    pub requests: Vec<Recorded>,
    /// Whether to record requests (off in benchmarks).
    pub record: bool,
    /// Requests counted by what RBAC authorizes them as, `"<verb> <resource>"` (e.g.
    /// `"list jobs"`, `"patch prunedistilljobs/status"`); counted even when not recorded.
    pub counts: BTreeMap<String, u64>,
    /// Namespaces being deleted: creates there are refused with 403 (`NamespaceTerminating`),
    /// as the apiserver's NamespaceLifecycle admission does.
    pub terminating_namespaces: std::collections::BTreeSet<String>,
}

/// A `Status` error response.
pub fn error_response(code: u16, reason: &str, message: &str) -> Response<FakeBody> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

/// The 403 of a create in a terminating namespace.
fn namespace_terminating(ns: &str) -> Response<FakeBody> {
    respond(
        403,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("unable to create new content in namespace {ns} because it is being terminated"),
                "reason": "Forbidden", "code": 403,
                "details": {"causes": [{"reason": "NamespaceTerminating",
                    "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}}),
    )
}

fn respond(code: u16, body: &Value) -> Response<FakeBody> {
    let mut r = Response::new(FakeBody::Full(Some(Bytes::from(body.to_string()))));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn now() -> String {
    Timestamp::now().to_string()
}

/// Whether `v` is a valid label value: at most 63 characters, alphanumeric at both ends,
/// `-`, `_` and `.` inside.
fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// The apiserver's label validation of an object (and of a Job's pod template): the 422
/// message for the first invalid value.
fn invalid_labels(resource: &str, obj: &Value) -> Option<String> {
    let name = meta(obj, "name").unwrap_or_default();
    for (path, field) in [
        ("/metadata/labels", "metadata.labels"),
        (
            "/spec/template/metadata/labels",
            "spec.template.metadata.labels",
        ),
    ] {
        let Some(labels) = obj.pointer(path).and_then(Value::as_object) else {
            continue;
        };
        for value in labels.values().filter_map(Value::as_str) {
            if !is_label_value(value) {
                return Some(format!(
                    "{resource} {name:?} is invalid: {field}: Invalid value: {value:?}: must be no more than 63 characters"
                ));
            }
        }
    }
    None
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .map(str::to_string)
}

impl Store {
    /// An empty store that records requests.
    pub fn recording() -> Self {
        Store {
            record: true,
            ..Store::default()
        }
    }

    /// Objects stored and their total serialized size in bytes (watch history included).
    pub fn footprint(&self) -> (usize, usize) {
        let objects: usize = self.objects.values().map(|m| m.len()).sum();
        let bytes: usize = self
            .objects
            .values()
            .flat_map(|m| m.values())
            .chain(self.history.iter().map(|h| &h.3))
            .map(|v| v.to_string().len())
            .sum();
        (objects, bytes)
    }

    /// Drops every object and the watch history (open watches stay open, unnotified). Lets a
    /// benchmark measure the memory of what else lives in the process.
    pub fn forget_objects(&mut self) {
        self.objects = HashMap::new();
        self.history = VecDeque::new();
        self.requests = Vec::new();
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// An object.
    pub fn get(
        &self,
        prefix: &str,
        resource: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<&Value> {
        self.objects
            .get(&(prefix.to_string(), resource.to_string()))?
            .get(&(ns.unwrap_or("").to_string(), name.to_string()))
    }

    /// Objects matching a namespace (any with `None`) and selector.
    pub fn list(
        &self,
        prefix: &str,
        resource: &str,
        ns: Option<&str>,
        selector: &Selector,
    ) -> Vec<Value> {
        let Some(map) = self
            .objects
            .get(&(prefix.to_string(), resource.to_string()))
        else {
            return Vec::new();
        };
        let matches = |v: &&Value| {
            selector.matches(v.pointer("/metadata/labels").and_then(|l| l.as_object()))
        };
        match ns {
            // Keys are (namespace, name): one namespace is a contiguous range.
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .filter(matches)
                .cloned()
                .collect(),
            None => map.values().filter(matches).cloned().collect(),
        }
    }

    fn notify(&mut self, kind: &Kind, type_: &'static str, obj: &Value) {
        let rv = self.rv;
        self.history
            .push_back((rv, kind.clone(), type_, obj.clone()));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let line = Bytes::from(format!("{}\n", json!({"type": type_, "object": obj})));
        let ns = meta(obj, "namespace").unwrap_or_default();
        let name = meta(obj, "name").unwrap_or_default();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(|l| l.as_object())
            .cloned();
        self.watchers.retain(|w| {
            if &w.kind != kind
                || w.namespace.as_ref().is_some_and(|n| n != &ns)
                || w.name.as_ref().is_some_and(|n| n != &name)
                || !w.selector.matches(labels.as_ref())
            {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    /// Inserts or replaces an object as is (bumping its resourceVersion) and notifies watchers.
    pub fn put(&mut self, prefix: &str, resource: &str, mut obj: Value) -> Value {
        let kind = (prefix.to_string(), resource.to_string());
        let ns = meta(&obj, "namespace").unwrap_or_default();
        let name = meta(&obj, "name").unwrap_or_default();
        let rv = self.next_rv();
        let existed = self
            .objects
            .get(&kind)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())));
        if meta(&obj, "uid").is_none() {
            self.uid += 1;
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uid));
        }
        if meta(&obj, "creationTimestamp").is_none() {
            obj["metadata"]["creationTimestamp"] = json!(now());
        }
        if obj.pointer("/metadata/generation").is_none() {
            obj["metadata"]["generation"] = json!(1);
        }
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects
            .entry(kind.clone())
            .or_default()
            .insert((ns, name), obj.clone());
        self.notify(&kind, if existed { "MODIFIED" } else { "ADDED" }, &obj);
        obj
    }

    /// Removes an object and, like the garbage collector, every object it owns.
    pub fn remove(&mut self, prefix: &str, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let kind = (prefix.to_string(), resource.to_string());
        let obj = self
            .objects
            .get_mut(&kind)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.next_rv();
        self.notify(&kind, "DELETED", &obj);
        if let Some(uid) = meta(&obj, "uid") {
            // Namespaced dependents live in their owner's namespace, so only that namespace is
            // searched (all of them for a cluster-scoped owner).
            let in_scope =
                |m: &BTreeMap<(String, String), Value>| -> Vec<((String, String), Value)> {
                    let range: Box<dyn Iterator<Item = (&(String, String), &Value)>> =
                        if ns.is_empty() {
                            Box::new(m.iter())
                        } else {
                            Box::new(
                                m.range((ns.to_string(), String::new())..)
                                    .take_while(|((n, _), _)| n == ns),
                            )
                        };
                    range
                        .filter(|(_, v)| {
                            v.pointer("/metadata/ownerReferences")
                                .and_then(|o| o.as_array())
                                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                        })
                        .map(|(key, v)| (key.clone(), v.clone()))
                        .collect()
                };
            let owned: Vec<(Kind, String, String)> = self
                .objects
                .iter()
                .flat_map(|(k, m)| {
                    in_scope(m)
                        .into_iter()
                        .map(move |((n, nm), v)| (k, n, nm, v))
                })
                .filter(|(_, _, _, v)| {
                    v.pointer("/metadata/ownerReferences")
                        .and_then(|o| o.as_array())
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == json!(uid)))
                })
                .map(|(k, n, nm, _)| (k.clone(), n.clone(), nm.clone()))
                .collect();
            for (k, n, nm) in owned {
                self.remove(&k.0, &k.1, &n, &nm);
            }
        }
        Some(obj)
    }

    /// Handles one request.
    pub fn handle(&mut self, parts: &Parts, body: &[u8]) -> Response<FakeBody> {
        let q = query(parts.uri.query());
        let body_json: Option<Value> = serde_json::from_slice(body).ok();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let recorded = Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: q.clone(),
            content_type: content_type.clone(),
            body: None,
        };
        if let Some((_, resource, verb)) = recorded.rbac() {
            *self.counts.entry(format!("{verb} {resource}")).or_insert(0) += 1;
        }
        if self.record {
            self.requests.push(Recorded {
                body: body_json.clone(),
                ..recorded
            });
        }
        let Some(path) = ApiPath::parse(parts.uri.path()) else {
            return error_response(404, "NotFound", "unknown path");
        };
        let kind: Kind = (path.prefix.clone(), path.resource.clone());
        let ns = path.namespace.clone().unwrap_or_default();
        match (&parts.method, &path.name) {
            (&Method::GET, None) => {
                let selector = Selector::parse(q.get("labelSelector").map_or("", |s| s.as_str()));
                let name = q
                    .get("fieldSelector")
                    .and_then(|f| f.strip_prefix("metadata.name="))
                    .map(str::to_string);
                if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                    return self.watch(
                        kind,
                        path.namespace.clone(),
                        selector,
                        name,
                        q.get("resourceVersion"),
                    );
                }
                let items: Vec<Value> = self
                    .list(&kind.0, &kind.1, path.namespace.as_deref(), &selector)
                    .into_iter()
                    .filter(|v| {
                        name.as_ref()
                            .is_none_or(|n| meta(v, "name").as_ref() == Some(n))
                    })
                    .collect();
                let list_kind = items
                    .first()
                    .and_then(|i| i["kind"].as_str())
                    .map(|k| format!("{k}List"))
                    .unwrap_or_else(|| "List".into());
                respond(
                    200,
                    &json!({"apiVersion": "v1", "kind": list_kind,
                            "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                )
            }
            (&Method::GET, Some(name)) => match self.get(&kind.0, &kind.1, Some(&ns), name) {
                Some(obj) => respond(200, obj),
                None => error_response(404, "NotFound", &format!("{} {name:?} not found", kind.1)),
            },
            (&Method::POST, None) => {
                let Some(mut obj) = body_json else {
                    return error_response(400, "BadRequest", "body is not JSON");
                };
                let name = match meta(&obj, "name") {
                    Some(n) => n,
                    None => match meta(&obj, "generateName") {
                        Some(g) => {
                            self.uid += 1;
                            format!("{g}{:05x}", self.uid)
                        }
                        None => return error_response(422, "Invalid", "metadata.name is required"),
                    },
                };
                if self.get(&kind.0, &kind.1, Some(&ns), &name).is_some() {
                    return error_response(
                        409,
                        "AlreadyExists",
                        &format!("{} {name:?} already exists", kind.1),
                    );
                }
                obj["metadata"]["name"] = json!(name);
                if path.namespace.is_some() {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                if let Some(m) = invalid_labels(&kind.1, &obj) {
                    return error_response(422, "Invalid", &m);
                }
                if self.terminating_namespaces.contains(&ns) {
                    return namespace_terminating(&ns);
                }
                let stored = self.put(&kind.0, &kind.1, obj);
                respond(201, &stored)
            }
            (&Method::PATCH, Some(name)) => {
                self.patch(&kind, &path, &ns, name, content_type.as_deref(), body_json)
            }
            (&Method::PUT, Some(name)) => {
                let Some(mut obj) = body_json else {
                    return error_response(400, "BadRequest", "body is not JSON");
                };
                let Some(current) = self.get(&kind.0, &kind.1, Some(&ns), name).cloned() else {
                    return error_response(
                        404,
                        "NotFound",
                        &format!("{} {name:?} not found", kind.1),
                    );
                };
                if let Some(rv) = meta(&obj, "resourceVersion") {
                    if Some(rv) != meta(&current, "resourceVersion") {
                        return error_response(409, "Conflict", "the object has been modified");
                    }
                }
                for f in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "namespace",
                ] {
                    if let Some(v) = current.pointer(&format!("/metadata/{f}")) {
                        obj["metadata"][f] = v.clone();
                    }
                }
                if path.subresource.as_deref() == Some("status") {
                    let mut merged = current.clone();
                    merged["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                    obj = merged;
                } else if current.get("spec") != obj.get("spec") {
                    let g = current
                        .pointer("/metadata/generation")
                        .and_then(|g| g.as_i64())
                        .unwrap_or(1);
                    obj["metadata"]["generation"] = json!(g + 1);
                }
                let stored = self.put(&kind.0, &kind.1, obj);
                respond(200, &stored)
            }
            (&Method::DELETE, Some(name)) => {
                let Some(mut obj) = self.get(&kind.0, &kind.1, Some(&ns), name).cloned() else {
                    return error_response(
                        404,
                        "NotFound",
                        &format!("{} {name:?} not found", kind.1),
                    );
                };
                let has_finalizers = obj
                    .pointer("/metadata/finalizers")
                    .and_then(|f| f.as_array())
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    if obj.pointer("/metadata/deletionTimestamp").is_none() {
                        obj["metadata"]["deletionTimestamp"] = json!(now());
                        obj = self.put(&kind.0, &kind.1, obj);
                    }
                    respond(200, &obj)
                } else {
                    let removed = self.remove(&kind.0, &kind.1, &ns, name).unwrap_or(obj);
                    respond(200, &removed)
                }
            }
            _ => error_response(
                405,
                "MethodNotAllowed",
                "not supported by the fake apiserver",
            ),
        }
    }

    fn patch(
        &mut self,
        kind: &Kind,
        path: &ApiPath,
        ns: &str,
        name: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Response<FakeBody> {
        let Some(patch) = body else {
            return error_response(400, "BadRequest", "body is not JSON");
        };
        let ct = content_type.unwrap_or("");
        let status_only = path.subresource.as_deref() == Some("status");
        let current = self.get(&kind.0, &kind.1, Some(ns), name).cloned();
        let Some(current) = current else {
            if ct.starts_with("application/apply-patch") && !status_only {
                let mut obj = patch;
                obj["metadata"]["name"] = json!(name);
                if path.namespace.is_some() {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                if let Some(m) = invalid_labels(&kind.1, &obj) {
                    return error_response(422, "Invalid", &m);
                }
                if self.terminating_namespaces.contains(ns) {
                    return namespace_terminating(ns);
                }
                let stored = self.put(&kind.0, &kind.1, obj);
                return respond(201, &stored);
            }
            return error_response(404, "NotFound", &format!("{} {name:?} not found", kind.1));
        };
        let mut next = current.clone();
        if ct.starts_with("application/json-patch") {
            let ops: json_patch::Patch = match serde_json::from_value(patch) {
                Ok(p) => p,
                Err(e) => return error_response(400, "BadRequest", &e.to_string()),
            };
            if let Err(e) = json_patch::patch(&mut next, &ops) {
                return error_response(422, "Invalid", &e.to_string());
            }
        } else if ct.starts_with("application/apply-patch") && status_only {
            // The operator applies its whole status as the only manager: a replace.
            next["status"] = patch.get("status").cloned().unwrap_or(Value::Null);
        } else {
            json_patch::merge(&mut next, &patch);
        }
        if status_only {
            let status = next.get("status").cloned();
            next = current.clone();
            match status {
                Some(s) => next["status"] = s,
                None => {
                    if let Some(o) = next.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        } else {
            if next.get("status") != current.get("status") {
                // The main resource does not write the status.
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        if let Some(o) = next.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if next.get("spec") != current.get("spec") {
                let g = current
                    .pointer("/metadata/generation")
                    .and_then(|g| g.as_i64())
                    .unwrap_or(1);
                next["metadata"]["generation"] = json!(g + 1);
            }
        }
        for f in ["uid", "creationTimestamp", "namespace", "name"] {
            if let Some(v) = current.pointer(&format!("/metadata/{f}")) {
                next["metadata"][f] = v.clone();
            }
        }
        let finalizers_empty = next
            .pointer("/metadata/finalizers")
            .and_then(|f| f.as_array())
            .is_none_or(|f| f.is_empty());
        if next.pointer("/metadata/deletionTimestamp").is_some() && finalizers_empty {
            let removed = self.remove(&kind.0, &kind.1, ns, name);
            return respond(200, &removed.unwrap_or(next));
        }
        if next == current {
            return respond(200, &current);
        }
        if let Some(m) = invalid_labels(&kind.1, &next) {
            return error_response(422, "Invalid", &m);
        }
        let stored = self.put(&kind.0, &kind.1, next);
        respond(200, &stored)
    }

    fn watch(
        &mut self,
        kind: Kind,
        namespace: Option<String>,
        selector: Selector,
        name: Option<String>,
        resource_version: Option<&String>,
    ) -> Response<FakeBody> {
        let (tx, rx) = unbounded_channel();
        let matches = |v: &Value| {
            namespace
                .as_ref()
                .is_none_or(|n| meta(v, "namespace").as_ref() == Some(n))
                && name
                    .as_ref()
                    .is_none_or(|n| meta(v, "name").as_ref() == Some(n))
                && selector.matches(v.pointer("/metadata/labels").and_then(|l| l.as_object()))
        };
        let since: Option<u64> = resource_version
            .filter(|r| !r.is_empty() && r.as_str() != "0")
            .and_then(|r| r.parse().ok());
        match since {
            None => {
                for v in self.list(&kind.0, &kind.1, namespace.as_deref(), &selector) {
                    if matches(&v) {
                        let _ = tx.send(Bytes::from(format!(
                            "{}\n",
                            json!({"type": "ADDED", "object": v})
                        )));
                    }
                }
            }
            Some(rv) => {
                let oldest = self.history.front().map_or(self.rv + 1, |h| h.0);
                if rv + 1 < oldest && rv < self.rv {
                    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "Expired", "code": 410,
                        "message": "too old resource version"}});
                    let _ = tx.send(Bytes::from(format!("{gone}\n")));
                    let mut r = Response::new(FakeBody::Stream(rx));
                    *r.status_mut() = StatusCode::OK;
                    return r;
                }
                for (hrv, hkind, type_, obj) in &self.history {
                    if *hrv > rv && hkind == &kind && matches(obj) {
                        let _ = tx.send(Bytes::from(format!(
                            "{}\n",
                            json!({"type": type_, "object": obj})
                        )));
                    }
                }
            }
        }
        self.watchers.push(Watcher {
            kind,
            namespace,
            selector,
            name,
            tx,
        });
        let mut r = Response::new(FakeBody::Stream(rx));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }
}
