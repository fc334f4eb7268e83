//! Parsing of apiserver request paths and label selectors.

use std::collections::BTreeMap;

/// `/api/v1/namespaces/ns/pods/name/status` split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: String,
    /// Namespace, when namespaced.
    pub namespace: Option<String>,
    /// Resource plural, e.g. `jobs`.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource, e.g. `status`.
    pub subresource: Option<String>,
}

impl ApiPath {
    /// Parses a request path.
    pub fn parse(path: &str) -> Option<ApiPath> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match *segs.first()? {
            "api" => (format!("/api/{}", segs.get(1)?), &segs[2..]),
            "apis" => (
                format!("/apis/{}/{}", segs.get(1)?, segs.get(2)?),
                &segs[3..],
            ),
            _ => return None,
        };
        let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        Some(ApiPath {
            prefix,
            namespace,
            resource: rest.first()?.to_string(),
            name: rest.get(1).map(|s| s.to_string()),
            subresource: rest.get(2).map(|s| s.to_string()),
        })
    }
}

/// Query parameters (percent-decoded).
pub fn query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One term of an equality-based label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

/// An equality-based label selector (`a=b,c!=d,e,!f`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Term>);

impl Selector {
    /// Parses a selector; set-based terms are not supported.
    pub fn parse(s: &str) -> Selector {
        Selector(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    if let Some((k, v)) = t.split_once("!=") {
                        Term::Ne(k.trim().into(), v.trim().into())
                    } else if let Some((k, v)) = t.split_once("==") {
                        Term::Eq(k.trim().into(), v.trim().into())
                    } else if let Some((k, v)) = t.split_once('=') {
                        Term::Eq(k.trim().into(), v.trim().into())
                    } else if let Some(k) = t.strip_prefix('!') {
                        Term::NotExists(k.trim().into())
                    } else {
                        Term::Exists(t.into())
                    }
                })
                .collect(),
        )
    }

    /// Whether the labels match.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, serde_json::Value>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        self.0.iter().all(|t| match t {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
            Term::NotExists(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        let p = ApiPath::parse("/apis/batch/v1/namespaces/ns/jobs/j1/status").unwrap();
        assert_eq!(p.prefix, "/apis/batch/v1");
        assert_eq!(p.namespace.as_deref(), Some("ns"));
        assert_eq!(p.resource, "jobs");
        assert_eq!(p.name.as_deref(), Some("j1"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = ApiPath::parse("/api/v1/pods").unwrap();
        assert_eq!(
            (p.prefix.as_str(), p.namespace, p.resource.as_str()),
            ("/api/v1", None, "pods")
        );
    }

    #[test]
    fn selectors_and_queries() {
        let q = query(Some("labelSelector=a%3Db%2Cc&watch=true"));
        assert_eq!(q["labelSelector"], "a=b,c");
        let s = Selector::parse(&q["labelSelector"]);
        let labels: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"a":"b","c":"x"}"#).unwrap();
        assert!(s.matches(Some(&labels)));
        assert!(!Selector::parse("a=c").matches(Some(&labels)));
        assert!(Selector::parse("!d,a!=z").matches(Some(&labels)));
    }
}
