//! The one-line description of a stage's result: the status `message` of a finished stage
//! (operator) and the result column of `pruneforge run` and its report (runner).

use super::summary::StageSummary;

impl StageSummary {
    /// One line, e.g. `kept 28/32 rewrites (87.5%)`.
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
            Self::Prune(s) => format!(
                "dropped layers {}-{}: {} -> {} layers, {} -> {} parameters",
                s.start,
                s.end,
                s.layers_before,
                s.layers_after,
                human_count(s.parameters_before),
                human_count(s.parameters_after)
            ),
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
            Self::Merge(s) => format!(
                "merged {} tensors ({} linear fallbacks)",
                s.tensors, s.fallback_count
            ),
            Self::Eval(s) => {
                let mut line = match s.average {
                    Some(avg) => format!("average {:.4} over {} tasks", avg, s.tasks.len()),
                    None => format!("{} tasks", s.tasks.len()),
                };
                if let Some(r) = s.recovery {
                    line.push_str(&format!(", recovery {r:.1}%"));
                }
                if let Some(c) = s.drift_cosine {
                    line.push_str(&format!(", drift cosine {c:.3}"));
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
