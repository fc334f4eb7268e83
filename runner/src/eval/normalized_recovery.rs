//! Normalized recovery with a confidence interval: pairs this run's items with the base
//! model's `items.jsonl` by document `idx` and bootstraps `(v − chance)/(base − chance)` over
//! the paired items ([`crate::stats::normalized_recovery`]).

use super::items::{pair_items, ItemTable};
use super::report::Recovery;
use crate::stats::{normalized_recovery, BootstrapConfig};

/// Fills `normalized_paired` of every accuracy task of `recovery` whose items both runs have.
/// A task where the statistic is undefined (the base exactly at chance on the paired items)
/// is left without one and logged.
pub fn add_paired_intervals(
    recovery: &mut Recovery,
    own: &ItemTable,
    base: &ItemTable,
    config: BootstrapConfig,
) {
    for t in &mut recovery.tasks {
        let Some(chance) = t.chance else { continue };
        let paired = pair_items(own, base, &t.task);
        if paired.score_a.is_empty() {
            tracing::info!(task = %t.task, "no items paired with the base; no recovery interval");
            continue;
        }
        if paired.unpaired > 0 {
            tracing::warn!(
                task = %t.task,
                unpaired = paired.unpaired,
                paired = paired.score_a.len(),
                "some documents are in only one of the runs; the interval uses the paired ones"
            );
        }
        match normalized_recovery(&paired.score_a, &paired.score_b, chance, config) {
            Ok(r) => t.normalized_paired = Some(r),
            Err(e) => tracing::info!(task = %t.task, error = %e, "no recovery interval"),
        }
    }
}
