//! Shared helpers for pruneforge's cross-crate end-to-end tests.
//!
//! * [`env`] — the environment variables that switch the e2e suite on and configure it.
//! * [`kubelet`] — [`kubelet::FakeKubelet`]: plays the kubelet on a cluster without nodes by
//!   running each stage pod's command locally with the runner binary and writing the pod status.
//! * [`cluster`] — client from a kubeconfig, CRD install, namespaces, waiting for conditions.

pub mod cluster;
pub mod env;
pub mod kubelet;
