//! Running stages: the stage contract of `pruneforge-api` (a [`StageRequest`] in, a
//! [`StageResult`] out) handed to the stage that owns it, with artifacts moved to and from
//! storage. The same code serves `pruneforge stage` (one pod, one stage) and `pruneforge run`
//! (a whole job on this machine).
//!
//! [`StageRequest`]: pruneforge_api::contract::StageRequest
//! [`StageResult`]: pruneforge_api::contract::StageResult

pub mod artifacts;
pub mod context;
pub mod dispatch;
pub mod local;
pub mod request;
pub mod resume;

pub use context::ExecContext;
pub use request::{execute, execute_request, ExecError, Executed};
