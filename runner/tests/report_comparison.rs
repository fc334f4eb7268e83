//! Paired comparisons in the report from two synthetic items.jsonl files: the numbers (accuracy
//! difference, exact McNemar p, log p(gold) paired t, minimum detectable effect) and the
//! wording ("n4-sft better", "not distinguishable").

use std::collections::BTreeMap;
use std::path::Path;

use pruneforge::eval::items::parse_items;
use pruneforge::eval::Recovery;
use pruneforge::exec::local::{RunReport, RunStatus, StageRun};
use pruneforge::report::comparison::Verdict;
use pruneforge::report::{comparisons, html, markdown, ReportData};
use pruneforge::stats::BootstrapConfig;
use pruneforge_api::contract::{EvalSummary, StageSummary, TaskScore};
use serde_json::json;

/// One items.jsonl line of a multiple-choice task.
fn line(task: &str, idx: usize, correct: bool, logp_gold: f64) -> String {
    json!({
        "task": task,
        "idx": idx,
        "gold": 0,
        "lls": [-1.0, -2.0],
        "correct": correct,
        "score": f64::from(u8::from(correct)),
        "logp_gold": logp_gold,
    })
    .to_string()
}

/// arc_easy: the reference is right on documents 0..10, the variant on 0..30, so 20 discordant
/// pairs all favour the variant; log p(gold) rises by 0.1 or 0.3, alternately. piqa: two
/// discordant pairs each way and identical log p(gold). The variant has one extra document.
fn write_items(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (mut variant, mut reference) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let step = if i % 2 == 0 { 0.1 } else { 0.3 };
        reference.push(line("arc_easy", i, i < 10, -1.0));
        variant.push(line("arc_easy", i, i < 30, -1.0 + step));
        let (r, v) = match i {
            0 | 1 => (true, false),
            2 | 3 => (false, true),
            _ => (i % 3 == 0, i % 3 == 0),
        };
        reference.push(line("piqa", i, r, -0.5));
        variant.push(line("piqa", i, v, -0.5));
    }
    variant.push(line("piqa", 99, true, -0.5));
    let v = dir.join("n4-sft").join("items.jsonl");
    let r = dir.join("n4").join("items.jsonl");
    for (path, lines) in [(&v, &variant), (&r, &reference)] {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, lines.join("\n") + "\n").expect("write");
    }
    (v, r)
}

#[test]
fn comparison_of_two_items_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (v, r) = write_items(tmp.path());
    let mut items = BTreeMap::new();
    for (name, path) in [("n4-sft", &v), ("n4", &r)] {
        let (table, skipped) = parse_items(&std::fs::read_to_string(path).expect("read"));
        assert_eq!(skipped, 0);
        items.insert(name.to_string(), table);
    }
    let cfg = BootstrapConfig::default();
    let cmp = comparisons(&items, cfg);
    assert_eq!(cmp.len(), 1);
    assert_eq!(
        (cmp[0].variant.as_str(), cmp[0].reference.as_str()),
        ("n4-sft", "n4")
    );
    assert_eq!(cmp, comparisons(&items, cfg), "seeded: reproducible");

    let arc = &cmp[0].tasks[0];
    assert_eq!(
        (arc.task.as_str(), arc.n, arc.unpaired),
        ("arc_easy", 40, 0)
    );
    assert!((arc.variant_accuracy - 0.75).abs() < 1e-12);
    assert!((arc.reference_accuracy - 0.25).abs() < 1e-12);
    assert!((arc.difference.estimate - 0.5).abs() < 1e-12);
    assert!(arc.difference.ci95.low > 0.3 && arc.difference.ci95.high < 0.7);
    let m = arc.mcnemar.expect("mcnemar");
    assert_eq!((m.only_a, m.only_b), (20, 0));
    assert!((m.p_value - 2f64.powi(-19)).abs() < 1e-15);
    let lp = arc.log_prob.expect("log p(gold)");
    assert!((lp.difference.estimate - 0.2).abs() < 1e-12);
    assert!(lp.difference.ci95.low > 0.15 && lp.difference.ci95.high < 0.25);
    // Differences 0.1/0.3: sd = sqrt(40 · 0.01 / 39), t = 0.2 / (sd / sqrt(40)).
    let sd = (0.4f64 / 39.0).sqrt();
    assert!((lp.paired_t.t - 0.2 / (sd / 40f64.sqrt())).abs() < 1e-9);
    // t = 12.49 on 39 df: p = 3.308e-15 (numerical integration of the t density).
    let p = lp.paired_t.p_value;
    assert!((p / 3.3079e-15 - 1.0).abs() < 1e-3, "{p}");
    let mde = 2.801_585_218_112_968 * (10.0f64 / 39.0).sqrt() / 40f64.sqrt();
    assert!((arc.minimum_detectable_effect.expect("mde") - mde).abs() < 1e-12);
    assert_eq!(arc.verdict, Verdict::VariantBetter);

    let piqa = &cmp[0].tasks[1];
    assert_eq!((piqa.task.as_str(), piqa.n, piqa.unpaired), ("piqa", 40, 1));
    assert_eq!(piqa.difference.estimate, 0.0);
    assert!(piqa.difference.ci95.spans_zero());
    let m = piqa.mcnemar.expect("mcnemar");
    assert_eq!((m.only_a, m.only_b, m.p_value), (2, 2, 1.0));
    let lp = piqa.log_prob.expect("log p(gold)");
    assert_eq!((lp.paired_t.t, lp.paired_t.p_value), (0.0, 1.0));
    assert_eq!(piqa.verdict, Verdict::NotDistinguishable);

    // The base is at chance on piqa: the recovery average leaves it out and says so.
    let recovery: Recovery = serde_json::from_value(json!({
        "baseEval": "base/eval.json",
        "tasks": [
            {"task": "arc_easy", "metric": "acc_norm", "base": 0.75, "value": 0.5,
             "percent": 66.7, "chance": 0.25, "atChance": false, "normalized": 0.5,
             "normalizedPaired": {"n": 40, "chance": 0.25, "base": 0.75, "value": 0.5,
                                  "recovery": 0.5, "ci95": {"low": 0.2, "high": 0.8}}},
            {"task": "piqa", "metric": "acc_norm", "base": 0.52, "value": 0.5,
             "percent": 96.2, "chance": 0.5, "atChance": true, "normalized": 0.0}
        ],
        "baseAverage": 0.75, "average": 0.5, "averagePercent": 66.7,
        "averageNormalized": 0.5, "excludedAtChance": ["piqa"]
    }))
    .expect("recovery");
    let stage = |id: &str, arc: f64, piqa: f64| StageRun {
        id: id.into(),
        kind: "eval".into(),
        key: "k".into(),
        status: RunStatus::Ran,
        seconds: 1.0,
        artifact_uri: "file:///nonexistent/eval/".into(),
        summary: Some(StageSummary::Eval(EvalSummary {
            tasks: [("arc_easy", arc), ("piqa", piqa)]
                .map(|(task, value)| TaskScore {
                    task: task.into(),
                    metric: "acc_norm".into(),
                    value,
                    stderr: None,
                    items: None,
                })
                .to_vec(),
            average: None,
            recovery: None,
            drift_cosine: None,
        })),
        message: None,
    };
    let d = ReportData {
        run: RunReport {
            job: "job".into(),
            storage: tmp.path().display().to_string(),
            wall_s: 1.0,
            stages: vec![stage("eval-base", 0.8, 0.52), stage("eval-n4", 0.4, 0.39)],
        },
        heatmaps: vec![],
        loss_curves: vec![],
        comparisons: cmp,
        recoveries: BTreeMap::from([("n4".to_string(), recovery)]),
        at_chance: vec!["piqa".into()],
        row_metrics: vec![],
        dose: Default::default(),
        preference: vec![pruneforge::report::preference_md::PreferenceRow {
            variant: "n4-sft-spin1".into(),
            pairs: 30,
            self_play: Some((32, 2)),
            loss: (0.69, 0.41),
            margin: (0.0, 0.35),
            accuracy: (0.5, 0.9),
            steps: 8,
        }],
    };
    let md = markdown(&d, None);
    assert!(md.contains("## Preference stages"), "{md}");
    assert!(
        md.contains("| n4-sft-spin1 | 30 | 32 (2) | 8 | 0.6900 → 0.4100 | +0.0000 → +0.3500 | 50 % → 90 % |"),
        "{md}"
    );
    assert!(md.contains("## Paired comparisons"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| n4-sft |")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(
        rows[0].starts_with("| n4-sft | n4 | arc_easy | 40 | +0.5000 [")
            && rows[0].contains("| 1.9e-6 |")
            && rows[0].ends_with("| n4-sft better |"),
        "{}",
        rows[0]
    );
    assert!(
        rows[1].starts_with("| n4-sft | n4 | piqa | 40 | +0.0000 [")
            && rows[1].contains("| 1.000 |")
            && rows[1].ends_with("| not distinguishable |"),
        "{}",
        rows[1]
    );
    assert!(md.contains("The average leaves out piqa"), "{md}");
    // Recovery %: arc_easy 50 %, piqa 75 %, the average over arc_easy only (59.8 % with piqa).
    assert!(md.contains("| n4 | 50.0% | 75.0% | 50.0% |"), "{md}");
    assert!(md.contains("## Normalized recovery"), "{md}");
    assert!(
        md.contains("| n4 | 0.50 [0.20, 0.80] | 0.00 (base at chance) | 0.50 |"),
        "{md}"
    );
    let page = html(&d);
    assert!(page.contains("<h2>Paired comparisons</h2>") && page.contains("not distinguishable"));
}

/// The "Training dose" section gathered from finetune and distill artifacts on disk: rows from
/// each finetune.json (one with a dose block, one from before it), the cosine of the two
/// fine-tunes' ΔW from their adapter files, and the distillation's shares.
#[test]
fn training_dose_section_from_artifacts() {
    use pruneforge::report::gather;
    use pruneforge::train::tensor_io;

    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let stage = |id: &str, kind: &str| StageRun {
        id: id.into(),
        kind: kind.into(),
        key: "k".into(),
        status: RunStatus::Ran,
        seconds: 1.0,
        artifact_uri: format!("file://{}/{kind}/{id}/", root.display()),
        summary: None,
        message: None,
    };
    let dir = |id: &str, kind: &str| {
        let d = root.join(kind).join(id);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    // Rank-1 adapters on a 2×2 q_proj and v_proj of layer 0, scale alpha / r = 2:
    // sft: ΔW_q = 2·e1e1ᵀ, ΔW_v = 2·e2e2ᵀ; self-distill: 2·ΔW_q and −ΔW_v. Cosine per
    // projection 1 and −1, overall (2·4 − 4) / (sqrt(8) · sqrt(20)) = 1 / sqrt(10).
    let adapter = |d: &Path, q_sign: f32, v_sign: f32| {
        let p = |m: &str| format!("base_model.model.model.layers.0.self_attn.{m}");
        let tensors = vec![
            (
                format!("{}.lora_A.weight", p("q_proj")),
                vec![1, 2],
                vec![1.0, 0.0],
            ),
            (
                format!("{}.lora_B.weight", p("q_proj")),
                vec![2, 1],
                vec![q_sign, 0.0],
            ),
            (
                format!("{}.lora_A.weight", p("v_proj")),
                vec![1, 2],
                vec![0.0, 1.0],
            ),
            (
                format!("{}.lora_B.weight", p("v_proj")),
                vec![2, 1],
                vec![0.0, v_sign],
            ),
        ];
        tensor_io::write(&d.join("adapter_model.safetensors"), &tensors).expect("adapter");
        let cfg = json!({"r": 1, "lora_alpha": 2, "use_rslora": false, "peft_type": "LORA"});
        std::fs::write(d.join("adapter_config.json"), cfg.to_string()).expect("config");
    };
    let sft = dir("finetune-n4-sft", "finetune");
    adapter(&sft, 1.0, 1.0);
    let dose = json!({"optimizer_steps": 32, "sequences": 128, "training_records": 64,
        "epochs": 2.0, "answer_tokens": 9000, "input_tokens": 15000,
        "weight_change": {"overall": {"delta_norm": 1.0, "base_norm": 800.0, "ratio": 0.00125,
                                      "modules": 2},
                          "per_projection": {"q_proj": {"ratio": 0.002}, "v_proj": {"ratio": 0.0005}}}});
    let doc = json!({"summary": {"steps": 32, "tokens": 9000}, "dose": dose});
    std::fs::write(sft.join("finetune.json"), doc.to_string()).expect("finetune.json");
    let distilled = dir("finetune-n4-self-distill", "finetune");
    adapter(&distilled, 2.0, -1.0);
    let old_doc = json!({"summary": {"steps": 32, "tokens": 8000}});
    std::fs::write(distilled.join("finetune.json"), old_doc.to_string()).expect("finetune.json");
    let distill = dir("distill-alpaca", "distill");
    let summary = json!({"dataset": "alpaca", "items": 64, "kept": 48, "fallback": 16,
        "kept_rate": 0.75, "fallback_reasons": {"truncated": 10, "banned-phrase": 6},
        "differing": 40, "differing_rate": 0.625, "generated_tokens": 1000, "wall_s": 1.0,
        "tokens_per_s": 1000.0, "resumed_items": 0, "shards": 1});
    std::fs::write(distill.join("distill.json"), summary.to_string()).expect("distill.json");

    let d = gather(RunReport {
        job: "job".into(),
        storage: root.display().to_string(),
        wall_s: 1.0,
        stages: vec![
            stage("distill-alpaca", "distill"),
            stage("finetune-n4-sft", "finetune"),
            stage("finetune-n4-self-distill", "finetune"),
        ],
    });
    assert_eq!(d.dose.cosines.len(), 1, "{:?}", d.dose);
    let cos = &d.dose.cosines[0].cosine;
    assert!((cos.overall.expect("cosine") - 10f64.sqrt().recip()).abs() < 1e-9);
    let md = markdown(&d, None);
    assert!(md.contains("## Training dose"), "{md}");
    assert!(
        md.contains("| n4-sft | 32 | 128 | 2.00 | 9000 | 15000 | 1.25e-3 | 2.00e-3 | 5.00e-4 |"),
        "{md}"
    );
    assert!(
        md.contains("| n4-self-distill | 32 | — | — | 8000 | — | — | — | — |"),
        "{md}"
    );
    assert!(
        md.contains("| n4 | sft vs self-distill | 0.316 | 1.000 | -1.000 |"),
        "{md}"
    );
    assert!(
        md.contains("| alpaca | 64 | 48 (75.0%) | 40 (62.5%) | banned-phrase 6, truncated 10 |"),
        "{md}"
    );
    let page = html(&d);
    assert!(page.contains("<h2>Training dose</h2>") && page.contains("sft vs self-distill"));
}
