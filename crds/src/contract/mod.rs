//! The stage contract: what a runner pod is asked to do ([`StageRequest`], passed as JSON) and
//! what it reports back ([`StageResult`], written to `<output>/result.json` and, compacted, to
//! the container's termination message). Non-finite numbers of results (a diverged loss, an
//! infinite perplexity) are written as `"NaN"`, `"inf"` or `"-inf"`; see [`float`].

mod error;
pub mod float;
mod request;
mod result;
mod summary;
mod termination;

pub use error::ContractError;
pub use request::{JobRef, ShardRef, StageInput, StageRequest};
pub use result::{ComputeReport, Outcome, StageResult};
pub use summary::{
    BlockScore, DistillSummary, EvalSummary, FinetuneSummary, ImportSummary, MergeSummary,
    PreferSummary, PruneSummary, ScoreSummary, SelfPlaySummary, SpeculateSummary, StageSummary,
    TaskScore,
};
pub use termination::TERMINATION_MESSAGE_LIMIT;

/// Version of the request/result JSON; a runner refuses requests of another version.
pub const CONTRACT_VERSION: u32 = 1;
