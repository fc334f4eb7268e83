//! Pipeline stages, one file each. A stage is a plain function
//! `run(inputs, &Params, out_dir) -> Result<Summary>` that reads local inputs, writes its
//! artifacts into `out_dir` (atomically) and returns a compact, serialisable summary. The
//! orchestration (`pruneforge stage`, `pruneforge run`) maps the stage contract of
//! `pruneforge-api` onto these functions and moves artifacts to and from storage.

pub mod distill;
pub mod drift;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod import;
pub mod inputs;
pub mod merge;
pub mod prune;
pub mod score;
pub mod speculate;

pub use error::{Result, StageError};
