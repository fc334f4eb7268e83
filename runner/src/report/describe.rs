//! One-line descriptions of stage results (CLI table and report).

use pruneforge_api::contract::StageSummary;

/// A short human description of a stage's result.
pub fn describe(summary: &Option<StageSummary>) -> String {
    match summary {
        None => String::new(),
        Some(StageSummary::Import(s)) => format!(
            "{} layers, {:.1}M params",
            s.layers,
            s.parameters as f64 / 1e6
        ),
        Some(StageSummary::Score(s)) => s
            .best
            .iter()
            .map(|b| format!("n{}: {}-{} ({:.4})", b.block_size, b.start, b.end, b.score))
            .collect::<Vec<_>>()
            .join(", "),
        Some(StageSummary::Prune(s)) => format!(
            "removed {}-{}: {} → {} layers, {:.1}M → {:.1}M params",
            s.start,
            s.end,
            s.layers_before,
            s.layers_after,
            s.parameters_before as f64 / 1e6,
            s.parameters_after as f64 / 1e6
        ),
        Some(StageSummary::Distill(s)) => format!(
            "{} items, kept {} ({:.1}%)",
            s.items,
            s.kept,
            100.0 * s.kept_rate
        ),
        Some(StageSummary::Finetune(s)) => format!(
            "{} steps, {} tokens, final loss {:.4}",
            s.steps, s.tokens, s.final_loss
        ),
        Some(StageSummary::Merge(s)) => {
            format!("{} tensors, {} lerp fallbacks", s.tensors, s.fallback_count)
        }
        Some(StageSummary::Eval(s)) => {
            let mut d = s
                .average
                .map(|a| format!("avg {:.4}", a))
                .unwrap_or_default();
            if let Some(r) = s.recovery {
                d.push_str(&format!(", recovery {r:.1}%"));
            }
            if let Some(c) = s.drift_cosine {
                d.push_str(&format!(", drift cos {c:.3}"));
            }
            d
        }
        Some(StageSummary::Speculate(s)) => format!(
            "acceptance {:.1}%, {:.2} accepted/step, speed-up {:.2}x",
            100.0 * s.acceptance_rate,
            s.mean_accepted_length,
            s.speedup
        ),
    }
}
