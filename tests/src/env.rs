//! Environment of the e2e suite.
//!
//! | variable | meaning |
//! |---|---|
//! | `PRUNEFORGE_E2E_KUBECONFIG` | kubeconfig of the test cluster; unset = the suite is skipped |
//! | `PRUNEFORGE_E2E_FAKE_KUBELET` | `1`: the cluster has no kubelet; the test runs stage pods locally |
//! | `PRUNEFORGE_RUNNER_BIN` | runner binary for the fake kubelet (default `target/release/pruneforge`) |
//! | `PRUNEFORGE_E2E_DATA_DIR` | `PRUNEFORGE_DATA_DIR` of locally run stages (default `../shared/data`) |
//! | `PRUNEFORGE_E2E_RUNNER_IMAGE` | runner image for clusters with nodes |
//! | `PRUNEFORGE_E2E_TIMEOUT_SECS` | how long to wait for Ready (default 3600) |

use std::path::{Path, PathBuf};

/// The kubeconfig of the e2e cluster, when the suite should run.
pub fn kubeconfig() -> Option<PathBuf> {
    std::env::var_os("PRUNEFORGE_E2E_KUBECONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Whether the test plays the kubelet.
pub fn fake_kubelet() -> bool {
    std::env::var("PRUNEFORGE_E2E_FAKE_KUBELET").is_ok_and(|v| v == "1" || v == "true")
}

/// The repository root (parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The runner binary for the fake kubelet.
pub fn runner_bin() -> PathBuf {
    std::env::var_os("PRUNEFORGE_RUNNER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/pruneforge"))
}

/// Data directory of locally run stages.
pub fn data_dir() -> PathBuf {
    std::env::var_os("PRUNEFORGE_E2E_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

/// Seconds to wait for Ready.
pub fn timeout_secs() -> u64 {
    std::env::var("PRUNEFORGE_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600)
}
