//! pruneforge runner library: model, tokenizer, generation, stages, storage, datasets.

pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod exec;
pub mod generate;
pub mod loader;
pub mod memory_plan;
pub mod model;
pub mod report;
pub mod resolve;
pub mod stages;
pub mod stats;
pub mod storage;
pub mod tokenizer;
pub mod train;
pub mod util;
