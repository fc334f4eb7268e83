//! The URI schemes pruneforge reads and writes (`file://`, `s3://`, `gs://`, `az://`): one
//! list behind the CRD's CEL rules, the planner's check and the messages that name them.

/// Supported schemes, without `://`.
pub const SCHEMES: [&str; 4] = ["file", "s3", "gs", "az"];

/// The regular expression a URI with a scheme must match: `^(file|s3|gs|az)://.+`.
pub fn scheme_regex() -> String {
    format!("^({})://.+", SCHEMES.join("|"))
}

/// `file://, s3://, gs:// or az://`, for messages.
pub fn schemes_prose() -> String {
    let all: Vec<String> = SCHEMES.iter().map(|s| format!("{s}://")).collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

/// Whether `uri` starts with a supported scheme and names something after it.
pub fn has_supported_scheme(uri: &str) -> bool {
    SCHEMES.iter().any(|s| {
        uri.strip_prefix(s)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// CEL: the string `field` matches [`scheme_regex`].
pub fn cel_scheme_match(field: &str) -> String {
    format!("{field}.matches('{}')", scheme_regex())
}

/// CEL: the string `field` either has no scheme (a path or `builtin:`) or a supported one.
pub fn cel_scheme_rule(field: &str) -> String {
    format!("!{field}.contains('://') || {}", cel_scheme_match(field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_checks_agree() {
        assert_eq!(scheme_regex(), "^(file|s3|gs|az)://.+");
        assert_eq!(schemes_prose(), "file://, s3://, gs:// or az://");
        assert_eq!(
            cel_scheme_rule("self.uri"),
            "!self.uri.contains('://') || self.uri.matches('^(file|s3|gs|az)://.+')"
        );
        for (uri, ok) in [
            ("s3://b/k", true),
            ("file:///x", true),
            ("gs://b", true),
            ("az://c/p", true),
            ("s3://", false),
            ("http://x", false),
            ("x", false),
            ("s3:/x", false),
        ] {
            assert_eq!(has_supported_scheme(uri), ok, "{uri}");
        }
    }
}
