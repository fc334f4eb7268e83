//! pruneforge runner library: model, stages, storage, datasets.
pub mod data;
