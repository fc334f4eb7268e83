//! Pipeline stages, one module each. A stage is a plain function
//! `run(inputs, &Params, out_dir) -> Result<Summary>` that reads local inputs, writes its
//! artifacts into `out_dir` (atomically) and returns a serialisable summary, plus
//! `run_request(&api_params, &StageContext) -> Result<Outcome>`, the stage's own mapping from
//! the stage contract of `pruneforge-api` to that function and back to the contract's compact
//! summary. The executor ([`crate::exec`]) moves artifacts to and from storage.

pub mod context;
pub mod distill;
pub mod drift;
pub mod eval;
pub mod finetune;
pub mod import;
pub mod inputs;
pub mod merge;
pub mod prefer;
pub mod prune;
pub mod score;
pub mod self_play;
pub mod speculate;

pub use crate::error::{Result, StageError};
pub use context::{model_dir_of, Outcome, ShardRun, StageContext};
