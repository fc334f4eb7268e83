//! pruneforge runner library: model, stages, storage, datasets.
