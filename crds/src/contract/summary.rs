//! Compact per-kind result summaries (small enough for a termination message).

use serde::{Deserialize, Serialize};

use crate::spec::ScoreMetric;

/// Summary of a stage's result, tagged by kind (`{"kind": "eval", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StageSummary {
    /// `import`.
    Import(ImportSummary),
    /// `score`.
    Score(ScoreSummary),
    /// `prune`.
    Prune(PruneSummary),
    /// `distill`.
    Distill(DistillSummary),
    /// `finetune`.
    Finetune(FinetuneSummary),
    /// `self-play`.
    SelfPlay(SelfPlaySummary),
    /// `prefer`.
    Prefer(PreferSummary),
    /// `merge`.
    Merge(MergeSummary),
    /// `eval`.
    Eval(EvalSummary),
    /// `speculate`.
    Speculate(SpeculateSummary),
}

impl StageSummary {
    /// The stage kind the summary belongs to.
    pub fn kind(&self) -> crate::stage_kind::StageKind {
        use crate::stage_kind::StageKind;
        match self {
            StageSummary::Import(_) => StageKind::Import,
            StageSummary::Score(_) => StageKind::Score,
            StageSummary::Prune(_) => StageKind::Prune,
            StageSummary::Distill(_) => StageKind::Distill,
            StageSummary::Finetune(_) => StageKind::Finetune,
            StageSummary::SelfPlay(_) => StageKind::SelfPlay,
            StageSummary::Prefer(_) => StageKind::Prefer,
            StageSummary::Merge(_) => StageKind::Merge,
            StageSummary::Eval(_) => StageKind::Eval,
            StageSummary::Speculate(_) => StageKind::Speculate,
        }
    }

    /// Drops optional detail (per-task standard errors and item counts, non-best scores) to
    /// shrink the summary; the headline numbers stay.
    pub(crate) fn shrink(&mut self) {
        match self {
            StageSummary::Eval(e) => {
                for t in &mut e.tasks {
                    t.stderr = None;
                    t.items = None;
                }
            }
            StageSummary::Score(s) => s.best.truncate(8),
            _ => {}
        }
    }
}

impl StageSummary {
    /// One line, for the status `message` of a finished stage (operator) and the result column
    /// of `pruneforge run` and its report (runner), e.g. `kept 28/32 rewrites (87.5%)`.
    pub fn one_line(&self) -> String {
        match self {
            Self::Import(s) => format!(
                "{} layers, {} parameters",
                s.layers,
                human_count(s.parameters)
            ),
            Self::Score(s) => {
                let blocks: Vec<String> = s
                    .best
                    .iter()
                    .map(|b| format!("n{}: {}-{} ({:.4})", b.block_size, b.start, b.end, b.score))
                    .collect();
                format!(
                    "{} layers scored; best blocks {}",
                    s.layers,
                    blocks.join(", ")
                )
            }
            Self::Prune(s) => {
                let dropped = if s.block_size == 0 {
                    "no layer dropped".to_string()
                } else {
                    format!("dropped layers {}-{}", s.start, s.end)
                };
                let width = s
                    .width
                    .as_deref()
                    .map(|w| format!("; width {w}"))
                    .unwrap_or_default();
                format!(
                    "{dropped}{width}: {} -> {} layers, {} -> {} parameters",
                    s.layers_before,
                    s.layers_after,
                    human_count(s.parameters_before),
                    human_count(s.parameters_after)
                )
            }
            Self::Distill(s) => format!(
                "kept {}/{} rewrites ({:.1}%)",
                s.kept,
                s.items,
                s.kept_rate * 100.0
            ),
            Self::Finetune(s) => format!(
                "final loss {:.4} after {} steps, {} tokens",
                s.final_loss, s.steps, s.tokens
            ),
            Self::SelfPlay(s) => format!(
                "{} pairs from {} prompts ({} answers empty, {} the same as the data set's)",
                s.pairs, s.prompts, s.empty, s.identical
            ),
            Self::Prefer(s) => format!(
                "{} pairs, {} steps: loss {:.4} -> {:.4}, reward margin {:+.4}, accuracy {:.0}%",
                s.pairs,
                s.steps,
                s.initial_loss,
                s.final_loss,
                s.final_margin,
                s.final_accuracy * 100.0
            ),
            Self::Merge(s) => format!(
                "merged {} tensors ({} linear fallbacks)",
                s.tensors, s.fallback_count
            ),
            Self::Eval(s) => {
                let accuracy = s
                    .tasks
                    .iter()
                    .filter(|t| {
                        t.task
                            .parse::<crate::spec::EvalTaskName>()
                            .map_or(true, crate::spec::EvalTaskName::higher_is_better)
                    })
                    .count();
                let mut line = match s.average {
                    Some(avg) if accuracy == s.tasks.len() => {
                        format!("average {:.4} over {} tasks", avg, s.tasks.len())
                    }
                    Some(avg) => format!(
                        "average {:.4} over {} accuracy tasks of {}",
                        avg,
                        accuracy,
                        s.tasks.len()
                    ),
                    None => format!("{} tasks", s.tasks.len()),
                };
                if let Some(kl) = s.tasks.iter().find(|t| t.task == "kl") {
                    line.push_str(&format!(", KL to base {:.4}", kl.value));
                }
                if let Some(r) = s.recovery {
                    line.push_str(&format!(", recovery {r:.1}%"));
                }
                if let Some(c) = s.drift_cosine {
                    line.push_str(&format!(", drift cosine {c:.3}"));
                }
                // A diverged model: say which metrics are NaN or infinite.
                let non_finite: Vec<String> = s
                    .tasks
                    .iter()
                    .filter(|t| !t.value.is_finite() && t.task != "kl")
                    .map(|t| format!("{} {}", t.task, t.value))
                    .collect();
                if !non_finite.is_empty() {
                    line.push_str(&format!(", not finite: {}", non_finite.join(", ")));
                }
                line
            }
            Self::Speculate(s) => format!(
                "acceptance {:.3}, mean accepted length {:.2}, speed-up {:.2}x",
                s.acceptance_rate, s.mean_accepted_length, s.speedup
            ),
        }
    }
}

fn human_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1}K", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// `import`: the canonical model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportSummary {
    /// Decoder layers.
    pub layers: u32,
    /// Parameters.
    pub parameters: u64,
}

/// Best block of one size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockScore {
    /// Block size n.
    pub block_size: u32,
    /// First layer of the block (0-based).
    pub start: u32,
    /// Last layer of the block (0-based, inclusive).
    pub end: u32,
    /// Score of the block (lower = less important for angular/influence metrics; for perplexity
    /// the perplexity without the block).
    #[serde(with = "super::float")]
    pub score: f64,
}

/// `score`: best allowed block per size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreSummary {
    /// Metric.
    pub metric: ScoreMetric,
    /// Layers of the scored model.
    pub layers: u32,
    /// Best block per size, ascending by size.
    pub best: Vec<BlockScore>,
}

/// `prune`: the dropped block and the model size before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneSummary {
    /// Block size n.
    pub block_size: u32,
    /// First dropped layer.
    pub start: u32,
    /// Last dropped layer (inclusive).
    pub end: u32,
    /// Layers before.
    pub layers_before: u32,
    /// Layers after.
    pub layers_after: u32,
    /// Parameters before.
    pub parameters_before: u64,
    /// Parameters after.
    pub parameters_after: u64,
    /// The widths that changed, e.g. `intermediate 1536->1128` (width pruning only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<String>,
}

/// `distill`: how many rewrites passed the answer check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DistillSummary {
    /// Items processed.
    pub items: u64,
    /// Rewrites kept (the rest fell back to the original answer).
    pub kept: u64,
    /// kept / items.
    #[serde(with = "super::float")]
    pub kept_rate: f64,
}

/// `finetune`: training totals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinetuneSummary {
    /// Training loss over the last logging window.
    #[serde(with = "super::float")]
    pub final_loss: f64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Training tokens seen (answer tokens that carry loss).
    pub tokens: u64,
}

/// `self-play`: how many of the model's answers became pairs (counts of one shard, or summed
/// over shards).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfPlaySummary {
    /// Prompts answered.
    pub prompts: u64,
    /// Pairs made (answers neither empty nor the data set's own).
    pub pairs: u64,
    /// Answers that were empty.
    pub empty: u64,
    /// Answers identical to the data set's.
    pub identical: u64,
}

/// `prefer`: the preference loss and the implicit reward margin at the start and the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferSummary {
    /// Pairs trained on.
    pub pairs: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Mean loss of the first logging window.
    #[serde(with = "super::float")]
    pub initial_loss: f64,
    /// Mean loss of the last logging window.
    #[serde(with = "super::float")]
    pub final_loss: f64,
    /// Mean `β(log-ratio chosen − log-ratio rejected)` over the last window.
    #[serde(with = "super::float")]
    pub final_margin: f64,
    /// Share of pairs whose chosen reward beats the rejected one, last window.
    #[serde(with = "super::float")]
    pub final_accuracy: f64,
}

/// `merge`: interpolation statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MergeSummary {
    /// Tensors merged.
    pub tensors: u64,
    /// Tensors where slerp fell back to linear interpolation (nearly colinear).
    pub fallback_count: u64,
}

/// One task's primary metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskScore {
    /// Task name, e.g. `arc_easy`.
    pub task: String,
    /// Metric name, e.g. `acc_norm`, `mc2`, `exact_match`, `perplexity`.
    pub metric: String,
    /// Metric value.
    #[serde(with = "super::float")]
    pub value: f64,
    /// Standard error.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::float::option"
    )]
    pub stderr: Option<f64>,
    /// Items scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u64>,
}

/// `eval`: per-task metrics and their average.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvalSummary {
    /// Per-task primary metrics, sorted by task.
    pub tasks: Vec<TaskScore>,
    /// Mean over the accuracy tasks (perplexity excluded).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::float::option"
    )]
    pub average: Option<f64>,
    /// Recovery of the average against the base model's eval of the same config, in percent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::float::option"
    )]
    pub recovery: Option<f64>,
    /// Mean cosine similarity of the variant's and the base model's response embeddings
    /// (drift enabled).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::float::option"
    )]
    pub drift_cosine: Option<f64>,
}

/// `speculate`: draft quality and speed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeculateSummary {
    /// Accepted / proposed draft tokens.
    #[serde(with = "super::float")]
    pub acceptance_rate: f64,
    /// Mean tokens accepted per verification step.
    #[serde(with = "super::float")]
    pub mean_accepted_length: f64,
    /// Wall-clock speed-up over plain decoding.
    #[serde(with = "super::float")]
    pub speedup: f64,
    /// Tokens proposed per step (k).
    pub draft_tokens: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(task: &str, value: f64) -> TaskScore {
        TaskScore {
            task: task.into(),
            metric: "m".into(),
            value,
            stderr: None,
            items: Some(10),
        }
    }

    #[test]
    fn eval_line_counts_the_averaged_tasks_and_shows_kl() {
        let only_accuracy = StageSummary::Eval(EvalSummary {
            tasks: vec![task("arc_easy", 0.4), task("piqa", 0.6)],
            average: Some(0.5),
            recovery: Some(95.0),
            drift_cosine: None,
        });
        assert_eq!(
            only_accuracy.one_line(),
            "average 0.5000 over 2 tasks, recovery 95.0%"
        );
        let with_kl = StageSummary::Eval(EvalSummary {
            tasks: vec![
                task("arc_easy", 0.4),
                task("kl", 0.75),
                task("answer_nll", 2.5),
            ],
            average: Some(0.4),
            recovery: None,
            drift_cosine: None,
        });
        assert_eq!(
            with_kl.one_line(),
            "average 0.4000 over 1 accuracy tasks of 3, KL to base 0.7500"
        );
    }
}
