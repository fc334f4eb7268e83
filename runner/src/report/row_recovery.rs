//! Recovery on the sensitive, lower-is-better per-row metrics: KL(base ‖ variant) per token
//! on held-out text (eval task `kl`) and NLL per token of held-out instruction answers (eval
//! task `answer_nll`), one value per row or answer in each variant's `items.jsonl`.
//!
//! - Per variant: mean over rows, with a normal 95 % interval.
//! - Share of the pruning damage recovered: `1 − mean(v − base) ÷ mean(pruned − base)` over
//!   the rows all three scored (for KL the base's rows are 0), with a paired bootstrap 95 %
//!   interval (rows resampled, the same rows for every arm).
//! - Paired differences ([`super::pairs::comparison_pairs`]): `variant − reference` with a
//!   paired bootstrap interval and a paired-t p; negative = the variant is closer to the base.
//!   Where the interval includes 0 the two are not distinguishable.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::comparison_md::p_value;
use super::pairs::comparison_pairs;
use crate::stats::bootstrap::mean_difference_ci;
use crate::stats::{
    paired_bootstrap_ci, paired_t_test, standard_error, BootstrapCi, BootstrapConfig, Interval,
    PairedT,
};

/// A per-row metric the report reads from `items.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMetric {
    /// The eval task.
    pub task: &'static str,
    /// The item field holding the row's value.
    pub field: &'static str,
    /// Section title.
    pub title: &'static str,
    /// What the values are, for the legend.
    pub what: &'static str,
}

/// KL(base ‖ variant) per token on held-out text.
pub const KL: RowMetric = RowMetric {
    task: "kl",
    field: "kl",
    title: "KL to the base model",
    what: "KL(base ‖ variant) per token on held-out text (nats; eval task `kl`)",
};

/// NLL per answer token of held-out instruction answers.
pub const ANSWER_NLL: RowMetric = RowMetric {
    task: "answer_nll",
    field: "nll_per_token",
    title: "NLL of held-out instruction answers",
    what: "negative log-likelihood per answer token of held-out instruction answers given \
           their prompts (nats; eval task `answer_nll`)",
};

/// Every per-row metric, in report order.
pub const METRICS: [RowMetric; 2] = [KL, ANSWER_NLL];

/// Row index → the row's value.
pub type Rows = BTreeMap<u64, f64>;

/// The rows of `metric` in an `items.jsonl`; other tasks and unreadable lines are skipped.
pub fn rows_of(metric: RowMetric, items_jsonl: &str) -> Rows {
    items_jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("task").and_then(Value::as_str) == Some(metric.task))
        .filter_map(|v| {
            let x = v
                .get(metric.field)
                .and_then(Value::as_f64)
                .filter(|k| k.is_finite())?;
            Some((v.get("idx")?.as_u64()?, x))
        })
        .collect()
}

/// One variant's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantValue {
    pub variant: String,
    pub rows: usize,
    pub mean: f64,
    /// Normal 95 % interval (`None` below two rows).
    pub ci95: Option<Interval>,
    /// `1 − mean(v − base) ÷ mean(pruned − base)` with its paired bootstrap interval
    /// (fine-tuned and merged variants whose pruned model and base were evaluated).
    pub share_recovered: Option<BootstrapCi>,
}

/// `variant − reference` over shared rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub variant: String,
    pub reference: String,
    pub rows: usize,
    pub difference: BootstrapCi,
    pub paired_t: Option<PairedT>,
}

impl Difference {
    /// The ordering the interval supports, in words.
    pub fn verdict(&self) -> String {
        let ci = self.difference.ci95;
        if ci.spans_zero() {
            "not distinguishable".into()
        } else if ci.high < 0.0 {
            format!("{} closer to base", self.variant)
        } else {
            format!("{} closer to base", self.reference)
        }
    }
}

/// Everything the report shows about one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub task: &'static str,
    pub variants: Vec<VariantValue>,
    pub differences: Vec<Difference>,
}

/// The pruned model a variant starts from: `n6-sft` → `n6`, `w-mlp-75-sft` → `w-mlp-75`;
/// `None` for `base` and the pruned models themselves.
fn pruned_of(variant: &str) -> Option<&str> {
    pruneforge_api::plan::variant::split(variant)
        .and_then(|(shape, method)| (!method.is_empty()).then_some(shape))
}

/// `(v − base, pruned − base)` per row that all three scored.
fn gaps(v: &Rows, pruned: &Rows, base: &Rows) -> (Vec<f64>, Vec<f64>) {
    v.iter()
        .filter_map(|(idx, x)| Some((x - base.get(idx)?, pruned.get(idx)? - base.get(idx)?)))
        .unzip()
}

/// Means, shares recovered and paired differences of one metric, from each variant's rows.
pub fn analyse(
    metric: RowMetric,
    rows: &BTreeMap<String, Rows>,
    config: BootstrapConfig,
) -> Analysis {
    let mut out = Analysis {
        task: metric.task,
        variants: Vec::new(),
        differences: Vec::new(),
    };
    for (variant, values) in rows {
        if values.is_empty() {
            continue;
        }
        let v: Vec<f64> = values.values().copied().collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let share_recovered = pruned_of(variant)
            .and_then(|p| Some((rows.get(p)?, rows.get("base")?)))
            .and_then(|(pruned, base)| {
                let (a, b) = gaps(values, pruned, base);
                // A share of a pruning damage the data cannot tell from 0 is meaningless.
                let damage = mean_difference_ci(&b, &vec![0.0; b.len()], config).ok()?;
                if damage.ci95.spans_zero() {
                    tracing::info!(
                        variant,
                        "pruning damage not distinguishable from 0; no share"
                    );
                    return None;
                }
                paired_bootstrap_ci(&a, &b, config, |ma, mb| 1.0 - ma / mb)
                    .map_err(|e| tracing::info!(variant, error = %e, "no recovery share"))
                    .ok()
            });
        out.variants.push(VariantValue {
            variant: variant.clone(),
            rows: v.len(),
            mean,
            ci95: standard_error(&v)
                .ok()
                .map(|se| Interval::normal_95(mean, se)),
            share_recovered,
        });
    }
    let names: Vec<String> = rows.keys().filter(|v| *v != "base").cloned().collect();
    for p in comparison_pairs(&names) {
        let (Some(a), Some(b)) = (rows.get(&p.variant), rows.get(&p.reference)) else {
            continue;
        };
        let (a, b): (Vec<f64>, Vec<f64>) = a
            .iter()
            .filter_map(|(idx, x)| Some((*x, *b.get(idx)?)))
            .unzip();
        let Ok(difference) = paired_bootstrap_ci(&a, &b, config, |ma, mb| ma - mb) else {
            continue;
        };
        out.differences.push(Difference {
            rows: a.len(),
            paired_t: paired_t_test(&a, &b).ok(),
            variant: p.variant,
            reference: p.reference,
            difference,
        });
    }
    out
}

/// What the tables mean, printed above them.
pub fn legend(metric: RowMetric) -> String {
    format!(
        "Per row: {}; lower = closer to the base model. Mean over rows (each row weighted \
         equally; eval.json weights by tokens, so its value can differ) with a normal 95 % CI. \
         Share recovered = 1 − mean(variant − base) ÷ mean(pruned − base) over the same rows, \
         with a paired-bootstrap 95 % CI (1 = back at the base, 0 = no better than the pruned \
         model; left out where the pruning damage's own CI includes 0). Δ = variant − reference over the rows both scored, paired-bootstrap 95 % CI and \
         paired-t p; where the CI includes 0 the two are not distinguishable.",
        metric.what
    )
}

fn interval(i: &Interval, digits: usize) -> String {
    format!("[{:.digits$}, {:.digits$}]", i.low, i.high)
}

/// The metric's tables (Markdown); empty when no variant has rows.
pub fn analysis_md(a: &Analysis) -> String {
    if a.variants.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| variant | rows | mean | 95% CI | share of the pruning damage recovered [95% CI] |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for v in &a.variants {
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {} | {} |",
            v.variant,
            v.rows,
            v.mean,
            v.ci95.map(|i| interval(&i, 4)).unwrap_or_default(),
            v.share_recovered
                .map(|r| format!("{:.3} {}", r.estimate, interval(&r.ci95, 3)))
                .unwrap_or_default(),
        );
    }
    if !a.differences.is_empty() {
        s.push_str(
            "\n| variant | reference | rows | Δ [95% CI] | paired-t p | verdict |\n\
             |---|---|---:|---:|---:|---|\n",
        );
        for d in &a.differences {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:+.4} [{:+.4}, {:+.4}] | {} | {} |",
                d.variant,
                d.reference,
                d.rows,
                d.difference.estimate,
                d.difference.ci95.low,
                d.difference.ci95.high,
                d.paired_t.map(|t| p_value(t.p_value)).unwrap_or_default(),
                d.verdict(),
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(values: &[f64]) -> Rows {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, *v))
            .collect()
    }

    #[test]
    fn items_give_the_metric_rows_only() {
        let text = "{\"task\":\"kl\",\"idx\":3,\"kl\":0.25}\n\
                    {\"task\":\"perplexity\",\"idx\":3,\"nll\":1.0}\n\
                    not json\n\
                    {\"task\":\"answer_nll\",\"idx\":4,\"nll_per_token\":2.0}\n\
                    {\"task\":\"kl\",\"idx\":5,\"kl\":0.5}\n";
        assert_eq!(rows_of(KL, text), BTreeMap::from([(3, 0.25), (5, 0.5)]));
        assert_eq!(rows_of(ANSWER_NLL, text), BTreeMap::from([(4, 2.0)]));
    }

    #[test]
    fn shares_and_differences_follow_the_definitions() {
        let mut all = BTreeMap::new();
        all.insert("base".to_string(), rows(&[0.0; 6]));
        all.insert("n6".to_string(), rows(&[1.0, 1.2, 0.8, 1.1, 0.9, 1.0]));
        all.insert(
            "n6-sft".to_string(),
            rows(&[0.5, 0.6, 0.4, 0.55, 0.45, 0.5]),
        );
        all.insert(
            "n6-self-distill".to_string(),
            rows(&[0.51, 0.6, 0.41, 0.54, 0.45, 0.49]),
        );
        let a = analyse(KL, &all, BootstrapConfig::default());
        let sft = a
            .variants
            .iter()
            .find(|v| v.variant == "n6-sft")
            .expect("sft");
        assert!((sft.mean - 0.5).abs() < 1e-12);
        let share = sft.share_recovered.expect("share");
        assert!((share.estimate - 0.5).abs() < 1e-12, "{share:?}");
        assert!(share.ci95.low > 0.4 && share.ci95.high < 0.6);
        let base = a
            .variants
            .iter()
            .find(|v| v.variant == "base")
            .expect("base");
        assert!(base.share_recovered.is_none());
        let d = a
            .differences
            .iter()
            .find(|d| d.variant == "n6-sft" && d.reference == "n6")
            .expect("sft vs pruned");
        assert!((d.difference.estimate + 0.5).abs() < 1e-12);
        assert_eq!(d.verdict(), "n6-sft closer to base");
        let sd = a
            .differences
            .iter()
            .find(|d| d.variant == "n6-self-distill" && d.reference == "n6-sft")
            .expect("self-distill vs sft");
        assert_eq!(sd.verdict(), "not distinguishable");
        let md = analysis_md(&a);
        assert!(md.contains("| n6-sft | 6 | 0.5000 |"), "{md}");
        assert!(md.contains("not distinguishable"), "{md}");
    }

    #[test]
    fn share_is_measured_from_the_base_level() {
        // NLL: base 2, pruned 3, variant 2.25 on every row → 75 % of the damage recovered.
        let mut all = BTreeMap::new();
        all.insert("base".to_string(), rows(&[2.0, 1.0, 3.0]));
        all.insert("n6".to_string(), rows(&[3.0, 2.0, 4.0]));
        all.insert("n6-sft".to_string(), rows(&[2.25, 1.25, 3.25]));
        let a = analyse(ANSWER_NLL, &all, BootstrapConfig::default());
        let sft = a
            .variants
            .iter()
            .find(|v| v.variant == "n6-sft")
            .expect("sft");
        let share = sft.share_recovered.expect("share");
        assert!((share.estimate - 0.75).abs() < 1e-12, "{share:?}");
        assert!((share.ci95.low - 0.75).abs() < 1e-12 && (share.ci95.high - 0.75).abs() < 1e-12);
    }
}
