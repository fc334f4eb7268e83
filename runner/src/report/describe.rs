//! One-line descriptions of stage results (CLI table and report): the contract's own line.

use pruneforge_api::contract::StageSummary;

/// A short human description of a stage's result (empty without one).
pub fn describe(summary: &Option<StageSummary>) -> String {
    summary
        .as_ref()
        .map(StageSummary::one_line)
        .unwrap_or_default()
}
