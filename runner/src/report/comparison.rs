//! Paired comparisons of two evaluated variants, task by task, over the documents both scored
//! (paired by `idx` in their `items.jsonl`): the accuracy difference with a paired-bootstrap
//! 95 % interval and the exact McNemar p, the mean difference of log p(gold) with a paired-t p
//! and a bootstrap interval, and the minimum detectable effect of the accuracy difference at
//! α = 0.05 and 80 % power. When the accuracy interval includes 0 the two are "not
//! distinguishable".

use serde::Serialize;

use crate::eval::items::{pair_items, ItemTable};
use crate::stats::bootstrap::mean_difference_ci;
use crate::stats::{
    mcnemar_exact, minimum_detectable_effect, paired_t_test, BootstrapCi, BootstrapConfig, McNemar,
    PairedT,
};

/// Which of the two is better on a task, if the data can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The accuracy difference's interval includes 0.
    NotDistinguishable,
    VariantBetter,
    ReferenceBetter,
}

/// The log p(gold) part of a comparison (multiple-choice tasks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LogProbComparison {
    pub n: usize,
    /// Mean of `variant − reference` with its bootstrap interval.
    pub difference: BootstrapCi,
    pub paired_t: PairedT,
}

/// One task of a comparison `variant − reference`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskComparison {
    pub task: String,
    /// Paired documents.
    pub n: usize,
    pub variant_accuracy: f64,
    pub reference_accuracy: f64,
    /// Mean score difference with its paired-bootstrap interval.
    pub difference: BootstrapCi,
    pub mcnemar: Option<McNemar>,
    pub log_prob: Option<LogProbComparison>,
    /// Minimum detectable effect of the accuracy difference; `None` below two items.
    pub minimum_detectable_effect: Option<f64>,
    pub verdict: Verdict,
    /// Documents in only one of the two runs (left out).
    pub unpaired: usize,
}

/// A comparison of two variants over their shared tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub variant: String,
    pub reference: String,
    pub tasks: Vec<TaskComparison>,
}

/// Compares `variant` with `reference` on every task both have items for.
pub fn compare(
    variant: &ItemTable,
    reference: &ItemTable,
    config: BootstrapConfig,
) -> Vec<TaskComparison> {
    variant
        .keys()
        .filter(|t| reference.contains_key(*t))
        .filter_map(|task| compare_task(variant, reference, task, config))
        .collect()
}

fn compare_task(
    variant: &ItemTable,
    reference: &ItemTable,
    task: &str,
    config: BootstrapConfig,
) -> Option<TaskComparison> {
    let p = pair_items(variant, reference, task);
    let difference = match mean_difference_ci(&p.score_a, &p.score_b, config) {
        Ok(d) => d,
        Err(e) => {
            tracing::info!(task, error = %e, "no paired comparison");
            return None;
        }
    };
    let n = p.score_a.len();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mcnemar = mcnemar_exact(&p.correct_a, &p.correct_b).ok();
    let log_prob = mean_difference_ci(&p.logp_a, &p.logp_b, config)
        .and_then(|difference| {
            Ok(LogProbComparison {
                n: p.logp_a.len(),
                difference,
                paired_t: paired_t_test(&p.logp_a, &p.logp_b)?,
            })
        })
        .ok();
    let verdict = if difference.ci95.spans_zero() {
        Verdict::NotDistinguishable
    } else if difference.estimate > 0.0 {
        Verdict::VariantBetter
    } else {
        Verdict::ReferenceBetter
    };
    Some(TaskComparison {
        task: task.to_string(),
        n,
        variant_accuracy: mean(&p.score_a),
        reference_accuracy: mean(&p.score_b),
        difference,
        mcnemar,
        log_prob,
        minimum_detectable_effect: minimum_detectable_effect(&p.score_a, &p.score_b).ok(),
        verdict,
        unpaired: p.unpaired,
    })
}
