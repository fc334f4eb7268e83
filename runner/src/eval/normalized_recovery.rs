//! Normalized recovery with confidence intervals: pairs this run's items with the base
//! model's `items.jsonl` by document `idx` and bootstraps `(v − chance)/(base − chance)` over
//! the paired items ([`crate::stats::normalized_recovery`]), per task and for the mean over
//! the tasks where the base is not at chance ([`crate::stats::stratified_bootstrap`]).

use super::items::{pair_items, ItemTable, PairedItems};
use super::report::Recovery;
use crate::stats::stratified_bootstrap::{stratified_mean_ci, Stratum};
use crate::stats::{normalized_recovery, BootstrapConfig};

/// Fills `normalized_paired` of every accuracy task of `recovery` whose items both runs have,
/// and `average_normalized_paired` when every task of the average has them. A task where the
/// statistic is undefined (the base exactly at chance on the paired items) is left without
/// one and logged.
pub fn add_paired_intervals(
    recovery: &mut Recovery,
    own: &ItemTable,
    base: &ItemTable,
    config: BootstrapConfig,
) {
    // (chance, paired items) of the tasks the average covers.
    let mut averaged: Vec<(f64, PairedItems)> = Vec::new();
    let mut average_complete = true;
    for t in &mut recovery.tasks {
        let Some(chance) = t.chance else { continue };
        let in_average = t.at_chance != Some(true);
        let paired = pair_items(own, base, &t.task);
        if paired.score_a.is_empty() {
            tracing::info!(task = %t.task, "no items paired with the base; no recovery interval");
            average_complete &= !in_average;
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
            Err(e) => {
                tracing::info!(task = %t.task, error = %e, "no recovery interval");
                average_complete &= !in_average;
                continue;
            }
        }
        if in_average {
            averaged.push((chance, paired));
        }
    }
    if !average_complete || averaged.is_empty() {
        return;
    }
    let strata: Vec<Stratum<'_>> = averaged
        .iter()
        .map(|(_, p)| Stratum {
            a: &p.score_a,
            b: &p.score_b,
        })
        .collect();
    let chances: Vec<f64> = averaged.iter().map(|(c, _)| *c).collect();
    match stratified_mean_ci(&strata, config, |i, v, b| {
        (v - chances[i]) / (b - chances[i])
    }) {
        Ok(ci) => recovery.average_normalized_paired = Some(ci),
        Err(e) => tracing::info!(error = %e, "no interval for the average normalized recovery"),
    }
}
