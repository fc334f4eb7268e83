//! `eval.json` in lm-evaluation-harness's results shape, plus our summary and recovery.
//!
//! - `results`: per task, lm-eval metric keys (`"acc,none"`, `"acc_stderr,none"`,
//!   `"exact_match,flexible-extract"`, ...); MMLU subjects as `mmlu_<subject>` entries, listed
//!   under `group_subtasks`.
//! - `n-samples` (`original` documents in the file, `effective` scored), `n-shot`, `configs`
//!   (shots, limit, offset, seed, files), `versions`, `config` (model and run settings).
//! - `summary`: the main metric of every task and the average of the accuracy tasks
//!   (perplexity is reported but never averaged).
//! - `recovery` (when the base model's `eval.json` of the same configuration is given):
//!   per task `value ÷ base × 100` (for perplexity, where lower is better, `base ÷ value × 100`,
//!   so 100 % is always "as good as the base"), and the same for the average, computed over the
//!   accuracy tasks both runs have, leaving out the tasks where the base is at chance
//!   (`excluded_at_chance`); also the normalized recovery `(value − chance)/(base − chance)`,
//!   with a paired-bootstrap 95 % interval when the base's `items.jsonl` lies beside its
//!   `eval.json` ([`super::normalized_recovery`]).
//! - `statistics` ([`super::chance`]): per task n, chance level, standard error, 95 % interval
//!   and the `at_chance` flag; `summary.average` leaves out the tasks at chance and names them in
//!   `summary.excluded_at_chance` (`summary.average_all_tasks` keeps every accuracy task).
//!
//! The main metric of each task, and whether higher is better, come from the task table
//! ([`pruneforge_api::spec::EvalTaskName::def`]).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use pruneforge_api::spec::EvalTaskName;

use super::chance::{at_chance_in, Headline, TaskStatistics};
use crate::error::{Result, StageError};
use crate::stats::{BootstrapCi, NormalizedRecovery};

/// The stderr key of a results key (`acc,none` → `acc_stderr,none`).
pub fn stderr_key(key: &str) -> String {
    match key.split_once(',') {
        Some((m, f)) => format!("{m}_stderr,{f}"),
        None => format!("{key}_stderr"),
    }
}

/// What evaluating one task produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOutcome {
    /// lm-eval results keys and values.
    pub metrics: Vec<(String, f64)>,
    /// Sub-task results (MMLU subjects: `mmlu_<subject>`).
    pub subtasks: Vec<(String, Vec<(String, f64)>)>,
    /// One JSON object per document for `items.jsonl`.
    pub items: Vec<Value>,
}

impl TaskOutcome {
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// One evaluated task with its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskReport {
    pub task: EvalTaskName,
    pub outcome: TaskOutcome,
    pub n_original: usize,
    pub n_effective: usize,
    pub num_fewshot: usize,
    /// lm-eval style task config (`num_fewshot`, `limit`, `offset`, `files`, ...).
    pub config: Value,
    pub seconds: f64,
}

/// One task's main metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskScore {
    pub task: String,
    pub metric: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<f64>,
    pub items: u64,
    pub higher_is_better: bool,
}

/// Recovery of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecovery {
    pub task: String,
    pub metric: String,
    pub base: f64,
    pub value: f64,
    /// `None` when the base value is 0 (the ratio is undefined).
    pub percent: Option<f64>,
    /// The task's chance level (accuracy tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<f64>,
    /// Whether the base is within 2 standard errors of chance ([`super::chance`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_chance: Option<bool>,
    /// `(value − chance) / (base − chance)`; `None` without a chance level or when the base
    /// scores exactly chance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized: Option<f64>,
    /// Normalized recovery over the items both runs scored (paired by document `idx`), with a
    /// paired-bootstrap 95 % interval; needs the base's `items.jsonl`. Computed from the item
    /// scores, so for MMLU it is the recovery of the micro average (the value is the macro).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalized_paired: Option<NormalizedRecovery>,
}

/// Recovery against the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    pub base_eval: String,
    pub tasks: Vec<TaskRecovery>,
    /// Averages over the accuracy tasks present in both runs, without the tasks where the
    /// base is at chance.
    pub base_average: Option<f64>,
    pub average: Option<f64>,
    pub average_percent: Option<f64>,
    /// Mean normalized recovery over the same tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_normalized: Option<f64>,
    /// Mean of the tasks' paired normalized recoveries with a stratified paired-bootstrap 95 %
    /// interval (tasks resampled separately); needs the base's `items.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_normalized_paired: Option<BootstrapCi>,
    /// Shared accuracy tasks left out of the averages: the base is at chance on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_at_chance: Vec<String>,
    /// Tasks of this run that the base run lacks (no recovery for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_in_base: Vec<String>,
}

/// Main metrics of every task and the average of the accuracy tasks.
pub fn task_scores(reports: &[TaskReport]) -> Result<Vec<TaskScore>> {
    reports
        .iter()
        .map(|r| {
            let metric = r.task.def().metric;
            let (name, key, higher) = (
                metric.name(),
                metric.results_key(),
                metric.higher_is_better(),
            );
            let value = r.outcome.metric(key).ok_or_else(|| {
                StageError::Input(format!("internal: task {} has no metric {key}", r.task))
            })?;
            Ok(TaskScore {
                task: r.task.as_str().to_string(),
                metric: name.to_string(),
                value,
                stderr: r.outcome.metric(&stderr_key(key)),
                items: r.n_effective as u64,
                higher_is_better: higher,
            })
        })
        .collect()
}

/// Mean of the main metrics of the accuracy tasks (perplexity excluded); `None` if there is none.
pub fn average(scores: &[TaskScore]) -> Option<f64> {
    let acc: Vec<f64> = scores
        .iter()
        .filter(|s| s.higher_is_better)
        .map(|s| s.value)
        .collect();
    (!acc.is_empty()).then(|| acc.iter().sum::<f64>() / acc.len() as f64)
}

fn metrics_object(metrics: &[(String, f64)], alias: &str) -> Value {
    let mut m = Map::new();
    m.insert("alias".into(), Value::String(alias.to_string()));
    for (k, v) in metrics {
        m.insert(k.clone(), json!(v));
    }
    Value::Object(m)
}

/// Version of our implementation of each task (bumped when its prompts or scoring change).
pub const TASK_VERSION: u32 = 1;

/// lm-eval's `results` entries of the tasks (without sub-tasks), by task name.
pub fn task_results(reports: &[TaskReport]) -> Value {
    Value::Object(
        reports
            .iter()
            .map(|r| {
                let name = r.task.as_str();
                (name.to_string(), metrics_object(&r.outcome.metrics, name))
            })
            .collect(),
    )
}

/// The whole `eval.json`.
pub fn eval_json(
    reports: &[TaskReport],
    scores: &[TaskScore],
    statistics: &[TaskStatistics],
    headline: &Headline,
    recovery: Option<&Recovery>,
    config: Value,
    throughput: Value,
) -> Value {
    let mut results = Map::new();
    let mut group_subtasks = Map::new();
    let mut n_samples = Map::new();
    let mut n_shot = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut seconds = Map::new();
    for r in reports {
        let name = r.task.as_str();
        results.insert(name.into(), metrics_object(&r.outcome.metrics, name));
        if !r.outcome.subtasks.is_empty() {
            let mut names = Vec::new();
            for (sub, metrics) in &r.outcome.subtasks {
                results.insert(sub.clone(), metrics_object(metrics, &format!(" - {sub}")));
                names.push(Value::String(sub.clone()));
            }
            group_subtasks.insert(name.into(), Value::Array(names));
        }
        n_samples.insert(
            name.into(),
            json!({"original": r.n_original, "effective": r.n_effective}),
        );
        n_shot.insert(name.into(), json!(r.num_fewshot));
        configs.insert(name.into(), r.config.clone());
        versions.insert(name.into(), json!(TASK_VERSION));
        seconds.insert(name.into(), json!(r.seconds));
    }
    let mut out = Map::new();
    out.insert("results".into(), Value::Object(results));
    out.insert("group_subtasks".into(), Value::Object(group_subtasks));
    out.insert("configs".into(), Value::Object(configs));
    out.insert("versions".into(), Value::Object(versions));
    out.insert("n-shot".into(), Value::Object(n_shot));
    out.insert("n-samples".into(), Value::Object(n_samples));
    out.insert("config".into(), config);
    out.insert(
        "summary".into(),
        json!({
            "tasks": scores,
            "average": headline.average,
            "average_all_tasks": headline.average_all_tasks,
            "excluded_at_chance": headline.excluded_at_chance,
        }),
    );
    out.insert(
        "statistics".into(),
        Value::Object(
            statistics
                .iter()
                .map(|t| (t.task.clone(), json!(t)))
                .collect(),
        ),
    );
    if let Some(rec) = recovery {
        out.insert("recovery".into(), json!(rec));
    }
    out.insert("throughput".into(), throughput);
    out.insert("task_seconds".into(), Value::Object(seconds));
    Value::Object(out)
}

/// Settings that must agree between a run and its base for recovery to mean anything.
const COMPARED_CONFIG: [&str; 4] = ["num_fewshot", "limit", "offset", "docs_file"];

/// Recovery of `scores` (this run, with `configs` as in its eval.json) against the base run's
/// eval.json. Fails when a shared task was run with other settings.
pub fn recovery(
    scores: &[TaskScore],
    configs: &Map<String, Value>,
    base: &Value,
    base_path: &str,
) -> Result<Recovery> {
    let bad = |why: String| StageError::Input(format!("base eval {base_path}: {why}"));
    let base_scores: Vec<TaskScore> = base
        .pointer("/summary/tasks")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| bad(format!("`summary.tasks` is not readable: {e}")))?
        .ok_or_else(|| {
            bad("no `summary.tasks`; pass an eval.json written by pruneforge eval".into())
        })?;
    let mut tasks = Vec::new();
    let mut missing = Vec::new();
    let mut mismatches = Vec::new();
    for s in scores {
        let Some(b) = base_scores
            .iter()
            .find(|b| b.task == s.task && b.metric == s.metric)
        else {
            missing.push(s.task.clone());
            continue;
        };
        let own_cfg = configs.get(&s.task);
        let base_cfg = base.pointer(&format!("/configs/{}", s.task));
        for key in COMPARED_CONFIG {
            let a = own_cfg.and_then(|c| c.get(key));
            let z = base_cfg.and_then(|c| c.get(key));
            if a != z {
                mismatches.push(format!(
                    "{} {key}: this run {}, base {}",
                    s.task,
                    a.map_or("absent".into(), Value::to_string),
                    z.map_or("absent".into(), Value::to_string)
                ));
            }
        }
        let percent = if s.higher_is_better {
            (b.value != 0.0).then(|| s.value / b.value * 100.0)
        } else {
            // KL's base value is 0 (the base against itself): no ratio.
            (s.value != 0.0 && b.value != 0.0).then(|| b.value / s.value * 100.0)
        };
        let chance = s
            .task
            .parse::<EvalTaskName>()
            .ok()
            .and_then(|t| t.def().chance)
            .filter(|_| s.higher_is_better);
        let normalized = chance
            .filter(|c| b.value != *c)
            .map(|c| (s.value - c) / (b.value - c));
        tasks.push(TaskRecovery {
            task: s.task.clone(),
            metric: s.metric.clone(),
            base: b.value,
            value: s.value,
            percent,
            chance,
            at_chance: chance.and_then(|_| at_chance_in(base, &s.task)),
            normalized,
            normalized_paired: None,
        });
    }
    if !mismatches.is_empty() {
        return Err(bad(format!(
            "it was run with other settings, so recovery would compare different things: {}; \
             rerun the base model with the same tasks",
            mismatches.join("; ")
        )));
    }
    let accuracy: Vec<&TaskRecovery> = tasks
        .iter()
        .filter(|t| {
            scores
                .iter()
                .any(|s| s.task == t.task && s.higher_is_better)
        })
        .collect();
    let excluded_at_chance: Vec<String> = accuracy
        .iter()
        .filter(|t| t.at_chance == Some(true))
        .map(|t| t.task.clone())
        .collect();
    let shared: Vec<&TaskRecovery> = accuracy
        .into_iter()
        .filter(|t| t.at_chance != Some(true))
        .collect();
    let mean = |f: fn(&TaskRecovery) -> f64| -> Option<f64> {
        (!shared.is_empty()).then(|| shared.iter().map(|t| f(t)).sum::<f64>() / shared.len() as f64)
    };
    let base_average = mean(|t| t.base);
    let avg = mean(|t| t.value);
    let normalized: Vec<f64> = shared.iter().filter_map(|t| t.normalized).collect();
    let average_normalized = (!normalized.is_empty() && normalized.len() == shared.len())
        .then(|| normalized.iter().sum::<f64>() / normalized.len() as f64);
    let average_percent = match (avg, base_average) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b * 100.0),
        _ => None,
    };
    Ok(Recovery {
        base_eval: base_path.to_string(),
        tasks,
        base_average,
        average: avg,
        average_percent,
        average_normalized,
        average_normalized_paired: None,
        excluded_at_chance,
        missing_in_base: missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(task: &str, metric: &str, value: f64, higher: bool) -> TaskScore {
        TaskScore {
            task: task.into(),
            metric: metric.into(),
            value,
            stderr: None,
            items: 10,
            higher_is_better: higher,
        }
    }

    fn configs(limit: u64) -> Map<String, Value> {
        let mut m = Map::new();
        for t in ["arc_easy", "piqa", "perplexity"] {
            m.insert(
                t.into(),
                json!({"num_fewshot": 0, "limit": limit, "offset": 0, "docs_file": "x"}),
            );
        }
        m
    }

    #[test]
    fn recovery_per_task_and_average() {
        let base_scores = vec![
            score("arc_easy", "acc_norm", 0.5, true),
            score("piqa", "acc_norm", 0.6, true),
            score("perplexity", "perplexity", 10.0, false),
        ];
        let base = json!({"summary": {"tasks": base_scores}, "configs": configs(200)});
        let own = vec![
            score("arc_easy", "acc_norm", 0.4, true),
            score("piqa", "acc_norm", 0.6, true),
            score("perplexity", "perplexity", 20.0, false),
            score("winogrande", "acc", 0.5, true),
        ];
        let rec = recovery(&own, &configs(200), &base, "base/eval.json").expect("same config");
        let pct: Vec<Option<f64>> = rec.tasks.iter().map(|t| t.percent).collect();
        assert!((pct[0].expect("defined") - 80.0).abs() < 1e-9);
        assert!((pct[1].expect("defined") - 100.0).abs() < 1e-9);
        assert!(
            (pct[2].expect("defined") - 50.0).abs() < 1e-9,
            "lower is better"
        );
        assert_eq!(rec.missing_in_base, vec!["winogrande".to_string()]);
        assert!((rec.average_percent.expect("defined") - 1.0 / 1.1 * 100.0).abs() < 1e-9);
        assert_eq!(average(&own), Some(0.5));
    }

    #[test]
    fn recovery_refuses_other_settings() {
        let base = json!({
            "summary": {"tasks": [score("arc_easy", "acc_norm", 0.5, true)]},
            "configs": configs(100)
        });
        let own = vec![score("arc_easy", "acc_norm", 0.4, true)];
        let err = recovery(&own, &configs(200), &base, "b").expect_err("limits differ");
        assert!(err.to_string().contains("arc_easy limit"), "{err}");
        assert!(recovery(&own, &configs(200), &json!({}), "b").is_err());
    }

    #[test]
    fn stderr_keys() {
        assert_eq!(stderr_key("acc,none"), "acc_stderr,none");
        assert_eq!(
            stderr_key("exact_match,flexible-extract"),
            "exact_match_stderr,flexible-extract"
        );
    }
}
