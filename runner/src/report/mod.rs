//! The run report: a self-contained HTML page and a Markdown summary of a job's results —
//! the stage table, the layer-score heatmap, fine-tuning loss curves, recovery per task and
//! method, drift, paired comparisons of the variants (from each eval's `items.jsonl`) and the
//! speculative decoding table. Plots are inline SVG (no network).

pub mod comparison;
pub mod comparison_md;
pub mod describe;
pub mod dose_md;
pub mod normalized_md;
pub mod pairs;
pub mod preference_md;
pub mod row_recovery;
pub mod shapes_md;
pub mod svg;

pub use describe::describe;

use crate::eval::items::{parse_items, ItemTable};
use crate::eval::Recovery;
use crate::exec::artifacts;
use crate::exec::local::{RunReport, RunStatus, StageRun};
use crate::stats::BootstrapConfig;
use crate::util::fs::{write_atomic, write_json_atomic};
use comparison::{compare, Comparison};
use pruneforge_api::contract::StageSummary;
use pruneforge_api::spec::EvalTaskName;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Input(String),
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Reads `name` from a stage's artifact (small files only).
pub(crate) fn artifact_text(r: &StageRun, name: &str) -> Option<String> {
    let bytes = artifacts::read_file(&r.artifact_uri, name).ok()?;
    String::from_utf8(bytes).ok()
}

fn status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Cached => "cached",
        RunStatus::Ran => "ran",
        RunStatus::Failed => "FAILED",
        RunStatus::Skipped => "skipped",
    }
}

/// Everything the report shows, gathered from the run and the artifacts.
pub struct ReportData {
    pub run: RunReport,
    pub heatmaps: Vec<(String, String)>,
    pub loss_curves: Vec<(String, Vec<(f64, f64)>)>,
    /// Paired comparisons of the variants ([`pairs`]).
    pub comparisons: Vec<Comparison>,
    /// Each variant's recovery from its `eval.json` (normalized recovery with intervals).
    pub recoveries: BTreeMap<String, Recovery>,
    /// Tasks where the base is within 2 standard errors of chance (left out of averages).
    pub at_chance: Vec<String>,
    /// The per-row metrics (KL to the base, held-out answer NLL): per variant, shares
    /// recovered, paired differences; metrics no eval ran are left out.
    pub row_metrics: Vec<row_recovery::Analysis>,
    /// Training dose of the fine-tunes and distillations ([`dose_md`]).
    pub dose: dose_md::DoseReport,
    /// The DPO and SPIN stages ([`preference_md`]).
    pub preference: Vec<preference_md::PreferenceRow>,
}

/// Per-step losses from a finetune artifact's `finetune.json` (its `history`, or a
/// `loss_curve` / `steps` array, of objects with `step` and `loss`).
fn loss_curve(text: &str) -> Vec<(f64, f64)> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return vec![];
    };
    let arr = v
        .get("history")
        .or_else(|| v.get("loss_curve"))
        .or_else(|| v.get("steps"))
        .and_then(Value::as_array);
    arr.map(|a| {
        a.iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let loss = p.get("loss").and_then(Value::as_f64)?;
                let step = p
                    .get("step")
                    .and_then(Value::as_f64)
                    .unwrap_or((i + 1) as f64);
                Some((step, loss))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Items of every eval stage's `items.jsonl`, by variant.
fn eval_items(run: &RunReport) -> BTreeMap<String, ItemTable> {
    let mut out = BTreeMap::new();
    for s in &run.stages {
        if s.kind != "eval" || matches!(s.status, RunStatus::Failed | RunStatus::Skipped) {
            continue;
        }
        let Some(text) = artifact_text(s, crate::stages::eval::ITEMS_JSONL) else {
            tracing::info!(stage = %s.id, "no items.jsonl; no paired comparisons for it");
            continue;
        };
        let (items, skipped) = parse_items(&text);
        if skipped > 0 {
            tracing::warn!(stage = %s.id, skipped, "unreadable lines in items.jsonl");
        }
        out.insert(s.id.trim_start_matches("eval-").to_string(), items);
    }
    out
}

/// The rows of `metric` in every eval stage's `items.jsonl`, by variant.
fn eval_rows(
    run: &RunReport,
    metric: row_recovery::RowMetric,
) -> BTreeMap<String, row_recovery::Rows> {
    run.stages
        .iter()
        .filter(|s| s.kind == "eval" && !matches!(s.status, RunStatus::Failed | RunStatus::Skipped))
        .filter_map(|s| {
            let text = artifact_text(s, crate::stages::eval::ITEMS_JSONL)?;
            let rows = row_recovery::rows_of(metric, &text);
            (!rows.is_empty()).then(|| (s.id.trim_start_matches("eval-").to_string(), rows))
        })
        .collect()
}

/// Each eval stage's `eval.json`, by variant.
fn eval_docs(run: &RunReport) -> BTreeMap<String, Value> {
    run.stages
        .iter()
        .filter(|s| s.kind == "eval" && !matches!(s.status, RunStatus::Failed | RunStatus::Skipped))
        .filter_map(|s| {
            let text = artifact_text(s, crate::stages::eval::EVAL_JSON)?;
            let doc = serde_json::from_str::<Value>(&text).ok()?;
            Some((s.id.trim_start_matches("eval-").to_string(), doc))
        })
        .collect()
}

/// The tasks the base is at chance on: the base's `summary.excluded_at_chance`, else those the
/// variants' recoveries left out.
fn base_at_chance(
    docs: &BTreeMap<String, Value>,
    recoveries: &BTreeMap<String, Recovery>,
) -> Vec<String> {
    let from_base: Option<Vec<String>> = docs
        .get("base")
        .and_then(|d| d.pointer("/summary/excluded_at_chance"))
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let mut tasks = from_base.unwrap_or_else(|| {
        recoveries
            .values()
            .flat_map(|r| r.excluded_at_chance.iter().cloned())
            .collect()
    });
    tasks.sort();
    tasks.dedup();
    tasks
}

/// Paired comparisons of the variants with items ([`pairs::comparison_pairs`]).
pub fn comparisons(
    items: &BTreeMap<String, ItemTable>,
    config: BootstrapConfig,
) -> Vec<Comparison> {
    let variants: Vec<String> = items.keys().cloned().collect();
    pairs::comparison_pairs(&variants)
        .into_iter()
        .filter_map(|p| {
            let tasks = compare(items.get(&p.variant)?, items.get(&p.reference)?, config);
            Some(Comparison {
                variant: p.variant,
                reference: p.reference,
                tasks,
            })
        })
        .collect()
}

pub fn gather(run: RunReport) -> ReportData {
    let mut heatmaps = Vec::new();
    let mut loss_curves = Vec::new();
    let comparisons = comparisons(&eval_items(&run), BootstrapConfig::default());
    let row_metrics: Vec<row_recovery::Analysis> = row_recovery::METRICS
        .into_iter()
        .map(|m| row_recovery::analyse(m, &eval_rows(&run, m), BootstrapConfig::default()))
        .filter(|a| !a.variants.is_empty())
        .collect();
    let docs = eval_docs(&run);
    let recoveries: BTreeMap<String, Recovery> = docs
        .iter()
        .filter_map(|(v, d)| {
            Some((
                v.clone(),
                serde_json::from_value(d.get("recovery")?.clone()).ok()?,
            ))
        })
        .collect();
    let at_chance = base_at_chance(&docs, &recoveries);
    let dose = dose_md::gather(&run);
    let preference = preference_md::gather(&run);
    for s in &run.stages {
        if matches!(s.status, RunStatus::Failed | RunStatus::Skipped) {
            continue;
        }
        match s.kind.as_str() {
            "score" => {
                if let Some(svg) = artifact_text(s, "heatmap.svg") {
                    heatmaps.push((s.id.clone(), svg));
                }
            }
            "finetune" | "prefer" => {
                let file = format!("{}.json", s.kind);
                if let Some(t) = artifact_text(s, &file) {
                    let c = loss_curve(&t);
                    if !c.is_empty() {
                        let prefix = format!("{}-", s.kind);
                        loss_curves.push((s.id.trim_start_matches(&prefix).to_string(), c));
                    }
                }
            }
            _ => {}
        }
    }
    ReportData {
        run,
        heatmaps,
        loss_curves,
        comparisons,
        recoveries,
        at_chance,
        row_metrics,
        dose,
        preference,
    }
}

/// Eval results: variant → task → (metric, value).
fn evals(run: &RunReport) -> BTreeMap<String, BTreeMap<String, (String, f64)>> {
    let mut out = BTreeMap::new();
    for s in &run.stages {
        if let Some(StageSummary::Eval(e)) = &s.summary {
            let v = s.id.trim_start_matches("eval-").to_string();
            let tasks = e
                .tasks
                .iter()
                .map(|t| (t.task.clone(), (t.metric.clone(), t.value)))
                .collect();
            out.insert(v, tasks);
        }
    }
    out
}

/// Rows of the recovery table: variant name and one value per column.
pub type RecoveryRows = Vec<(String, Vec<Option<f64>>)>;

/// Recovery (variant ÷ base × 100) per task and for the average of the accuracy tasks,
/// leaving out of the average the tasks in `at_chance` (the base is at chance on them).
pub fn recovery_table(run: &RunReport, at_chance: &[String]) -> (Vec<String>, RecoveryRows) {
    let e = evals(run);
    let Some(base) = e.get("base") else {
        return (vec![], vec![]);
    };
    // Lower-is-better tasks (perplexity) have no place in a recovery average.
    let mut tasks: Vec<String> = base
        .keys()
        .filter(|t| {
            t.parse::<EvalTaskName>()
                .map_or(true, EvalTaskName::higher_is_better)
        })
        .cloned()
        .collect();
    tasks.push("average".into());
    let mut series = Vec::new();
    for (variant, res) in &e {
        if variant == "base" {
            continue;
        }
        let mut vals = Vec::new();
        let (mut sum_v, mut sum_b, mut n) = (0.0, 0.0, 0);
        for t in &tasks[..tasks.len() - 1] {
            let r = match (res.get(t), base.get(t)) {
                (Some((_, v)), Some((_, b))) if *b > 0.0 => {
                    if !at_chance.contains(t) {
                        sum_v += v;
                        sum_b += b;
                        n += 1;
                    }
                    Some(100.0 * v / b)
                }
                _ => None,
            };
            vals.push(r);
        }
        vals.push((n > 0 && sum_b > 0.0).then(|| 100.0 * sum_v / sum_b));
        series.push((variant.clone(), vals));
    }
    (tasks, series)
}

fn stage_table_md(run: &RunReport) -> String {
    let mut s = String::from("| stage | status | seconds | result |\n|---|---|---:|---|\n");
    for r in &run.stages {
        let extra = r.message.clone().unwrap_or_else(|| describe(&r.summary));
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {} |",
            r.id,
            status(r.status),
            r.seconds,
            extra.replace('|', "\\|")
        );
    }
    s
}

fn eval_table_md(run: &RunReport) -> String {
    let e = evals(run);
    if e.is_empty() {
        return String::new();
    }
    let tasks: Vec<String> = e
        .values()
        .flat_map(|m| m.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut s = format!(
        "| variant | {} |\n|---|{}\n",
        tasks.join(" | "),
        "---:|".repeat(tasks.len())
    );
    for (v, res) in &e {
        let cells: Vec<String> = tasks
            .iter()
            .map(|t| {
                res.get(t)
                    .map(|(m, x)| format!("{x:.4} ({m})"))
                    .unwrap_or_default()
            })
            .collect();
        let _ = writeln!(s, "| {v} | {} |", cells.join(" | "));
    }
    s
}

/// The line saying which tasks the averages leave out (empty when none).
fn at_chance_note(at_chance: &[String]) -> String {
    if at_chance.is_empty() {
        return String::new();
    }
    format!(
        "The average leaves out {}: the base model is within 2 standard errors of chance there.\n\n",
        at_chance.join(", ")
    )
}

fn recovery_md(run: &RunReport, at_chance: &[String]) -> String {
    let (tasks, series) = recovery_table(run, at_chance);
    if series.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "| variant | {} |\n|---|{}\n",
        tasks.join(" | "),
        "---:|".repeat(tasks.len())
    );
    for (v, vals) in &series {
        let cells: Vec<String> = vals
            .iter()
            .map(|x| x.map(|x| format!("{x:.1}%")).unwrap_or_default())
            .collect();
        let _ = writeln!(s, "| {v} | {} |", cells.join(" | "));
    }
    s
}

fn speculative_md(run: &RunReport) -> String {
    let mut s = String::new();
    for r in &run.stages {
        if let Some(StageSummary::Speculate(x)) = &r.summary {
            if s.is_empty() {
                s += "| stage | draft tokens | acceptance rate | accepted / step | speed-up |\n|---|---:|---:|---:|---:|\n";
            }
            let _ = writeln!(
                s,
                "| {} | {} | {:.1}% | {:.2} | {:.2}x |",
                r.id,
                x.draft_tokens,
                100.0 * x.acceptance_rate,
                x.mean_accepted_length,
                x.speedup
            );
        }
    }
    s
}

fn drift(run: &RunReport) -> Vec<(String, f64)> {
    run.stages
        .iter()
        .filter_map(|r| match &r.summary {
            Some(StageSummary::Eval(e)) => e
                .drift_cosine
                .map(|c| (r.id.trim_start_matches("eval-").to_string(), c)),
            _ => None,
        })
        .collect()
}

fn charts(d: &ReportData) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    let (tasks, series) = recovery_table(&d.run, &d.at_chance);
    if !series.is_empty() {
        out.push((
            "recovery",
            "Recovery per task and method".to_string(),
            svg::grouped_bars(
                "Recovery vs. the unpruned model (%)",
                &tasks,
                &series,
                "% of base",
                Some(100.0),
            ),
        ));
    }
    if !d.loss_curves.is_empty() {
        out.push((
            "loss",
            "Fine-tuning loss".to_string(),
            svg::lines(
                "Training loss per optimizer step",
                &d.loss_curves,
                "step",
                "loss",
            ),
        ));
    }
    let dr = drift(&d.run);
    if !dr.is_empty() {
        let cats: Vec<String> = dr.iter().map(|x| x.0.clone()).collect();
        let vals: Vec<Option<f64>> = dr.iter().map(|x| Some(x.1)).collect();
        out.push((
            "drift",
            "Drift (cosine similarity to the base model's responses)".to_string(),
            svg::grouped_bars(
                "Drift: mean cosine to base responses",
                &cats,
                &[("cosine".into(), vals)],
                "cosine",
                Some(1.0),
            ),
        ));
    }
    out
}

pub fn markdown(d: &ReportData, image_dir: Option<&str>) -> String {
    let run = &d.run;
    let mut s = format!(
        "# pruneforge report: {}\n\nArtifacts: `{}`; wall time {:.1}s.\n\n## Stages\n\n{}\n",
        run.job,
        run.storage,
        run.wall_s,
        stage_table_md(run)
    );
    if let Some(dir) = image_dir {
        for (i, (id, _)) in d.heatmaps.iter().enumerate() {
            let _ = writeln!(s, "## Layer scores ({id})\n\nBlock size × start; darker = more important.\n\n![heatmap]({dir}/heatmap-{i}.svg)\n");
        }
        for (name, title, _) in charts(d) {
            let _ = writeln!(s, "## {title}\n\n![{title}]({dir}/{name}.svg)\n");
        }
    }
    let shapes = shapes_md::shapes_md(run, &eval_docs(run));
    if !shapes.is_empty() {
        let _ = write!(s, "## Pruned models\n\n{}\n\n{shapes}\n", shapes_md::LEGEND);
    }
    let rec = recovery_md(run, &d.at_chance);
    if !rec.is_empty() {
        let _ = write!(
            s,
            "## Recovery (% of the base model)\n\n{}{rec}\n",
            at_chance_note(&d.at_chance)
        );
    }
    let norm = normalized_md::normalized_md(&d.recoveries, &d.at_chance);
    if !norm.is_empty() {
        let _ = write!(
            s,
            "## Normalized recovery\n\n{}\n\n{norm}\n",
            normalized_md::LEGEND
        );
    }
    for a in &d.row_metrics {
        let m = row_recovery::METRICS.into_iter().find(|m| m.task == a.task);
        if let Some(m) = m {
            let _ = write!(
                s,
                "## {}\n\n{}\n\n{}\n",
                m.title,
                row_recovery::legend(m),
                row_recovery::analysis_md(a)
            );
        }
    }
    let ev = eval_table_md(run);
    if !ev.is_empty() {
        let _ = write!(s, "## Evaluation\n\n{ev}\n");
    }
    let cmp = comparison_md::comparisons_md(&d.comparisons);
    if !cmp.is_empty() {
        let _ = write!(
            s,
            "## Paired comparisons\n\n{}\n\n{cmp}\n",
            comparison_md::LEGEND
        );
    }
    let dr = drift(run);
    if !dr.is_empty() {
        s += "## Drift\n\n| variant | mean cosine to base responses |\n|---|---:|\n";
        for (v, c) in dr {
            let _ = writeln!(s, "| {v} | {c:.4} |");
        }
        s.push('\n');
    }
    let sp = speculative_md(run);
    if !sp.is_empty() {
        let _ = write!(s, "## Speculative decoding\n\n{sp}\n");
    }
    let pref = preference_md::table(&d.preference);
    if !pref.is_empty() {
        let _ = write!(
            s,
            "## Preference stages\n\n{}\n\n{pref}\n",
            preference_md::LEGEND
        );
    }
    s += &dose_md::dose_md(&d.dose);
    s
}

fn md_table_to_html(md: &str) -> String {
    let mut rows = md
        .lines()
        .filter(|l| l.starts_with('|'))
        .collect::<Vec<_>>();
    if rows.len() < 2 {
        return String::new();
    }
    let head = rows.remove(0);
    rows.remove(0);
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split(" | ")
            .map(|c| esc(c.trim()).replace("\\|", "|"))
            .collect()
    };
    let mut h = String::from("<table><thead><tr>");
    for c in cells(head) {
        let _ = write!(h, "<th>{c}</th>");
    }
    h += "</tr></thead><tbody>";
    for r in rows {
        h += "<tr>";
        for c in cells(r) {
            let _ = write!(h, "<td>{c}</td>");
        }
        h += "</tr>";
    }
    h + "</tbody></table>"
}

pub fn html(d: &ReportData) -> String {
    let run = &d.run;
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pruneforge: {job}</title><style>\
body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}th{{background:#f3f3f3}}h2{{margin-top:1.6em}}</style></head><body>\
<h1>pruneforge report: {job}</h1><p>Artifacts: <code>{storage}</code>; wall time {wall:.1}s.</p><h2>Stages</h2>{stages}",
        job = esc(&run.job),
        storage = esc(&run.storage),
        wall = run.wall_s,
        stages = md_table_to_html(&stage_table_md(run))
    );
    for (id, svg) in &d.heatmaps {
        let _ = write!(s, "<h2>Layer scores ({})</h2><p>Block size × start; darker = more important (larger angular distance).</p>{svg}", esc(id));
    }
    for (_, title, svg) in charts(d) {
        let _ = write!(s, "<h2>{}</h2>{svg}", esc(&title));
    }
    let shapes = shapes_md::shapes_md(run, &eval_docs(run));
    if !shapes.is_empty() {
        let _ = write!(
            s,
            "<h2>Pruned models</h2><p>{}</p>{}",
            esc(shapes_md::LEGEND),
            md_table_to_html(&shapes)
        );
    }
    let rec = recovery_md(run, &d.at_chance);
    if !rec.is_empty() {
        let note = at_chance_note(&d.at_chance);
        let _ = write!(
            s,
            "<h2>Recovery (% of the base model)</h2>{}{}",
            if note.is_empty() {
                String::new()
            } else {
                format!("<p>{}</p>", esc(note.trim()))
            },
            md_table_to_html(&rec)
        );
    }
    let norm = normalized_md::normalized_md(&d.recoveries, &d.at_chance);
    if !norm.is_empty() {
        let _ = write!(
            s,
            "<h2>Normalized recovery</h2><p>{}</p>{}",
            esc(normalized_md::LEGEND),
            md_table_to_html(&norm)
        );
    }
    for a in &d.row_metrics {
        let m = row_recovery::METRICS.into_iter().find(|m| m.task == a.task);
        if let Some(m) = m {
            let _ = write!(
                s,
                "<h2>{}</h2><p>{}</p>{}",
                esc(m.title),
                esc(&row_recovery::legend(m)),
                row_recovery::analysis_md(a)
                    .split("\n\n")
                    .map(md_table_to_html)
                    .collect::<String>()
            );
        }
    }
    let ev = eval_table_md(run);
    if !ev.is_empty() {
        let _ = write!(s, "<h2>Evaluation</h2>{}", md_table_to_html(&ev));
    }
    let cmp = comparison_md::comparisons_md(&d.comparisons);
    if !cmp.is_empty() {
        let _ = write!(
            s,
            "<h2>Paired comparisons</h2><p>{}</p>{}",
            esc(comparison_md::LEGEND),
            md_table_to_html(&cmp)
        );
    }
    let sp = speculative_md(run);
    if !sp.is_empty() {
        let _ = write!(s, "<h2>Speculative decoding</h2>{}", md_table_to_html(&sp));
    }
    let pref = preference_md::table(&d.preference);
    if !pref.is_empty() {
        let _ = write!(
            s,
            "<h2>Preference stages</h2><p>{}</p>{}",
            esc(preference_md::LEGEND),
            md_table_to_html(&pref)
        );
    }
    s += &dose_md::dose_html(&d.dose, md_table_to_html, esc);
    s + "</body></html>\n"
}

/// Where a run's report goes: the storage root when local, else `./pruneforge-report-<job>`.
pub fn report_dir(run: &RunReport) -> PathBuf {
    match crate::storage::StorageUri::parse(&run.storage) {
        Ok(crate::storage::StorageUri::Local { root }) => root,
        _ => PathBuf::from(format!("pruneforge-report-{}", run.job)),
    }
}

/// Writes `report.html`, `report.md`, the chart SVGs and `runs/<job>.json` (the run record
/// `pruneforge report` reads back).
pub fn write_report(d: &ReportData, dir: &Path) -> Result<Vec<String>, ReportError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| ReportError::Io { path: p, source }
    };
    let img = dir.join("report-img");
    std::fs::create_dir_all(&img).map_err(io(&img))?;
    for (name, _, svg) in charts(d) {
        let p = img.join(format!("{name}.svg"));
        write_atomic(&p, svg.as_bytes()).map_err(io(&p))?;
    }
    for (i, (_, svg)) in d.heatmaps.iter().enumerate() {
        let p = img.join(format!("heatmap-{i}.svg"));
        write_atomic(&p, svg.as_bytes()).map_err(io(&p))?;
    }
    let html_path = dir.join("report.html");
    write_atomic(&html_path, html(d).as_bytes()).map_err(io(&html_path))?;
    let md_path = dir.join("report.md");
    write_atomic(&md_path, markdown(d, Some("report-img")).as_bytes()).map_err(io(&md_path))?;
    let rec = dir.join("runs").join(format!("{}.json", d.run.job));
    write_json_atomic(&rec, &d.run).map_err(io(&rec))?;
    Ok(vec![
        html_path.display().to_string(),
        md_path.display().to_string(),
    ])
}

pub fn write_for_run(run: &RunReport) -> Result<Vec<String>, ReportError> {
    let dir = report_dir(run);
    write_report(&gather(run.clone()), &dir)
}

/// `pruneforge report OUT_DIR`: re-renders from the run records under `OUT_DIR/runs/`.
pub fn write_from_dir(dir: &Path) -> Result<Vec<String>, ReportError> {
    let runs = dir.join("runs");
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&runs).map_err(|e| {
        ReportError::Input(format!(
            "{}: {e} (run `pruneforge run` first)",
            runs.display()
        ))
    })?;
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "json") {
            let text = std::fs::read_to_string(&p).map_err(|source| ReportError::Io {
                path: p.display().to_string(),
                source,
            })?;
            let run: RunReport = serde_json::from_str(&text)
                .map_err(|e| ReportError::Input(format!("{}: {e}", p.display())))?;
            out.extend(write_report(&gather(run), dir)?);
        }
    }
    if out.is_empty() {
        return Err(ReportError::Input(format!(
            "{}: no run records",
            runs.display()
        )));
    }
    Ok(out)
}
