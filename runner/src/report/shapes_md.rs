//! The "Pruned models" table: for every prune stage its layers, widths, parameters (also as a
//! share of the base) and the forward and decode speeds its evaluation measured, so depth, width and
//! combined variants of one size can be read side by side with their recovery.

use crate::exec::local::RunReport;
use pruneforge_api::contract::StageSummary;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

pub const LEGEND: &str = "Scored tokens/s: forward-pass throughput of the variant's own \
evaluation (`throughput.loglikelihood.forward_pass_tokens_per_s` in its eval.json); decode \
tokens/s: the eval's decode probe, 64 greedy tokens at batch 1 after the reference chat prompt, \
prefill excluded (`throughput.decode_probe`; evals from before the probe: their generation \
tasks, `throughput.generation`). Both on the machine that ran it and while it ran: compare \
variants of one run only, and measure speed with `pruneforge bench forward|generate --model DIR`.";

/// Forward tokens/s of an eval document, when it scored anything.
fn forward_speed(doc: &Value) -> Option<f64> {
    doc.pointer("/throughput/loglikelihood/forward_pass_tokens_per_s")?
        .as_f64()
        .filter(|v| *v > 0.0)
}

/// Decode tokens/s of an eval document: its decode probe (the same generation for every
/// variant), else its generation tasks, when it generated anything.
fn decode_speed(doc: &Value) -> Option<f64> {
    if let Some(v) = doc
        .pointer("/throughput/decode_probe/decode_tokens_per_s")
        .and_then(Value::as_f64)
        .filter(|v| *v > 0.0)
    {
        return Some(v);
    }
    let generation = doc.pointer("/throughput/generation")?;
    let tokens = generation.get("generated_tokens")?.as_f64()?;
    let seconds = generation.get("decode_s")?.as_f64()?;
    (tokens > 0.0 && seconds > 0.0).then(|| tokens / seconds)
}

/// The table, or "" when the run pruned nothing. `evals`: variant → eval.json.
pub fn shapes_md(run: &RunReport, evals: &BTreeMap<String, Value>) -> String {
    let speed = |variant: &str| {
        let cell = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.0}"));
        let doc = evals.get(variant);
        format!(
            "{} | {}",
            cell(doc.and_then(forward_speed)),
            cell(doc.and_then(decode_speed))
        )
    };
    let mut rows = String::new();
    let mut base: Option<(u32, u64)> = None;
    for s in &run.stages {
        let Some(StageSummary::Prune(p)) = &s.summary else {
            continue;
        };
        base.get_or_insert((p.layers_before, p.parameters_before));
        let variant = s.id.trim_start_matches("prune-");
        let share = 100.0 * p.parameters_after as f64 / p.parameters_before.max(1) as f64;
        let _ = writeln!(
            rows,
            "| {variant} | {} | {} | {:.1}M | {share:.1}% | {} |",
            p.layers_after,
            p.width.as_deref().unwrap_or("unchanged"),
            p.parameters_after as f64 / 1e6,
            speed(variant),
        );
    }
    let Some((layers, params)) = base else {
        return String::new();
    };
    format!(
        "| model | layers | width | parameters | of base | scored tokens/s | decode tokens/s |\n\
         |---|---:|---|---:|---:|---:|---:|\n\
         | base | {layers} | unchanged | {:.1}M | 100.0% | {} |\n{rows}",
        params as f64 / 1e6,
        speed("base"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::local::{RunStatus, StageRun};
    use pruneforge_api::contract::PruneSummary;

    fn prune(id: &str, layers: u32, params: u64, width: Option<&str>) -> StageRun {
        StageRun {
            id: id.into(),
            kind: "prune".into(),
            status: RunStatus::Ran,
            summary: Some(StageSummary::Prune(PruneSummary {
                block_size: 30 - layers,
                start: 13,
                end: 13,
                layers_before: 30,
                layers_after: layers,
                parameters_before: 134_515_008,
                parameters_after: params,
                width: width.map(str::to_string),
            })),
            key: String::new(),
            seconds: 1.0,
            artifact_uri: String::new(),
            message: None,
        }
    }

    #[test]
    fn one_row_per_pruned_model_with_its_eval_speed() {
        let report = |stages| RunReport {
            job: "j".into(),
            storage: "file://x".into(),
            wall_s: 1.0,
            stages,
        };
        let run = report(vec![
            prune("prune-n6", 24, 113_274_432, None),
            prune(
                "prune-w-mlp",
                30,
                113_364_288,
                Some("intermediate 1536->1128"),
            ),
        ]);
        let speed = |v: f64| serde_json::json!({"throughput": {"loglikelihood": {"forward_pass_tokens_per_s": v}}});
        let mut base = speed(250.0);
        base["throughput"]["generation"] =
            serde_json::json!({"generated_tokens": 120, "decode_s": 2.0, "prefill_s": 1.0});
        let mut n6 = speed(300.4);
        n6["throughput"]["decode_probe"] = serde_json::json!({"decode_tokens_per_s": 15.8});
        n6["throughput"]["generation"] =
            serde_json::json!({"generated_tokens": 10, "decode_s": 1.0});
        let evals = BTreeMap::from([("base".to_string(), base), ("n6".to_string(), n6)]);
        let md = shapes_md(&run, &evals);
        assert!(
            md.contains("| base | 30 | unchanged | 134.5M | 100.0% | 250 | 60 |"),
            "{md}"
        );
        assert!(
            md.contains("| n6 | 24 | unchanged | 113.3M | 84.2% | 300 | 16 |"),
            "{md}"
        );
        assert!(
            md.contains("| w-mlp | 30 | intermediate 1536->1128 | 113.4M | 84.3% | — | — |"),
            "{md}"
        );
        assert_eq!(shapes_md(&report(Vec::new()), &evals), "");
    }
}
