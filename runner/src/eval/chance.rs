//! Per-task statistics of `eval.json` and the tasks at chance level.
//!
//! A task is *at chance* when the base model's main metric lies within 2 standard errors of
//! the task's chance level (from the task table): there the base knows nothing to recover, so
//! recovery ratios are noise and the task is left out of the headline average. The base model
//! itself is judged by its own score; a variant evaluated against a base `eval.json` takes the
//! base's flag (its own when the base lacks the task).
//!
//! MMLU's macro average has no standard error of its own; the micro accuracy's
//! (`acc_stderr,none`) stands in for it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use pruneforge_api::spec::EvalTaskName;

use super::report::TaskScore;
use crate::stats::Interval;

/// Standard errors within which a score counts as chance.
pub const AT_CHANCE_STANDARD_ERRORS: f64 = 2.0;

/// Whose score decided the at-chance flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagSource {
    /// This run's own score (it is the base, or no base was given).
    Own,
    /// The base model's score from its `eval.json`.
    Base,
}

/// One task's entry in `eval.json`'s `statistics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatistics {
    pub task: String,
    pub metric: String,
    /// Documents scored.
    pub n: u64,
    pub value: f64,
    /// Chance level of the task (none for perplexity).
    pub chance: Option<f64>,
    /// Standard error of the main metric.
    pub stderr: Option<f64>,
    /// Normal 95 % interval `value ± 1.96 · stderr`.
    pub ci95: Option<Interval>,
    /// `None` when the task has no chance level or no standard error to judge by.
    pub at_chance: Option<bool>,
    pub at_chance_from: Option<FlagSource>,
}

/// Whether `value` is within [`AT_CHANCE_STANDARD_ERRORS`] standard errors of `chance`.
pub fn is_at_chance(value: f64, stderr: f64, chance: f64) -> bool {
    (value - chance).abs() <= AT_CHANCE_STANDARD_ERRORS * stderr
}

/// The main metric's standard error, or the micro accuracy's from an lm-eval `results` entry.
fn stderr_or_micro(score: &TaskScore, results: Option<&Value>) -> Option<f64> {
    score.stderr.or_else(|| {
        results
            .and_then(|r| r.get("acc_stderr,none"))
            .and_then(Value::as_f64)
    })
}

fn chance_of(task: &str) -> Option<f64> {
    task.parse::<EvalTaskName>().ok()?.def().chance
}

/// The at-chance flag of `task` in a run's `eval.json` (its summary and results).
pub fn at_chance_in(eval: &Value, task: &str) -> Option<bool> {
    let scores: Vec<TaskScore> =
        serde_json::from_value(eval.pointer("/summary/tasks")?.clone()).ok()?;
    let score = scores.iter().find(|s| s.task == task)?;
    let results = eval.pointer(&format!("/results/{task}"));
    let stderr = stderr_or_micro(score, results)?;
    Some(is_at_chance(score.value, stderr, chance_of(task)?))
}

/// Statistics of every task; `results` is this run's lm-eval `results` object and `base` the
/// base model's `eval.json`, when given.
pub fn task_statistics(
    scores: &[TaskScore],
    results: &Value,
    base: Option<&Value>,
) -> Vec<TaskStatistics> {
    scores
        .iter()
        .map(|s| {
            let chance = chance_of(&s.task);
            let stderr = stderr_or_micro(s, results.get(&s.task));
            let own = match (chance, stderr) {
                (Some(c), Some(se)) => Some(is_at_chance(s.value, se, c)),
                _ => None,
            };
            let from_base = base.and_then(|b| at_chance_in(b, &s.task));
            let (at_chance, at_chance_from) = match (from_base, own) {
                (Some(flag), _) => (Some(flag), Some(FlagSource::Base)),
                (None, Some(flag)) => (Some(flag), Some(FlagSource::Own)),
                (None, None) => (None, None),
            };
            TaskStatistics {
                task: s.task.clone(),
                metric: s.metric.clone(),
                n: s.items,
                value: s.value,
                chance,
                stderr,
                ci95: stderr.map(|se| Interval::normal_95(s.value, se)),
                at_chance,
                at_chance_from,
            }
        })
        .collect()
}

/// The headline average: the accuracy tasks' mean without the tasks at chance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Headline {
    /// Mean over the accuracy tasks not at chance.
    pub average: Option<f64>,
    /// Mean over every accuracy task (the former headline).
    pub average_all_tasks: Option<f64>,
    /// Tasks left out because the base is at chance on them.
    pub excluded_at_chance: Vec<String>,
}

/// The headline average of `scores` given their statistics.
pub fn headline(scores: &[TaskScore], stats: &[TaskStatistics]) -> Headline {
    let at_chance = |task: &str| {
        stats
            .iter()
            .any(|t| t.task == task && t.at_chance == Some(true))
    };
    let accuracy: Vec<&TaskScore> = scores.iter().filter(|s| s.higher_is_better).collect();
    let mean = |xs: &[&TaskScore]| {
        (!xs.is_empty()).then(|| xs.iter().map(|s| s.value).sum::<f64>() / xs.len() as f64)
    };
    let kept: Vec<&TaskScore> = accuracy
        .iter()
        .copied()
        .filter(|s| !at_chance(&s.task))
        .collect();
    Headline {
        average: mean(&kept),
        average_all_tasks: mean(&accuracy),
        excluded_at_chance: accuracy
            .iter()
            .filter(|s| at_chance(&s.task))
            .map(|s| s.task.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn score(task: &str, metric: &str, value: f64, stderr: Option<f64>) -> TaskScore {
        TaskScore {
            task: task.into(),
            metric: metric.into(),
            value,
            stderr,
            items: 100,
            higher_is_better: task != "perplexity",
        }
    }

    #[test]
    fn own_flags_and_headline() {
        let scores = vec![
            score("arc_easy", "acc_norm", 0.60, Some(0.05)),
            // 0.30 is within 2 · 0.03 of 0.25.
            score("arc_challenge", "acc_norm", 0.30, Some(0.03)),
            // MMLU's macro average: the micro stderr from results decides.
            score("mmlu", "acc_macro", 0.26, None),
            score("perplexity", "perplexity", 12.0, None),
        ];
        let results = json!({"mmlu": {"acc_stderr,none": 0.01}});
        let stats = task_statistics(&scores, &results, None);
        let flags: Vec<Option<bool>> = stats.iter().map(|s| s.at_chance).collect();
        assert_eq!(flags, [Some(false), Some(true), Some(true), None]);
        assert_eq!(stats[0].at_chance_from, Some(FlagSource::Own));
        assert_eq!(stats[0].chance, Some(0.25));
        assert_eq!(stats[2].stderr, Some(0.01));
        let ci = stats[0].ci95.expect("stderr given");
        assert!((ci.low - (0.6 - 1.959963984540054 * 0.05)).abs() < 1e-12);
        let h = headline(&scores, &stats);
        assert_eq!(h.average, Some(0.60));
        assert!((h.average_all_tasks.expect("three tasks") - 1.16 / 3.0).abs() < 1e-12);
        assert_eq!(h.excluded_at_chance, ["arc_challenge", "mmlu"]);
    }

    #[test]
    fn variants_take_the_base_flag() {
        let base = json!({"summary": {"tasks": [
            score("arc_easy", "acc_norm", 0.27, Some(0.02)),
            score("piqa", "acc_norm", 0.70, Some(0.02)),
        ]}});
        // The variant's own arc_easy would not be at chance, its piqa would; the base decides.
        let scores = vec![
            score("arc_easy", "acc_norm", 0.60, Some(0.01)),
            score("piqa", "acc_norm", 0.50, Some(0.05)),
            score("winogrande", "acc", 0.51, Some(0.02)),
        ];
        let stats = task_statistics(&scores, &json!({}), Some(&base));
        assert_eq!(stats[0].at_chance, Some(true));
        assert_eq!(stats[0].at_chance_from, Some(FlagSource::Base));
        assert_eq!(stats[1].at_chance, Some(false));
        assert_eq!(
            (stats[2].at_chance, stats[2].at_chance_from),
            (Some(true), Some(FlagSource::Own)),
            "not in the base: its own flag"
        );
        assert_eq!(at_chance_in(&base, "piqa"), Some(false));
        assert_eq!(at_chance_in(&json!({}), "piqa"), None);
    }
}
