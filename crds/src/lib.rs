//! pruneforge-api: the `PruneDistillJob` resource, the stage plan and the stage contract.
