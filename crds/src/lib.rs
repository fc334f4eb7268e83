//! pruneforge-api: the `PruneDistillJob` resource, the stage plan and the stage contract.
//!
//! * [`spec`] — the `PruneDistillJob` custom resource (`pruneforge.dev/v1alpha1`) and its spec.
//! * [`status`] — the bounded status the operator writes (conditions, stages, summaries).
//! * [`crd`] — the generated `CustomResourceDefinition` and its YAML form.
//! * [`params`] — the resolved, per-stage parameters (what a stage's output depends on).
//! * [`plan`] — the stage DAG with content-addressed cache keys and artifact paths.
//! * [`contract`] — the JSON request a runner pod receives and the result it reports.
//! * [`builtin`] — the `builtin:` dataset names the runner resolves.
//! * `fuzz` (hidden) — the stable-Rust mutation fuzzer of the workspace's parser tests.
//! * `validate` (feature `validate`, on by default) — offline validation of manifests
//!   against the CRD's openAPIV3Schema and its CEL rules.

pub mod builtin;
pub mod contract;
pub mod crd;
#[doc(hidden)]
pub mod fuzz;
pub mod params;
pub mod plan;
pub mod spec;
pub mod stage_kind;
pub mod status;
pub mod uri;
#[cfg(feature = "validate")]
pub mod validate;

pub use contract::{StageRequest, StageResult};
pub use crd::{crd, crd_yaml};
pub use plan::{plan, Plan, PlanError, StageId, StageInstance, StageKind};
pub use spec::{PruneDistillJob, PruneDistillJobSpec};
pub use status::PruneDistillJobStatus;

/// API group of the `PruneDistillJob` resource.
pub const GROUP: &str = "pruneforge.dev";
/// API version of the `PruneDistillJob` resource.
pub const VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "PruneDistillJob";
