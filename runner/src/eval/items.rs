//! Per-item values in `items.jsonl`, written by the scorers and read back for paired
//! statistics.
//!
//! Every scored document of an accuracy task carries:
//! - `correct`: whether the task's main prediction was right (multiple choice: the prediction
//!   of the main metric — `acc_norm` or `acc` — equals `gold`; TruthfulQA mc2: the most likely
//!   answer is a true one; GSM8K: the flexible-extract exact match);
//! - `score`: the item's contribution to the main metric (0/1, or the item's mc2 value), so
//!   the mean of `score` is the task's metric (MMLU: the micro average);
//! - `logp_gold` (multiple choice): the log-probability of the gold choice normalised over the
//!   choices, `ll_gold − logsumexp(ll_choices)` (TruthfulQA mc2: of all true answers, ln mc2).
//!
//! Items are keyed by `(task, idx)`: `idx` is the document's position in the task's full list,
//! the same for every model evaluated with the same task settings. Files written before these
//! fields existed are read by recomputing them from `gold`, `pred`, `lls` and `exact_match`.

use std::collections::BTreeMap;

use pruneforge_api::spec::{EvalTaskName, MainMetric};
use serde_json::Value;

/// `ln Σ exp(x)`, stable for large magnitudes; −∞ for an empty slice.
pub fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// `ll[gold] − logsumexp(ll)`: log p(gold | choices); `None` when `gold` is out of range.
pub fn log_prob_gold(lls: &[f64], gold: usize) -> Option<f64> {
    lls.get(gold).map(|g| g - log_sum_exp(lls))
}

/// `logsumexp(ll[..n_true]) − logsumexp(ll)`: log of the probability mass of the true answers
/// (TruthfulQA mc2: the first `n_true` answers), i.e. ln mc2.
pub fn log_prob_true(lls: &[f64], n_true: usize) -> Option<f64> {
    (n_true > 0 && n_true <= lls.len()).then(|| log_sum_exp(&lls[..n_true]) - log_sum_exp(lls))
}

/// The per-item values of one document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemValues {
    pub correct: Option<bool>,
    pub score: Option<f64>,
    pub logp_gold: Option<f64>,
}

/// Items by task, then by document `idx`.
pub type ItemTable = BTreeMap<String, BTreeMap<u64, ItemValues>>;

/// Parses `items.jsonl`. Lines that are not JSON objects with `task` and `idx` are skipped
/// and counted; tasks without an accuracy metric (perplexity, kl) are left out. Returns the table
/// and the number of skipped lines.
pub fn parse_items(text: &str) -> (ItemTable, usize) {
    let mut table = ItemTable::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let added = serde_json::from_str::<Value>(line)
            .ok()
            .is_some_and(|v| insert_item(&mut table, &v));
        if !added {
            skipped += 1;
        }
    }
    (table, skipped)
}

/// The table of items still in memory (this run's, before `items.jsonl` is written).
pub fn items_from_values<'a>(values: impl IntoIterator<Item = &'a Value>) -> ItemTable {
    let mut table = ItemTable::new();
    for v in values {
        insert_item(&mut table, v);
    }
    table
}

/// Adds one item line; false when it has no `task` or `idx`.
fn insert_item(table: &mut ItemTable, v: &Value) -> bool {
    let (Some(task), Some(idx)) = (
        v.get("task").and_then(Value::as_str),
        v.get("idx").and_then(Value::as_u64),
    ) else {
        return false;
    };
    if let Some(values) = item_values(task, v) {
        table
            .entry(task.to_string())
            .or_default()
            .insert(idx, values);
    }
    true
}

/// The values of one item line; `None` for a task that has no accuracy metric.
fn item_values(task: &str, v: &Value) -> Option<ItemValues> {
    let metric = task.parse::<EvalTaskName>().ok().map(|t| t.def().metric);
    if metric.is_some_and(|m| !m.higher_is_better()) {
        return None;
    }
    let correct = v
        .get("correct")
        .and_then(Value::as_bool)
        .or_else(|| legacy_correct(metric, v));
    let score = v
        .get("score")
        .and_then(Value::as_f64)
        .or_else(|| v.get("mc2").and_then(Value::as_f64))
        .or_else(|| correct.map(|c| f64::from(u8::from(c))));
    let logp_gold = v
        .get("logp_gold")
        .and_then(Value::as_f64)
        .or_else(|| legacy_logp_gold(metric, v));
    Some(ItemValues {
        correct,
        score,
        logp_gold,
    })
}

fn lls_of(v: &Value) -> Option<Vec<f64>> {
    v.get("lls")?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect()
}

fn legacy_correct(metric: Option<MainMetric>, v: &Value) -> Option<bool> {
    if let Some(hit) = v.pointer("/exact_match/flexible-extract") {
        return hit.as_bool();
    }
    let gold = v.get("gold")?.as_u64()?;
    let key = match metric? {
        MainMetric::AccNorm => "acc_norm",
        MainMetric::Acc | MainMetric::AccMacro => "acc",
        _ => return None,
    };
    Some(v.pointer(&format!("/pred/{key}"))?.as_u64()? == gold)
}

fn legacy_logp_gold(metric: Option<MainMetric>, v: &Value) -> Option<f64> {
    let lls = lls_of(v)?;
    if metric == Some(MainMetric::Mc2) {
        let labels: Vec<bool> = v
            .get("mc2_labels")?
            .as_array()?
            .iter()
            .map(Value::as_bool)
            .collect::<Option<_>>()?;
        let n_true = labels.iter().position(|l| !l)?;
        return log_prob_true(&lls, n_true);
    }
    let gold = usize::try_from(v.get("gold")?.as_u64()?).ok()?;
    log_prob_gold(&lls, gold)
}

/// Values of the items two runs share in one task, in `idx` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairedItems {
    /// Items with a score in both runs.
    pub score_a: Vec<f64>,
    pub score_b: Vec<f64>,
    /// Items with `correct` in both runs.
    pub correct_a: Vec<bool>,
    pub correct_b: Vec<bool>,
    /// Items with `logp_gold` in both runs.
    pub logp_a: Vec<f64>,
    pub logp_b: Vec<f64>,
    /// Items of either run that the other lacks.
    pub unpaired: usize,
}

/// Pairs the items of `task` in `a` and `b` by document `idx`.
pub fn pair_items(a: &ItemTable, b: &ItemTable, task: &str) -> PairedItems {
    let mut out = PairedItems::default();
    let empty = BTreeMap::new();
    let ia = a.get(task).unwrap_or(&empty);
    let ib = b.get(task).unwrap_or(&empty);
    for (idx, x) in ia {
        let Some(y) = ib.get(idx) else {
            out.unpaired += 1;
            continue;
        };
        if let (Some(s), Some(t)) = (x.score, y.score) {
            out.score_a.push(s);
            out.score_b.push(t);
        }
        if let (Some(s), Some(t)) = (x.correct, y.correct) {
            out.correct_a.push(s);
            out.correct_b.push(t);
        }
        if let (Some(s), Some(t)) = (x.logp_gold, y.logp_gold) {
            out.logp_a.push(s);
            out.logp_b.push(t);
        }
    }
    out.unpaired += ib.keys().filter(|k| !ia.contains_key(k)).count();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities() {
        let lls = [-1.0, -2.0, -3.0];
        let z = (-1f64).exp() + (-2f64).exp() + (-3f64).exp();
        assert!((log_prob_gold(&lls, 1).unwrap() - ((-2f64).exp() / z).ln()).abs() < 1e-12);
        assert_eq!(log_prob_gold(&lls, 3), None);
        let p_true = ((-1f64).exp() + (-2f64).exp()) / z;
        assert!((log_prob_true(&lls, 2).unwrap() - p_true.ln()).abs() < 1e-12);
        assert!((log_sum_exp(&[-1000.0, -1000.0]) - (-1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    }

    #[test]
    fn new_and_legacy_lines_pair_by_idx() {
        let new = r#"{"task":"arc_easy","idx":3,"gold":0,"lls":[-1.0,-2.0],"correct":true,"score":1.0,"logp_gold":-0.3}
{"task":"arc_easy","idx":4,"gold":1,"lls":[-1.0,-2.0],"correct":false,"score":0.0,"logp_gold":-1.3}
{"task":"perplexity","idx":0,"nll":3.0}
not json"#;
        let old = r#"{"task":"arc_easy","idx":4,"gold":1,"lls":[-2.0,-1.0],"pred":{"acc":1,"acc_norm":1,"acc_norm_bytes":1}}
{"task":"arc_easy","idx":5,"gold":1,"lls":[-2.0,-1.0],"pred":{"acc":1,"acc_norm":0,"acc_norm_bytes":1}}
{"task":"gsm8k","idx":0,"exact_match":{"strict-match":false,"flexible-extract":true}}"#;
        let (a, skipped) = parse_items(new);
        assert_eq!(skipped, 1);
        assert!(!a.contains_key("perplexity"));
        let (b, _) = parse_items(old);
        let legacy = b["arc_easy"][&4];
        assert_eq!(legacy.correct, Some(true));
        assert_eq!(legacy.score, Some(1.0));
        assert!(
            (legacy.logp_gold.unwrap() - log_prob_gold(&[-2.0, -1.0], 1).unwrap()).abs() < 1e-12
        );
        assert_eq!(
            b["arc_easy"][&5].correct,
            Some(false),
            "acc_norm is arc's metric"
        );
        assert_eq!(b["gsm8k"][&0].correct, Some(true));
        let p = pair_items(&a, &b, "arc_easy");
        assert_eq!(p.score_a, vec![0.0]);
        assert_eq!(p.score_b, vec![1.0]);
        assert_eq!((p.correct_a, p.correct_b), (vec![false], vec![true]));
        assert_eq!(p.logp_a, vec![-1.3]);
        assert_eq!(p.unpaired, 2);
    }
}
