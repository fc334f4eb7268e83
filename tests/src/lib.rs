//! Shared helpers for pruneforge's cross-crate end-to-end tests.
