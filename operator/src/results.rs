//! Stage results → the result summaries of the status (layer scores, pruned models, adapters,
//! merged models, evaluations, speculative decoding, best recovery, pruned blocks).
//!
//! Every summary entry is produced by exactly one stage (see [`producer`]); entries whose
//! producer is no longer done with its current cache key are dropped, so a spec edit never
//! leaves stale numbers behind.

use std::collections::BTreeSet;

use pruneforge_api::contract::{StageResult, StageSummary};
use pruneforge_api::params::StageParams;
use pruneforge_api::plan::{variant, Shape};
use pruneforge_api::spec::DraftModel;
use pruneforge_api::status::{
    BestRecovery, EvaluationStatus, LayerScoreStatus, ModelArtifactStatus, PruneDistillJobStatus,
    SpeculativeStatus,
};
use pruneforge_api::{Plan, StageId, StageInstance};

/// Combines the results of a stage's shards into one summary: distill and self-play counts are
/// summed, other kinds (never sharded) keep the first summary.
pub fn combined_summary(results: &[StageResult]) -> Option<StageSummary> {
    let mut summaries = results.iter().filter_map(|r| r.summary.clone());
    let first = summaries.next()?;
    match first {
        StageSummary::Distill(mut total) => {
            for s in summaries {
                if let StageSummary::Distill(d) = s {
                    total.items += d.items;
                    total.kept += d.kept;
                }
            }
            total.kept_rate = if total.items == 0 {
                0.0
            } else {
                total.kept as f64 / total.items as f64
            };
            Some(StageSummary::Distill(total))
        }
        StageSummary::SelfPlay(mut total) => {
            for s in summaries {
                if let StageSummary::SelfPlay(p) = s {
                    total.prompts += p.prompts;
                    total.pairs += p.pairs;
                    total.empty += p.empty;
                    total.identical += p.identical;
                }
            }
            Some(StageSummary::SelfPlay(total))
        }
        other => Some(other),
    }
}

/// URI of a stage's `result.json`.
pub fn result_uri(stage: &StageInstance) -> String {
    format!("{}result.json", stage.artifact_uri)
}

/// Records the summary of a finished stage in the status lists (replacing the entry of the same
/// variant).
pub fn record(status: &mut PruneDistillJobStatus, stage: &StageInstance, results: &[StageResult]) {
    let Some(summary) = combined_summary(results) else {
        return;
    };
    let artifact = |name: &str| {
        results
            .iter()
            .find_map(|r| r.artifacts.get(name).cloned())
            .unwrap_or_else(|| stage.artifact_uri.clone())
    };
    let line = summary.one_line();
    match (&stage.params, summary) {
        (_, StageSummary::Score(s)) => {
            let scores_uri = results
                .iter()
                .find_map(|r| r.artifacts.get("scores").cloned());
            status.layer_scores = s
                .best
                .iter()
                .filter_map(|b| {
                    Some(LayerScoreStatus {
                        block_size: b.block_size,
                        start: b.start,
                        end: b.end,
                        score: finite(b.score)?,
                        metric: s.metric,
                        scores_uri: scores_uri.clone(),
                    })
                })
                .collect();
        }
        (StageParams::Prune(p), StageSummary::Prune(_)) => upsert(
            &mut status.pruned_models,
            ModelArtifactStatus {
                variant: variant::pruned(&p.shape()),
                block_size: p.block_size,
                width: p.width_variant.clone(),
                method: None,
                uri: artifact("model"),
                summary: Some(line),
            },
        ),
        (StageParams::Finetune(p), StageSummary::Finetune(_)) => upsert(
            &mut status.adapters,
            ModelArtifactStatus {
                variant: if p.teacher_correction {
                    variant::TEACHER.to_string()
                } else {
                    variant::finetuned(&p.shape(), p.method)
                },
                block_size: p.block_size,
                width: p.width_variant.clone(),
                method: Some(p.method.slug().to_string()),
                uri: artifact("adapter"),
                summary: Some(line),
            },
        ),
        (StageParams::Prefer(p), StageSummary::Prefer(_)) => upsert(
            &mut status.adapters,
            ModelArtifactStatus {
                variant: variant::preferred(&p.shape(), p.after, &p.suffix()),
                block_size: p.block_size,
                width: p.width_variant.clone(),
                method: Some(format!("{}-{}", p.after.slug(), p.suffix())),
                uri: artifact("adapter"),
                summary: Some(line),
            },
        ),
        (StageParams::Merge(p), StageSummary::Merge(_)) => upsert(
            &mut status.merged_models,
            ModelArtifactStatus {
                variant: variant::merged(&p.shape()),
                block_size: p.block_size,
                width: p.width_variant.clone(),
                method: None,
                uri: artifact("model"),
                summary: Some(line),
            },
        ),
        (StageParams::Eval(_), StageSummary::Eval(e)) => {
            let name = eval_variant(&stage.id);
            let entry = EvaluationStatus {
                variant: name.clone(),
                tasks: e
                    .tasks
                    .iter()
                    .filter_map(|t| Some((t.task.clone(), finite(t.value)?)))
                    .collect(),
                average: e.average.and_then(finite),
                recovery_percent: None,
                result_uri: Some(
                    results
                        .iter()
                        .find_map(|r| r.artifacts.get("result").cloned())
                        .unwrap_or_else(|| result_uri(stage)),
                ),
            };
            match status.evaluations.iter_mut().find(|x| x.variant == name) {
                Some(x) => *x = entry,
                None => status.evaluations.push(entry),
            }
        }
        (StageParams::Speculate(p), StageSummary::Speculate(s)) => {
            let name = speculative_variant(&p.shape(), p.draft);
            status.speculative.retain(|x| x.variant != name);
            let (Some(acceptance_rate), Some(mean_accepted_length), Some(speedup)) = (
                finite(s.acceptance_rate),
                finite(s.mean_accepted_length),
                finite(s.speedup),
            ) else {
                return;
            };
            let entry = SpeculativeStatus {
                variant: name.clone(),
                acceptance_rate,
                mean_accepted_length,
                speedup,
                result_uri: Some(
                    results
                        .iter()
                        .find_map(|r| r.artifacts.get("result").cloned())
                        .unwrap_or_else(|| result_uri(stage)),
                ),
            };
            status.speculative.push(entry);
        }
        // import and distill have no list entry; mismatched kinds are ignored.
        _ => {}
    }
}

/// `x` when it is finite. The status holds finite numbers only: JSON has no NaN or infinity
/// (serde_json writes `null`, which does not read back into the status's numbers), and a NaN,
/// unequal to itself, would make every reconcile see a changed status. A non-finite
/// result number (a diverged model) is left out of the status lists; the stage's message
/// (`one_line`) and its `result.json` show it.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn upsert(list: &mut Vec<ModelArtifactStatus>, entry: ModelArtifactStatus) {
    match list.iter_mut().find(|x| x.variant == entry.variant) {
        Some(x) => *x = entry,
        None => list.push(entry),
    }
}

/// `eval-n6-sft` → `n6-sft`.
pub fn eval_variant(id: &StageId) -> String {
    id.as_str()
        .strip_prefix("eval-")
        .unwrap_or(id.as_str())
        .to_string()
}

/// Draft variant of speculative decoding: `n6`, `n6-merged` or `int8`.
pub fn speculative_variant(shape: &Shape, draft: DraftModel) -> String {
    match draft {
        DraftModel::Pruned => variant::pruned(shape),
        DraftModel::Merged => variant::merged(shape),
        DraftModel::Int8 => variant::INT8_DRAFT.to_string(),
    }
}

/// The stage that produced each kind of entry.
mod producer {
    use super::*;

    pub fn pruned(m: &ModelArtifactStatus) -> StageId {
        StageId::prune(&m.shape())
    }

    pub fn adapter(m: &ModelArtifactStatus) -> StageId {
        // variant is n<n>-<method slug>: the finetune id is finetune-<variant>; after a
        // preference stage (n<n>-<method slug>-dpo, …-spin<k>) it is prefer-<variant>.
        let preferred = pruneforge_api::plan::variant::split(&m.variant)
            .is_some_and(|(_, method)| variant::split_preference(method).is_some());
        let kind = if preferred { "prefer" } else { "finetune" };
        StageId::from(format!("{kind}-{}", m.variant).as_str())
    }

    pub fn merged(m: &ModelArtifactStatus) -> StageId {
        StageId::merge(&m.shape())
    }

    pub fn evaluation(e: &EvaluationStatus) -> StageId {
        StageId::eval(&e.variant)
    }

    pub fn speculative(s: &SpeculativeStatus) -> Option<StageId> {
        if s.variant == pruneforge_api::plan::variant::INT8_DRAFT {
            return Some(StageId::speculate_int8());
        }
        // The variant is the draft's shape label, `-merged` appended for a merged draft.
        match pruneforge_api::plan::variant::split(&s.variant) {
            Some((label, "" | "merged")) => {
                Some(StageId::from(format!("speculate-{label}").as_str()))
            }
            _ => None,
        }
    }
}

/// Drops every summary whose producing stage is not in `done` (finished with its current key),
/// then derives the computed fields: recovery per evaluation, best recovery, pruned blocks; and
/// sorts every list in plan order.
pub fn finalize(status: &mut PruneDistillJobStatus, plan: &Plan, done: &BTreeSet<StageId>) {
    if !done.contains(&StageId::score()) {
        status.layer_scores.clear();
    }
    status
        .pruned_models
        .retain(|m| done.contains(&producer::pruned(m)));
    status
        .adapters
        .retain(|m| done.contains(&producer::adapter(m)));
    status
        .merged_models
        .retain(|m| done.contains(&producer::merged(m)));
    status
        .evaluations
        .retain(|e| done.contains(&producer::evaluation(e)));
    status
        .speculative
        .retain(|s| producer::speculative(s).is_some_and(|id| done.contains(&id)));

    let order = |id: &StageId| {
        plan.stages()
            .iter()
            .position(|s| &s.id == id)
            .unwrap_or(usize::MAX)
    };
    status.layer_scores.sort_by_key(|l| l.block_size);
    status
        .pruned_models
        .sort_by_key(|m| order(&producer::pruned(m)));
    status
        .adapters
        .sort_by_key(|m| order(&producer::adapter(m)));
    status
        .merged_models
        .sort_by_key(|m| order(&producer::merged(m)));
    status
        .evaluations
        .sort_by_key(|e| order(&producer::evaluation(e)));
    status.speculative.sort_by_key(|s| {
        producer::speculative(s)
            .map(|id| order(&id))
            .unwrap_or(usize::MAX)
    });

    // Recovery: average / base average × 100.
    let base = status
        .evaluations
        .iter()
        .find(|e| e.variant == variant::BASE)
        .and_then(|e| e.average)
        .filter(|b| *b > 0.0);
    for e in &mut status.evaluations {
        e.recovery_percent = match (e.variant.as_str(), base, e.average) {
            (variant::BASE, _, _) => None,
            (_, Some(b), Some(a)) => finite(round(a / b * 100.0, 2)),
            _ => None,
        };
    }
    status.best_recovery = status
        .evaluations
        .iter()
        .filter_map(|e| e.recovery_percent.map(|p| (e, p)))
        .fold(
            None::<(&EvaluationStatus, f64)>,
            |best, (e, p)| match best {
                Some((_, bp)) if bp >= p => best,
                _ => Some((e, p)),
            },
        )
        .map(|(e, p)| BestRecovery {
            variant: e.variant.clone(),
            percent: p,
        });

    // Pruned blocks: the block each done prune stage dropped (fixed start, or the score stage's
    // best block of that size).
    let blocks: Vec<String> = plan
        .stages()
        .iter()
        .filter(|s| done.contains(&s.id))
        .filter_map(|s| match &s.params {
            StageParams::Prune(p) if p.block_size > 0 => match p.start {
                Some(start) => Some(format!("{}-{}", start, start + p.block_size - 1)),
                None => status
                    .layer_scores
                    .iter()
                    .find(|l| l.block_size == p.block_size)
                    .map(|l| l.block_range()),
            },
            _ => None,
        })
        .collect();
    status.pruned_blocks = (!blocks.is_empty()).then(|| blocks.join(","));
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_draft_variant_maps_back_to_its_stage() {
        let shape = Shape {
            block_size: 6,
            width: None,
        };
        let entry = |variant: String| SpeculativeStatus {
            variant,
            acceptance_rate: 0.9,
            mean_accepted_length: 3.0,
            speedup: 1.4,
            result_uri: None,
        };
        for (draft, name, stage) in [
            (DraftModel::Pruned, "n6", "speculate-n6"),
            (DraftModel::Merged, "n6-merged", "speculate-n6"),
            (DraftModel::Int8, "int8", "speculate-int8"),
        ] {
            let variant = speculative_variant(&shape, draft);
            assert_eq!(variant, name);
            assert_eq!(
                producer::speculative(&entry(variant)).map(|id| id.as_str().to_string()),
                Some(stage.to_string())
            );
        }
    }
}
