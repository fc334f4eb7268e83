//! The report's table of paired comparisons (Markdown; the HTML page converts it).

use std::fmt::Write;

use super::comparison::{Comparison, TaskComparison, Verdict};
use crate::stats::BootstrapCi;

/// What the columns mean, printed above the table.
pub const LEGEND: &str = "Δ = variant − reference over the documents both scored (paired by \
document). Accuracy: mean item score with a paired-bootstrap 95 % CI and the exact McNemar p; \
log p(gold): mean difference of log p(gold | choices) with a paired-bootstrap 95 % CI and a \
paired-t p; MDE: the smallest accuracy difference this n detects at α = 0.05 with 80 % power. \
Where the accuracy CI includes 0 the two are not distinguishable.";

fn signed(x: f64) -> String {
    format!("{x:+.4}")
}

fn with_ci(d: &BootstrapCi) -> String {
    format!(
        "{} [{}, {}]",
        signed(d.estimate),
        signed(d.ci95.low),
        signed(d.ci95.high)
    )
}

/// A p-value: three decimals, or scientific below 0.001.
pub fn p_value(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

/// The verdict in words.
pub fn verdict(c: &Comparison, t: &TaskComparison) -> String {
    match t.verdict {
        Verdict::NotDistinguishable => "not distinguishable".to_string(),
        Verdict::VariantBetter => format!("{} better", c.variant),
        Verdict::ReferenceBetter => format!("{} better", c.reference),
    }
}

/// The comparison table; empty without comparisons.
pub fn comparisons_md(comparisons: &[Comparison]) -> String {
    if comparisons.iter().all(|c| c.tasks.is_empty()) {
        return String::new();
    }
    let mut s = String::from(
        "| variant | reference | task | n | Δ accuracy [95% CI] | McNemar p | \
         Δ log p(gold) [95% CI] | paired-t p | MDE | verdict |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for c in comparisons {
        for t in &c.tasks {
            let (logp, t_p) = match &t.log_prob {
                Some(l) => (with_ci(&l.difference), p_value(l.paired_t.p_value)),
                None => (String::new(), String::new()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.variant,
                c.reference,
                t.task,
                t.n,
                with_ci(&t.difference),
                t.mcnemar.map(|m| p_value(m.p_value)).unwrap_or_default(),
                logp,
                t_p,
                t.minimum_detectable_effect
                    .map(|m| format!("{m:.4}"))
                    .unwrap_or_default(),
                verdict(c, t),
            );
        }
    }
    s
}
