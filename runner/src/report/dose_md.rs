//! The report's "Training dose" section: how much each fine-tune trained (steps, sequences,
//! epochs, tokens) and how far it moved the weights (`‖ΔW‖ / ‖W‖`, from each `finetune.json`),
//! the cosine between the `ΔW` of the original-data and the self-distilled fine-tune of a block
//! size (from their adapter files), and per distillation the share of rewrites kept, the share
//! of answers that differ from the original and why the others fell back (`distill.json`).

use std::fmt::Write;

use serde_json::Value;

use super::artifact_text;
use crate::exec::artifacts;
use crate::exec::local::{RunReport, RunStatus, StageRun};
use crate::stages::distill::DistillSummary;
use crate::train::dose::{
    delta_cosine, projection_order, AdapterDelta, DeltaCosine, TrainingDose, WeightChange,
};
use crate::train::lora::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};

/// What the tables show, printed above them.
pub const LEGEND: &str = "Epochs = sequences trained on ÷ training records. ‖ΔW‖/‖W‖ = \
sqrt(Σ‖ΔW‖²_F) / sqrt(Σ‖W‖²_F) over the adapted modules (all, or one projection kind), \
ΔW = (α/r)·B·A, W the pruned model's weight. Cosine = ⟨ΔW₁, ΔW₂⟩_F / (‖ΔW₁‖ ‖ΔW₂‖) over all \
adapted modules: 1 = the two fine-tunes moved the weights the same way, 0 = unrelated \
directions. Differs = distilled answers not identical to the original (fallbacks and kept \
rewrites that repeat the original count as not differing).";

/// Method pairs whose `ΔW` are compared when a block size has both: (original data,
/// self-distilled data), by method slug.
pub const COMPARED_METHODS: [(&str, &str); 2] = [
    ("sft", "self-distill"),
    ("sft-logit-kd", "self-distill-logit-kd"),
];

/// One fine-tuned variant's dose; `None` where its `finetune.json` predates the field.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinetuneDose {
    /// `n6-sft`, …
    pub variant: String,
    pub steps: Option<u64>,
    pub sequences: Option<u64>,
    pub epochs: Option<f64>,
    pub answer_tokens: Option<u64>,
    pub input_tokens: Option<u64>,
    pub weight_change: Option<WeightChange>,
}

impl FinetuneDose {
    /// From the text of a `finetune.json`: its `dose`, else the steps and tokens of its
    /// `summary`. `None` for text that is not a JSON object.
    pub fn from_finetune_json(variant: &str, text: &str) -> Option<Self> {
        let doc: Value = serde_json::from_str(text).ok()?;
        doc.as_object()?;
        let dose = doc
            .get("dose")
            .and_then(|d| serde_json::from_value::<TrainingDose>(d.clone()).ok());
        Some(match dose {
            Some(d) => Self {
                variant: variant.to_string(),
                steps: Some(d.optimizer_steps),
                sequences: Some(d.sequences),
                epochs: Some(d.epochs),
                answer_tokens: Some(d.answer_tokens),
                input_tokens: Some(d.input_tokens),
                weight_change: d.weight_change,
            },
            None => Self {
                variant: variant.to_string(),
                steps: doc.pointer("/summary/steps").and_then(Value::as_u64),
                answer_tokens: doc.pointer("/summary/tokens").and_then(Value::as_u64),
                ..Self::default()
            },
        })
    }
}

/// The cosine between the `ΔW` of two fine-tunes of one block size.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodCosine {
    /// `n6`.
    pub block: String,
    /// Method slugs, e.g. `sft` and `self-distill`.
    pub first: String,
    pub second: String,
    pub cosine: DeltaCosine,
}

/// Everything the section shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DoseReport {
    pub finetunes: Vec<FinetuneDose>,
    pub cosines: Vec<MethodCosine>,
    /// Per distill stage (dataset name), its gathered `distill.json`.
    pub distills: Vec<(String, DistillSummary)>,
}

impl DoseReport {
    pub fn is_empty(&self) -> bool {
        self.finetunes.is_empty() && self.cosines.is_empty() && self.distills.is_empty()
    }
}

/// The adapter of a finetune stage's artifact.
fn adapter_of(stage: &StageRun) -> Result<AdapterDelta, String> {
    let read = |name: &str| {
        artifacts::read_file(&stage.artifact_uri, name).map_err(|e| format!("{name}: {e}"))
    };
    let config = String::from_utf8(read(ADAPTER_CONFIG)?)
        .map_err(|e| format!("{ADAPTER_CONFIG}: not UTF-8: {e}"))?;
    let weights = read(ADAPTER_WEIGHTS)?;
    AdapterDelta::from_peft(&config, &weights, &stage.artifact_uri).map_err(|e| e.to_string())
}

fn cosine_of(first: &StageRun, second: &StageRun) -> Result<DeltaCosine, String> {
    delta_cosine(&adapter_of(first)?, &adapter_of(second)?).map_err(|e| e.to_string())
}

/// Reads the section's inputs from the run's finetune and distill artifacts; what is missing
/// or unreadable is left out (logged).
pub fn gather(run: &RunReport) -> DoseReport {
    let mut report = DoseReport::default();
    let mut finetune_stages: Vec<(String, &StageRun)> = Vec::new();
    for s in &run.stages {
        if matches!(s.status, RunStatus::Failed | RunStatus::Skipped) {
            continue;
        }
        match s.kind.as_str() {
            "finetune" => {
                let variant = s.id.trim_start_matches("finetune-").to_string();
                match artifact_text(s, "finetune.json")
                    .and_then(|t| FinetuneDose::from_finetune_json(&variant, &t))
                {
                    Some(d) => report.finetunes.push(d),
                    None => tracing::info!(stage = %s.id, "no readable finetune.json; no dose"),
                }
                finetune_stages.push((variant, s));
            }
            "distill" => {
                let summary = artifact_text(s, "distill.json")
                    .and_then(|t| serde_json::from_str::<DistillSummary>(&t).ok());
                match summary {
                    Some(d) => report
                        .distills
                        .push((s.id.trim_start_matches("distill-").to_string(), d)),
                    None => tracing::info!(stage = %s.id, "no readable distill.json"),
                }
            }
            _ => {}
        }
    }
    let stage_of = |variant: &str| {
        finetune_stages
            .iter()
            .find(|(v, _)| v == variant)
            .map(|(_, s)| *s)
    };
    for (variant, first_stage) in &finetune_stages {
        for (first, second) in COMPARED_METHODS {
            let Some(block) = variant.strip_suffix(&format!("-{first}")) else {
                continue;
            };
            let Some(second_stage) = stage_of(&format!("{block}-{second}")) else {
                continue;
            };
            match cosine_of(first_stage, second_stage) {
                Ok(cosine) => report.cosines.push(MethodCosine {
                    block: block.to_string(),
                    first: first.to_string(),
                    second: second.to_string(),
                    cosine,
                }),
                Err(e) => tracing::warn!(
                    block, first, second, error = %e,
                    "cannot compare the fine-tunes' weight changes"
                ),
            }
        }
    }
    report
}

fn ratio(x: f64) -> String {
    format!("{x:.2e}")
}

fn opt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map(f).unwrap_or_else(|| "—".to_string())
}

fn share(count: usize, items: usize) -> String {
    if items == 0 {
        return count.to_string();
    }
    format!("{count} ({:.1}%)", 100.0 * count as f64 / items as f64)
}

/// Per fine-tuned variant: steps, sequences, epochs, tokens, `‖ΔW‖/‖W‖` overall and per
/// projection kind. Empty without fine-tunes.
pub fn finetune_table(d: &DoseReport) -> String {
    if d.finetunes.is_empty() {
        return String::new();
    }
    let projections = projection_order(
        d.finetunes
            .iter()
            .filter_map(|f| f.weight_change.as_ref())
            .flat_map(|c| c.per_projection.keys()),
    );
    let mut s = String::from(
        "| variant | steps | sequences | epochs | answer tokens | input tokens | ‖ΔW‖/‖W‖ |",
    );
    for p in &projections {
        let _ = write!(s, " {p} |");
    }
    let _ = writeln!(
        s,
        "\n|---|---:|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(projections.len())
    );
    for f in &d.finetunes {
        let change = f.weight_change.as_ref();
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.variant,
            opt(f.steps, |x| x.to_string()),
            opt(f.sequences, |x| x.to_string()),
            opt(f.epochs, |x| format!("{x:.2}")),
            opt(f.answer_tokens, |x| x.to_string()),
            opt(f.input_tokens, |x| x.to_string()),
            opt(change.map(|c| c.overall.ratio), ratio),
        );
        for p in &projections {
            let cell = opt(
                change
                    .and_then(|c| c.per_projection.get(p))
                    .map(|r| r.ratio),
                ratio,
            );
            let _ = write!(s, " {cell} |");
        }
        s.push('\n');
    }
    s
}

/// Per block size, the cosine of the compared fine-tunes' `ΔW`, overall and per projection
/// kind. Empty without pairs.
pub fn cosine_table(d: &DoseReport) -> String {
    if d.cosines.is_empty() {
        return String::new();
    }
    let projections = projection_order(
        d.cosines
            .iter()
            .flat_map(|c| c.cosine.per_projection.keys()),
    );
    let mut s = String::from("| block | compared | cosine of ΔW |");
    for p in &projections {
        let _ = write!(s, " {p} |");
    }
    let _ = writeln!(s, "\n|---|---|---:|{}", "---:|".repeat(projections.len()));
    let cos = |x: Option<f64>| opt(x, |c| format!("{c:.3}"));
    for c in &d.cosines {
        let _ = write!(
            s,
            "| {} | {} vs {} | {} |",
            c.block,
            c.first,
            c.second,
            cos(c.cosine.overall)
        );
        for p in &projections {
            let _ = write!(
                s,
                " {} |",
                cos(c.cosine.per_projection.get(p).copied().flatten())
            );
        }
        s.push('\n');
    }
    s
}

/// Per distillation: items, kept rewrites, answers that differ from the original, fallback
/// reasons. Empty without distillations.
pub fn distill_table(d: &DoseReport) -> String {
    if d.distills.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "| dataset | items | kept | differs from original | fallback reasons |\n\
         |---|---:|---:|---:|---|\n",
    );
    for (dataset, x) in &d.distills {
        let reasons = if x.fallback_reasons.is_empty() {
            "none".to_string()
        } else {
            x.fallback_reasons
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "| {dataset} | {} | {} | {} | {reasons} |",
            x.items,
            share(x.kept, x.items),
            opt(x.differing, |n| share(n, x.items)),
        );
    }
    s
}

/// The tables with their headings, in order.
fn tables(d: &DoseReport) -> Vec<(&'static str, String)> {
    [
        ("Fine-tunes", finetune_table(d)),
        ("Weight-change agreement", cosine_table(d)),
        ("Self-data distillation", distill_table(d)),
    ]
    .into_iter()
    .filter(|(_, t)| !t.is_empty())
    .collect()
}

/// The Markdown section (`## Training dose` and its tables); empty when there is nothing.
pub fn dose_md(d: &DoseReport) -> String {
    let tables = tables(d);
    if tables.is_empty() {
        return String::new();
    }
    let mut s = format!("## Training dose\n\n{LEGEND}\n\n");
    for (heading, table) in tables {
        let _ = write!(s, "### {heading}\n\n{table}\n");
    }
    s
}

/// The HTML section; `table_html` turns one Markdown table into HTML, `esc` escapes text.
pub fn dose_html(
    d: &DoseReport,
    table_html: fn(&str) -> String,
    esc: fn(&str) -> String,
) -> String {
    let tables = tables(d);
    if tables.is_empty() {
        return String::new();
    }
    let mut s = format!("<h2>Training dose</h2><p>{}</p>", esc(LEGEND));
    for (heading, table) in tables {
        let _ = write!(s, "<h3>{}</h3>{}", esc(heading), table_html(&table));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::dose::RelativeChange;
    use std::collections::BTreeMap;

    fn change(overall: f64, q: f64, down: f64) -> WeightChange {
        let rel = |ratio| RelativeChange {
            ratio,
            ..RelativeChange::default()
        };
        WeightChange {
            overall: rel(overall),
            per_projection: BTreeMap::from([
                ("down_proj".to_string(), rel(down)),
                ("q_proj".to_string(), rel(q)),
            ]),
            per_layer: BTreeMap::new(),
        }
    }

    fn hand_made() -> DoseReport {
        DoseReport {
            finetunes: vec![
                FinetuneDose {
                    variant: "n4-sft".into(),
                    steps: Some(32),
                    sequences: Some(128),
                    epochs: Some(2.0),
                    answer_tokens: Some(9000),
                    input_tokens: Some(15000),
                    weight_change: Some(change(0.00123, 0.002, 0.0005)),
                },
                FinetuneDose {
                    variant: "n4-self-distill".into(),
                    steps: Some(32),
                    answer_tokens: Some(8000),
                    ..FinetuneDose::default()
                },
            ],
            cosines: vec![MethodCosine {
                block: "n4".into(),
                first: "sft".into(),
                second: "self-distill".into(),
                cosine: DeltaCosine {
                    overall: Some(0.4213),
                    per_projection: BTreeMap::from([
                        ("q_proj".to_string(), Some(0.5)),
                        ("down_proj".to_string(), None),
                    ]),
                    shared_modules: 14,
                    unshared_modules: 0,
                },
            }],
            distills: vec![(
                "alpaca".into(),
                DistillSummary {
                    dataset: "alpaca".into(),
                    items: 64,
                    kept: 48,
                    fallback: 16,
                    fallback_reasons: BTreeMap::from([
                        ("truncated".to_string(), 10),
                        ("banned-phrase".to_string(), 6),
                    ]),
                    differing: Some(40),
                    ..DistillSummary::default()
                },
            )],
        }
    }

    #[test]
    fn section_renders_every_table_from_a_hand_made_input() {
        let md = dose_md(&hand_made());
        assert!(md.starts_with("## Training dose\n"), "{md}");
        assert!(
            md.contains(
                "| variant | steps | sequences | epochs | answer tokens | input tokens | \
                 ‖ΔW‖/‖W‖ | q_proj | down_proj |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| n4-sft | 32 | 128 | 2.00 | 9000 | 15000 | 1.23e-3 | 2.00e-3 | 5.00e-4 |"
            ),
            "{md}"
        );
        // An old finetune.json: what it has, dashes for the rest.
        assert!(
            md.contains("| n4-self-distill | 32 | — | — | 8000 | — | — | — | — |"),
            "{md}"
        );
        assert!(
            md.contains("| block | compared | cosine of ΔW | q_proj | down_proj |"),
            "{md}"
        );
        assert!(
            md.contains("| n4 | sft vs self-distill | 0.421 | 0.500 | — |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| alpaca | 64 | 48 (75.0%) | 40 (62.5%) | banned-phrase 6, truncated 10 |"
            ),
            "{md}"
        );
        let html = dose_html(
            &hand_made(),
            |t| format!("<table>{}</table>", t.lines().count()),
            |t| t.to_string(),
        );
        assert!(html.starts_with("<h2>Training dose</h2>"), "{html}");
        assert_eq!(html.matches("<table>").count(), 3, "{html}");
        assert_eq!(dose_md(&DoseReport::default()), "");
    }

    #[test]
    fn finetune_json_with_and_without_a_dose() {
        let with = serde_json::json!({
            "summary": {"steps": 8, "tokens": 100},
            "dose": {"optimizer_steps": 8, "sequences": 32, "training_records": 16,
                     "epochs": 2.0, "answer_tokens": 100, "input_tokens": 300,
                     "weight_change": {"overall": {"ratio": 0.01}}}
        });
        let d = FinetuneDose::from_finetune_json("n2-sft", &with.to_string()).expect("dose");
        assert_eq!(
            (d.steps, d.sequences, d.epochs),
            (Some(8), Some(32), Some(2.0))
        );
        assert_eq!(d.weight_change.map(|c| c.overall.ratio), Some(0.01));
        let old = serde_json::json!({"summary": {"steps": 8, "tokens": 100}});
        let d = FinetuneDose::from_finetune_json("n2-sft", &old.to_string()).expect("dose");
        assert_eq!(
            (d.steps, d.answer_tokens, d.sequences),
            (Some(8), Some(100), None)
        );
        assert!(FinetuneDose::from_finetune_json("n2-sft", "[1]").is_none());
    }
}
