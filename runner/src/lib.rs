//! pruneforge runner library: model, tokenizer, generation, stages, storage, datasets.

pub mod embedded;
pub mod model;
pub mod tokenizer;
pub mod util;
pub mod storage;
pub mod data;
