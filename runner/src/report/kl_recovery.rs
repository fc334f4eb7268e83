//! KL to the base model, per variant and paired: how far each variant's next-token
//! distributions are from the base's (the eval task `kl`, one value per held-out row in
//! `items.jsonl`), and how much of the pruning damage a fine-tune took back.
//!
//! - Per variant: mean over rows of the row's KL per token, with a normal 95 % interval.
//! - Share recovered: `1 − KL(variant) / KL(pruned)` over the rows both scored, with a paired
//!   bootstrap 95 % interval (rows resampled, the same rows for both).
//! - Paired differences ([`super::pairs::comparison_pairs`]): `KL(variant) − KL(reference)`
//!   with a paired bootstrap interval and a paired-t p; negative = the variant is closer to the
//!   base. Where the interval includes 0 the two are not distinguishable.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::comparison_md::p_value;
use super::pairs::comparison_pairs;
use crate::stats::{
    paired_bootstrap_ci, paired_t_test, standard_error, BootstrapCi, BootstrapConfig, Interval,
    PairedT,
};

/// The task whose items this reads.
pub const TASK: &str = "kl";

/// Row index → the row's KL per token.
pub type KlRows = BTreeMap<u64, f64>;

/// The `kl` rows of an `items.jsonl`; other tasks and unreadable lines are skipped.
pub fn kl_rows(items_jsonl: &str) -> KlRows {
    items_jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("task").and_then(Value::as_str) == Some(TASK))
        .filter_map(|v| {
            let kl = v.get("kl").and_then(Value::as_f64).filter(|k| k.is_finite())?;
            Some((v.get("idx")?.as_u64()?, kl))
        })
        .collect()
}

/// One variant's KL to the base.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantKl {
    pub variant: String,
    pub rows: usize,
    pub mean: f64,
    /// Normal 95 % interval (`None` below two rows).
    pub ci95: Option<Interval>,
    /// `1 − KL(variant) / KL(pruned)` with its paired bootstrap interval (fine-tuned and
    /// merged variants whose pruned model was evaluated).
    pub share_recovered: Option<BootstrapCi>,
}

/// `KL(variant) − KL(reference)` over shared rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KlDifference {
    pub variant: String,
    pub reference: String,
    pub rows: usize,
    pub difference: BootstrapCi,
    pub paired_t: Option<PairedT>,
}

impl KlDifference {
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

/// Everything the report shows about KL.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KlAnalysis {
    pub variants: Vec<VariantKl>,
    pub differences: Vec<KlDifference>,
}

/// The two variants' values on the rows both scored.
fn paired(a: &KlRows, b: &KlRows) -> (Vec<f64>, Vec<f64>) {
    a.iter()
        .filter_map(|(idx, va)| Some((*va, *b.get(idx)?)))
        .unzip()
}

/// The pruned model a variant starts from: `n6-sft` → `n6`; `None` for `base` and `n6`.
fn pruned_of(variant: &str) -> Option<&str> {
    let (prefix, method) = variant.split_once('-')?;
    (prefix.starts_with('n') && !method.is_empty()).then_some(prefix)
}

/// KL per variant, shares recovered and paired differences, from each variant's rows.
pub fn analyse(rows: &BTreeMap<String, KlRows>, config: BootstrapConfig) -> KlAnalysis {
    let mut out = KlAnalysis::default();
    for (variant, values) in rows {
        if values.is_empty() {
            continue;
        }
        let v: Vec<f64> = values.values().copied().collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let share_recovered = pruned_of(variant)
            .and_then(|p| rows.get(p))
            .and_then(|pruned| {
                let (a, b) = paired(values, pruned);
                paired_bootstrap_ci(&a, &b, config, |ma, mb| 1.0 - ma / mb)
                    .map_err(|e| tracing::info!(variant, error = %e, "no KL recovery share"))
                    .ok()
            });
        out.variants.push(VariantKl {
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
        let (a, b) = paired(a, b);
        let Ok(difference) = paired_bootstrap_ci(&a, &b, config, |ma, mb| ma - mb) else {
            continue;
        };
        out.differences.push(KlDifference {
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
pub const LEGEND: &str = "KL(base ‖ variant) per token on held-out text (nats; the eval task \
`kl`; lower = closer to the base model), mean over rows with a normal 95 % CI. Share recovered = \
1 − KL(variant) ÷ KL(pruned) over the same rows, with a paired-bootstrap 95 % CI. Δ = variant − \
reference over the rows both scored, paired-bootstrap 95 % CI and paired-t p; where the CI \
includes 0 the two are not distinguishable.";

fn interval(i: &Interval, digits: usize) -> String {
    format!("[{:.digits$}, {:.digits$}]", i.low, i.high)
}

/// The KL tables (Markdown); empty when no variant has KL rows.
pub fn kl_md(a: &KlAnalysis) -> String {
    if a.variants.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| variant | rows | KL/token | 95% CI | share of the pruning KL recovered [95% CI] |\n\
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
            "\n| variant | reference | rows | Δ KL/token [95% CI] | paired-t p | verdict |\n\
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

    fn rows(values: &[f64]) -> KlRows {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, *v))
            .collect()
    }

    #[test]
    fn items_give_the_kl_rows_only() {
        let text = "{\"task\":\"kl\",\"idx\":3,\"kl\":0.25}\n\
                    {\"task\":\"perplexity\",\"idx\":3,\"nll\":1.0}\n\
                    not json\n\
                    {\"task\":\"kl\",\"idx\":5,\"kl\":0.5}\n";
        assert_eq!(kl_rows(text), BTreeMap::from([(3, 0.25), (5, 0.5)]));
    }

    #[test]
    fn shares_and_differences_follow_the_definitions() {
        let mut all = BTreeMap::new();
        all.insert("base".to_string(), rows(&[0.0; 6]));
        all.insert("n6".to_string(), rows(&[1.0, 1.2, 0.8, 1.1, 0.9, 1.0]));
        all.insert("n6-sft".to_string(), rows(&[0.5, 0.6, 0.4, 0.55, 0.45, 0.5]));
        all.insert(
            "n6-self-distill".to_string(),
            rows(&[0.51, 0.6, 0.41, 0.54, 0.45, 0.49]),
        );
        let a = analyse(&all, BootstrapConfig::default());
        let sft = a.variants.iter().find(|v| v.variant == "n6-sft").expect("sft");
        assert!((sft.mean - 0.5).abs() < 1e-12);
        let share = sft.share_recovered.expect("share");
        assert!((share.estimate - 0.5).abs() < 1e-12, "{share:?}");
        assert!(share.ci95.low > 0.4 && share.ci95.high < 0.6);
        let base = a.variants.iter().find(|v| v.variant == "base").expect("base");
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
        let md = kl_md(&a);
        assert!(md.contains("| n6-sft | 6 | 0.5000 |"), "{md}");
        assert!(md.contains("not distinguishable"), "{md}");
    }
}
