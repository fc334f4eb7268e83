//! `StorageUri`: where artifacts live, parsed from a user-supplied string.
//!
//! Accepted forms:
//! - `file:///abs/path` (host must be empty or `localhost`)
//! - a plain local path, relative (resolved against the current directory) or absolute
//! - `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]` (`azure://` too)

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use super::error::{Result, StorageError};

/// A parsed storage location: a backend plus the root prefix inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageUri {
    /// A local directory (absolute, lexically normalised).
    Local { root: PathBuf },
    /// Amazon S3 or an S3-compatible server.
    S3 { bucket: String, prefix: String },
    /// Google Cloud Storage.
    Gcs { bucket: String, prefix: String },
    /// Azure Blob Storage.
    Azure { container: String, prefix: String },
}

impl StorageUri {
    /// Parses `input`; relative local paths are resolved against the current directory.
    pub fn parse(input: &str) -> Result<Self> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(malformed(
                input,
                "empty URI: give a local directory, file:///abs/path, s3://bucket/prefix, \
                 gs://bucket/prefix or az://container/prefix",
            ));
        }
        match trimmed.split_once("://") {
            Some((scheme, rest)) if is_scheme(scheme) => parse_with_scheme(input, scheme, rest),
            _ => {
                reject_scheme_without_slashes(input, trimmed)?;
                let cwd = std::env::current_dir().map_err(|e| StorageError::io(".", e))?;
                Ok(StorageUri::Local {
                    root: normalize(&cwd.join(trimmed)),
                })
            }
        }
    }

    /// The backend's name, for messages.
    pub fn backend(&self) -> &'static str {
        match self {
            StorageUri::Local { .. } => "local",
            StorageUri::S3 { .. } => "S3",
            StorageUri::Gcs { .. } => "GCS",
            StorageUri::Azure { .. } => "Azure",
        }
    }

    /// The key prefix inside the bucket or container (empty for local storage).
    pub fn prefix(&self) -> &str {
        match self {
            StorageUri::Local { .. } => "",
            StorageUri::S3 { prefix, .. }
            | StorageUri::Gcs { prefix, .. }
            | StorageUri::Azure { prefix, .. } => prefix,
        }
    }
}

impl FromStr for StorageUri {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self> {
        StorageUri::parse(s)
    }
}

impl fmt::Display for StorageUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket, prefix) = match self {
            StorageUri::Local { root } => {
                return match url::Url::from_file_path(root) {
                    Ok(url) => write!(f, "{url}"),
                    Err(()) => write!(f, "file://{}", root.display()),
                };
            }
            StorageUri::S3 { bucket, prefix } => ("s3", bucket, prefix),
            StorageUri::Gcs { bucket, prefix } => ("gs", bucket, prefix),
            StorageUri::Azure { container, prefix } => ("az", container, prefix),
        };
        if prefix.is_empty() {
            write!(f, "{scheme}://{bucket}")
        } else {
            write!(f, "{scheme}://{bucket}/{prefix}")
        }
    }
}

fn malformed(uri: &str, reason: impl Into<String>) -> StorageError {
    StorageError::MalformedUri {
        uri: uri.to_string(),
        reason: reason.into(),
    }
}

/// RFC 3986 scheme syntax: a letter, then letters, digits, `+`, `-`, `.`.
fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

const CLOUD_SCHEMES: [&str; 4] = ["s3", "gs", "az", "azure"];

/// `s3:/bucket` or `s3:bucket` is almost certainly a typo, not a local directory named `s3:`.
fn reject_scheme_without_slashes(uri: &str, trimmed: &str) -> Result<()> {
    if let Some((scheme, rest)) = trimmed.split_once(':') {
        let lower = scheme.to_ascii_lowercase();
        if lower == "file" || CLOUD_SCHEMES.contains(&lower.as_str()) {
            let rest = rest.trim_start_matches('/');
            return Err(malformed(
                uri,
                format!("`{lower}:` must be followed by `//`: write {lower}://{rest}"),
            ));
        }
    }
    Ok(())
}

fn parse_with_scheme(uri: &str, scheme: &str, rest: &str) -> Result<StorageUri> {
    let lower = scheme.to_ascii_lowercase();
    if lower == "file" {
        return parse_file_uri(uri);
    }
    if !CLOUD_SCHEMES.contains(&lower.as_str()) {
        return Err(StorageError::UnsupportedScheme {
            uri: uri.to_string(),
            scheme: scheme.to_string(),
        });
    }
    if rest.contains(['?', '#']) {
        return Err(malformed(
            uri,
            "query strings and fragments (`?`, `#`) are not allowed; configure the store through \
             environment variables instead",
        ));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let what = if lower.starts_with("az") {
        "container"
    } else {
        "bucket"
    };
    validate_bucket(uri, &lower, what, bucket)?;
    let prefix = normalize_prefix(prefix).map_err(|reason| malformed(uri, reason))?;
    let bucket = bucket.to_string();
    Ok(match lower.as_str() {
        "s3" => StorageUri::S3 { bucket, prefix },
        "gs" => StorageUri::Gcs { bucket, prefix },
        _ => StorageUri::Azure {
            container: bucket,
            prefix,
        },
    })
}

fn validate_bucket(uri: &str, scheme: &str, what: &str, bucket: &str) -> Result<()> {
    if bucket.is_empty() {
        return Err(malformed(
            uri,
            format!("missing {what} name: write {scheme}://<{what}>/<prefix>"),
        ));
    }
    if !bucket
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(malformed(
            uri,
            format!(
                "{what} name `{bucket}` may only contain letters, digits, `.`, `-` and `_` \
                 (endpoints and ports go in environment variables, e.g. AWS_ENDPOINT_URL)"
            ),
        ));
    }
    Ok(())
}

/// Strips leading/trailing `/` and checks every segment; returns the reason on failure.
pub(crate) fn normalize_prefix(prefix: &str) -> std::result::Result<String, String> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for segment in trimmed.split('/') {
        check_segment(segment)?;
    }
    Ok(trimmed.to_string())
}

/// One key segment: non-empty, not `.`/`..`, no control characters.
pub(crate) fn check_segment(segment: &str) -> std::result::Result<(), String> {
    if segment.is_empty() {
        return Err("empty path segment (`//`): remove the doubled slash".to_string());
    }
    if segment == "." || segment == ".." {
        return Err(format!(
            "path segment `{segment}` is not allowed: write the path without `.` or `..`"
        ));
    }
    if segment.chars().any(|c| c.is_control()) {
        return Err(format!(
            "path segment {segment:?} contains a control character"
        ));
    }
    Ok(())
}

fn parse_file_uri(uri: &str) -> Result<StorageUri> {
    // `file://./out` and `file://../out`: a path relative to the current directory.
    if let Some(rel) = uri
        .trim()
        .strip_prefix("file://")
        .filter(|r| r.starts_with("./") || r.starts_with("../") || *r == ".")
    {
        let cwd = std::env::current_dir().map_err(|e| StorageError::io(".", e))?;
        return Ok(StorageUri::Local {
            root: normalize(&cwd.join(rel)),
        });
    }
    let url = url::Url::parse(uri.trim()).map_err(|e| {
        malformed(
            uri,
            format!("not a valid file URI ({e}): write file:///absolute/path"),
        )
    })?;
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(malformed(
                uri,
                format!(
                    "file URIs name a local path and cannot have a host (`{host}`): write \
                     file:///absolute/path (three slashes)"
                ),
            ))
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(malformed(
            uri,
            "query strings and fragments (`?`, `#`) are not allowed in file URIs",
        ));
    }
    let root = url.to_file_path().map_err(|()| {
        malformed(
            uri,
            "cannot convert to a local path: write file:///absolute/path",
        )
    })?;
    Ok(StorageUri::Local {
        root: normalize(&root),
    })
}

/// Lexical normalisation: drops `.` and resolves `..` without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> StorageUri {
        StorageUri::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn cloud_uris() {
        assert_eq!(StorageUri::parse("s3://b/p/q").unwrap(), s3("b", "p/q"));
        assert_eq!(StorageUri::parse("s3://b/p/q/").unwrap(), s3("b", "p/q"));
        assert_eq!(StorageUri::parse("S3://b").unwrap(), s3("b", ""));
        assert_eq!(
            StorageUri::parse("gs://g/x").unwrap(),
            StorageUri::Gcs {
                bucket: "g".into(),
                prefix: "x".into()
            }
        );
        for uri in ["az://c/x", "azure://c/x"] {
            assert_eq!(
                StorageUri::parse(uri).unwrap(),
                StorageUri::Azure {
                    container: "c".into(),
                    prefix: "x".into()
                }
            );
        }
        assert_eq!(s3("b", "p").to_string(), "s3://b/p");
        assert_eq!(s3("b", "").to_string(), "s3://b");
    }

    #[test]
    fn local_paths() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            StorageUri::parse("out/./a/../b").unwrap(),
            StorageUri::Local {
                root: cwd.join("out/b")
            }
        );
        assert_eq!(
            StorageUri::parse("file:///tmp/x%20y").unwrap(),
            StorageUri::Local {
                root: PathBuf::from("/tmp/x y")
            }
        );
        assert_eq!(
            StorageUri::parse("/abs/dir").unwrap(),
            StorageUri::Local {
                root: PathBuf::from("/abs/dir")
            }
        );
        let shown = StorageUri::parse("/tmp/x y").unwrap().to_string();
        assert_eq!(shown, "file:///tmp/x%20y");
    }

    #[test]
    fn errors_say_what_to_fix() {
        let err = |s: &str| StorageUri::parse(s).unwrap_err().to_string();
        assert!(matches!(
            StorageUri::parse("hdfs://x/y"),
            Err(StorageError::UnsupportedScheme { .. })
        ));
        assert!(err("http://x/y").contains("s3://bucket/prefix"));
        assert!(err("s3:///prefix").contains("missing bucket name"));
        assert!(err("az:///p").contains("missing container name"));
        assert!(err("s3://b/x//p").contains("doubled slash"));
        assert!(err("s3://b/../p").contains("`..`"));
        assert!(err("s3://b:9000/p").contains("AWS_ENDPOINT_URL"));
        assert!(err("s3://b/p?x=1").contains("not allowed"));
        assert!(err("s3:/b/p").contains("write s3://b/p"));
        assert!(err("file://host/p").contains("three slashes"));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            StorageUri::parse("file://./out/x").unwrap(),
            StorageUri::Local {
                root: normalize(&cwd.join("out/x"))
            }
        );
        assert!(err("  ").contains("empty URI"));
    }
}
