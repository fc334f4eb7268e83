//! The report's "Preference stages" section: per DPO or SPIN stage (from its `prefer.json`)
//! the pairs it trained on, the loss and the implicit reward margin at the start and the end,
//! and for SPIN how many of the model's own answers repeated the data set's.

use std::fmt::Write;

use serde_json::Value;

use super::artifact_text;
use crate::exec::local::{RunReport, RunStatus};

/// What the table shows, printed above it.
pub const LEGEND: &str = "Reward of an answer = β·(log π(answer) − log π_ref(answer)), π_ref the \
model the stage started from; margin = reward(chosen) − reward(rejected); accuracy = share of \
pairs with a positive margin. First and last = means over the first and last 10 optimizer steps \
(each over that step's pairs, so they are training-set figures, not held-out ones). SPIN: chosen \
= the data set's answer, rejected = the model's own; identical = prompts where the two agree, \
left out.";

/// One preference stage.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceRow {
    pub variant: String,
    pub pairs: u64,
    /// SPIN: prompts answered and answers identical to the data set's.
    pub self_play: Option<(u64, u64)>,
    pub loss: (f64, f64),
    pub margin: (f64, f64),
    pub accuracy: (f64, f64),
    pub steps: u64,
}

/// Mean of `key` over the first or last 10 entries of `history`.
fn window(history: &[Value], key: &str, last: bool) -> f64 {
    let n = history.len().min(10);
    if n == 0 {
        return f64::NAN;
    }
    let part = if last {
        &history[history.len() - n..]
    } else {
        &history[..n]
    };
    part.iter()
        .filter_map(|h| h.get(key).and_then(Value::as_f64))
        .sum::<f64>()
        / n as f64
}

/// The row of one `prefer.json`.
pub fn row(variant: &str, text: &str) -> Option<PreferenceRow> {
    let v: Value = serde_json::from_str(text).ok()?;
    let history = v.get("history")?.as_array()?;
    let both = |key: &str| (window(history, key, false), window(history, key, true));
    let spin = v
        .get("self_play")
        .filter(|s| !s.is_null())
        .and_then(|s| Some((s.get("prompts")?.as_u64()?, s.get("identical")?.as_u64()?)));
    Some(PreferenceRow {
        variant: variant.to_string(),
        pairs: v.get("pairs")?.as_u64()?,
        self_play: spin,
        loss: both("loss"),
        margin: both("margin"),
        accuracy: both("accuracy"),
        steps: history.len() as u64,
    })
}

/// The rows of every finished `prefer` stage of the run.
pub fn gather(run: &RunReport) -> Vec<PreferenceRow> {
    run.stages
        .iter()
        .filter(|s| {
            s.kind == "prefer" && !matches!(s.status, RunStatus::Failed | RunStatus::Skipped)
        })
        .filter_map(|s| {
            row(
                s.id.trim_start_matches("prefer-"),
                &artifact_text(s, "prefer.json")?,
            )
        })
        .collect()
}

/// The table (Markdown), empty without rows.
pub fn table(rows: &[PreferenceRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| variant | pairs | SPIN prompts (identical) | steps | loss first → last | margin first → last | accuracy first → last |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let spin = r
            .self_play
            .map_or("—".to_string(), |(p, i)| format!("{p} ({i})"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.4} → {:.4} | {:+.4} → {:+.4} | {:.0} % → {:.0} % |",
            r.variant,
            r.pairs,
            spin,
            r.steps,
            r.loss.0,
            r.loss.1,
            r.margin.0,
            r.margin.1,
            r.accuracy.0 * 100.0,
            r.accuracy.1 * 100.0
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_prefer_json_windows() {
        let history: Vec<Value> = (0..12)
            .map(|i| {
                serde_json::json!({"step": i + 1, "loss": 0.7 - 0.01 * i as f64,
                    "margin": 0.02 * i as f64, "accuracy": if i < 2 { 0.5 } else { 1.0 }})
            })
            .collect();
        let text = serde_json::json!({"pairs": 60, "history": history,
            "self_play": {"prompts": 64, "identical": 4}})
        .to_string();
        let r = row("n6-self-distill-spin1", &text).unwrap();
        assert_eq!((r.pairs, r.steps, r.self_play), (60, 12, Some((64, 4))));
        assert!((r.loss.0 - (0.7 - 0.045)).abs() < 1e-12);
        assert!((r.margin.1 - 0.02 * 6.5).abs() < 1e-12);
        assert!((r.accuracy.0 - 0.9).abs() < 1e-12);
        let t = table(&[r]);
        assert!(
            t.contains("| n6-self-distill-spin1 | 60 | 64 (4) | 12 |"),
            "{t}"
        );
        assert!(row("x", "{}").is_none());
        assert!(table(&[]).is_empty());
    }
}
