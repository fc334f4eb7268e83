//! The eval stage end to end on small slices of every task kind (multiple choice, few-shot
//! MMLU, TruthfulQA mc2, GSM8K generation, perplexity): eval.json in lm-eval's shape,
//! items.jsonl, recovery against a base eval, and clear errors for bad input.

mod common;

use std::path::PathBuf;

use common::*;
use pruneforge::eval::kl;
use pruneforge::resolve::Resolver;
use pruneforge::stages::eval::{run, run_with_model, EvalParams, TaskSpec, EVAL_JSON, ITEMS_JSONL};
use serde_json::Value;

fn params() -> EvalParams {
    let tasks = [
        "arc_easy:0:6",
        "winogrande:0:4",
        "mmlu:1:4",
        "truthfulqa_mc2:0:3",
        "gsm8k:1:2",
        "perplexity:0:2",
    ]
    .iter()
    .map(|s| s.parse::<TaskSpec>().expect("spec"))
    .collect();
    EvalParams {
        tasks,
        batch_size: 4,
        max_gen_tokens: 32,
        data_dir: Some(shared_dir().join("data")),
        ..EvalParams::default()
    }
}

fn read(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn eval_stage_writes_lm_eval_results_and_recovery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = embedded_model();
    let p = params();
    let base_dir = tmp.path().join("base");
    let base = run_with_model(
        &m.model,
        &m.tokenizer,
        "base",
        None,
        &p,
        &Resolver::local(),
        &base_dir,
    )
    .expect("base");
    let doc = read(base_dir.join(EVAL_JSON));
    let results = &doc["results"];
    for key in [
        "acc,none",
        "acc_stderr,none",
        "acc_norm,none",
        "acc_norm_bytes,none",
    ] {
        assert!(results["arc_easy"][key].is_number(), "arc_easy {key}");
    }
    assert!(results["mmlu"]["acc_macro,none"].is_number());
    assert_eq!(
        doc["group_subtasks"]["mmlu"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(results["mmlu_abstract_algebra"]["acc,none"].is_number());
    let mc2 = results["truthfulqa_mc2"]["mc2,none"].as_f64().expect("mc2");
    assert!((0.0..=1.0).contains(&mc2));
    assert_eq!(results["truthfulqa_mc2"]["acc,none"].as_f64(), Some(mc2));
    for f in ["strict-match", "flexible-extract"] {
        assert!(results["gsm8k"][format!("exact_match,{f}").as_str()].is_number());
    }
    let ppl = results["perplexity"]["perplexity,none"]
        .as_f64()
        .expect("ppl");
    assert!(ppl > 1.0 && ppl < 100.0, "perplexity {ppl}");
    assert_eq!(results["perplexity"]["tokens,none"].as_f64(), Some(510.0));
    assert_eq!(doc["n-samples"]["arc_easy"]["effective"], 6);
    assert_eq!(doc["n-samples"]["arc_easy"]["original"], 200);
    assert_eq!(doc["n-shot"]["mmlu"], 1);
    assert_eq!(doc["configs"]["gsm8k"]["num_fewshot"], 1);
    assert_eq!(doc["configs"]["perplexity"]["limit"], 2);
    assert_eq!(base.tasks.len(), 6);
    assert_eq!(base.tasks[2].metric, "acc_macro");
    assert_eq!(base.tasks[3].metric, "mc2");
    assert_eq!(base.tasks[4].metric, "exact_match,flexible-extract");
    let acc_tasks: Vec<f64> = base.tasks[..5].iter().map(|t| t.value).collect();
    let want_avg = acc_tasks.iter().sum::<f64>() / 5.0;
    assert!((base.average_all_tasks.expect("average") - want_avg).abs() < 1e-12);
    // Per-task statistics, and the headline average without the tasks at chance.
    let stats = &doc["statistics"];
    for t in &base.tasks[..5] {
        let st = &stats[t.task.as_str()];
        assert_eq!(st["n"].as_u64(), Some(t.items), "{}", t.task);
        assert!(st["chance"].is_number(), "{}", t.task);
        assert!(st["stderr"].is_number(), "{}", t.task);
        assert_eq!(st["at_chance_from"], "own");
        let at_chance = st["at_chance"].as_bool().expect("flag");
        let (se, chance) = (
            st["stderr"].as_f64().unwrap(),
            st["chance"].as_f64().unwrap(),
        );
        assert_eq!(
            at_chance,
            (t.value - chance).abs() <= 2.0 * se,
            "{}",
            t.task
        );
        assert_eq!(at_chance, base.excluded_at_chance.contains(&t.task));
    }
    assert!(stats["perplexity"]["at_chance"].is_null());
    let kept: Vec<f64> = base.tasks[..5]
        .iter()
        .filter(|t| !base.excluded_at_chance.contains(&t.task))
        .map(|t| t.value)
        .collect();
    let want_headline = (!kept.is_empty()).then(|| kept.iter().sum::<f64>() / kept.len() as f64);
    assert_eq!(base.average, want_headline);
    assert_eq!(doc["summary"]["average"].as_f64(), want_headline);
    assert_eq!(
        doc["summary"]["excluded_at_chance"]
            .as_array()
            .map(Vec::len),
        Some(base.excluded_at_chance.len())
    );
    assert!(base.forward_tokens_per_s.expect("speed") > 0.0);
    assert!(base.generated_tokens_per_s.expect("speed") > 0.0);

    let items = std::fs::read_to_string(base_dir.join(ITEMS_JSONL)).expect("items");
    let lines: Vec<Value> = items
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 6 + 4 + 4 + 3 + 2 + 2);
    let gen = lines
        .iter()
        .find(|l| l["task"] == "gsm8k")
        .expect("gsm8k item");
    assert!(gen["generation"].is_string() && gen["filtered"]["flexible-extract"].is_string());
    assert!(gen["correct"].is_boolean() && gen["score"].is_number());
    let arc = &lines[0];
    assert_eq!(arc["lls"].as_array().map(Vec::len), Some(4));
    assert!(arc["pred"]["acc_norm_bytes"].is_number());
    // Per-item values for paired statistics: correct, score and log p(gold | choices).
    let lls: Vec<f64> = arc["lls"]
        .as_array()
        .expect("lls")
        .iter()
        .map(|v| v.as_f64().expect("ll"))
        .collect();
    let gold = arc["gold"].as_u64().expect("gold") as usize;
    let lse = lls.iter().map(|l| l.exp()).sum::<f64>().ln();
    let logp = arc["logp_gold"].as_f64().expect("logp_gold");
    assert!((logp - (lls[gold] - lse)).abs() < 1e-9);
    assert_eq!(
        arc["correct"].as_bool(),
        Some(arc["pred"]["acc_norm"].as_u64() == Some(gold as u64)),
        "arc_easy is scored by acc_norm"
    );
    assert_eq!(
        arc["score"].as_f64(),
        Some(f64::from(u8::from(arc["correct"] == true)))
    );
    for l in lines.iter().filter(|l| l["task"] != "perplexity") {
        assert!(l["correct"].is_boolean() && l["score"].is_number(), "{l}");
        if l["task"] != "gsm8k" {
            assert!(l["logp_gold"].as_f64().is_some_and(|x| x <= 0.0), "{l}");
        }
    }

    // The pruned model against the base: recovery per task and of the average.
    let mut pruned = embedded_model();
    pruned.model.remove_layers(13, 6).expect("prune");
    let out = tmp.path().join("pruned");
    let base_eval = base_dir.join(EVAL_JSON);
    let s = run_with_model(
        &pruned.model,
        &pruned.tokenizer,
        "pruned",
        Some(&base_eval),
        &p,
        &Resolver::local(),
        &out,
    )
    .expect("pruned eval");
    let doc = read(out.join(EVAL_JSON));
    let rec = &doc["recovery"];
    assert_eq!(rec["tasks"].as_array().map(Vec::len), Some(6));
    for (t, (own, b)) in s.recovery.iter().zip(s.tasks.iter().zip(&base.tasks)) {
        assert_eq!((t.value, t.base), (own.value, b.value));
        match t.percent {
            Some(pct) if own.higher_is_better => {
                assert!((pct - own.value / b.value * 100.0).abs() < 1e-9)
            }
            Some(pct) => assert!((pct - b.value / own.value * 100.0).abs() < 1e-9),
            None => assert_eq!(b.value, 0.0),
        }
    }
    let ppl_rec = s
        .recovery
        .iter()
        .find(|t| t.task == "perplexity")
        .expect("ppl");
    assert!(
        ppl_rec.percent.expect("defined") < 100.0,
        "the pruned model is worse"
    );
    // The variant takes the base's at-chance flags; both averages leave the same tasks out.
    assert_eq!(s.excluded_at_chance, base.excluded_at_chance);
    assert_eq!(
        doc["statistics"]["arc_easy"]["at_chance_from"], "base",
        "a variant is judged by the base"
    );
    match (s.average, base.average) {
        (Some(a), Some(b)) if b != 0.0 => {
            let want = a / b * 100.0;
            assert!((s.recovery_percent.expect("recovery") - want).abs() < 1e-9);
        }
        _ => assert_eq!(s.recovery_percent, None),
    }
    // Normalized recovery, with a paired interval from the base's items.jsonl beside its
    // eval.json, on every accuracy task where the base is not exactly at chance.
    for t in s.recovery.iter().filter(|t| t.task != "perplexity") {
        let chance = t.chance.expect("chance level");
        if t.base == chance {
            assert!(
                t.normalized.is_none() && t.normalized_paired.is_none(),
                "{}",
                t.task
            );
            continue;
        }
        let want = (t.value - chance) / (t.base - chance);
        assert!(
            (t.normalized.expect("normalized") - want).abs() < 1e-9,
            "{}",
            t.task
        );
        if t.task != "mmlu" {
            // MMLU's value is the macro average; the paired items give the micro one.
            let paired = t.normalized_paired.expect("paired interval");
            assert!((paired.recovery - want).abs() < 1e-9, "{}", t.task);
            assert!(paired.ci95.low <= paired.recovery && paired.recovery <= paired.ci95.high);
        }
    }

    // The average normalized recovery over the tasks not at chance, with its interval.
    let averaged: Vec<f64> = s
        .recovery
        .iter()
        .filter(|t| t.chance.is_some() && t.at_chance != Some(true))
        .filter_map(|t| t.normalized_paired.map(|p| p.recovery))
        .collect();
    let kept = s
        .recovery
        .iter()
        .filter(|t| t.chance.is_some() && t.at_chance != Some(true))
        .count();
    let avg = rec["averageNormalizedPaired"]["estimate"].as_f64();
    if kept > 0 && averaged.len() == kept {
        let want = averaged.iter().sum::<f64>() / kept as f64;
        assert!((avg.expect("average interval") - want).abs() < 1e-9);
    } else {
        assert_eq!(avg, None);
    }

    // A base run with other settings is refused.
    let mut other = p.clone();
    other.tasks[0].limit = Some(5);
    let err = run_with_model(
        &pruned.model,
        &pruned.tokenizer,
        "pruned",
        Some(&base_eval),
        &other,
        &Resolver::local(),
        &tmp.path().join("other"),
    )
    .expect_err("settings differ");
    assert!(err.to_string().contains("arc_easy limit"), "{err}");
}

#[test]
fn bad_input_fails_before_loading_the_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("no-model");
    let mut p = params();
    p.tasks = vec![TaskSpec::new("arc_hard")];
    let err = run(
        &model,
        None,
        &p,
        &Resolver::local(),
        tmp.path(),
        &pruneforge::device::Compute::cpu(),
    )
    .expect_err("unknown task");
    assert!(err.to_string().contains("arc_easy"), "{err}");
    p.tasks = vec!["perplexity:3".parse().expect("spec")];
    let err = run(
        &model,
        None,
        &p,
        &Resolver::local(),
        tmp.path(),
        &pruneforge::device::Compute::cpu(),
    )
    .expect_err("shots");
    assert!(err.to_string().contains("shots must be 0"), "{err}");
    p.tasks = vec![TaskSpec {
        uri: Some(tmp.path().join("missing.jsonl").display().to_string()),
        ..TaskSpec::new("arc_easy")
    }];
    let err = run(
        &model,
        None,
        &p,
        &Resolver::local(),
        tmp.path(),
        &pruneforge::device::Compute::cpu(),
    )
    .expect_err("missing file");
    assert!(err.to_string().contains("does not exist"), "{err}");
    p.tasks = vec![TaskSpec::new("arc_easy")];
    let err = run(
        &model,
        Some(&tmp.path().join("nope.json")),
        &p,
        &Resolver::local(),
        tmp.path(),
        &pruneforge::device::Compute::cpu(),
    )
    .expect_err("missing base eval");
    assert!(err.to_string().contains("nope.json"), "{err}");
    assert!(
        !tmp.path().join(EVAL_JSON).exists(),
        "nothing written on error"
    );
}

#[test]
fn offset_past_the_end_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = embedded_model();
    let mut p = params();
    p.tasks = vec!["arc_easy:0:5:999".parse().expect("spec")];
    let err = run_with_model(
        &m.model,
        &m.tokenizer,
        "m",
        None,
        &p,
        &Resolver::local(),
        tmp.path(),
    )
    .expect_err("offset too large");
    assert!(err.to_string().contains("leaves no documents"), "{err}");
}

#[test]
fn kl_is_zero_for_the_base_and_grows_with_pruning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = EvalParams {
        tasks: vec!["kl:0:3".parse().expect("spec")],
        data_dir: Some(shared_dir().join("data")),
        ..EvalParams::default()
    };
    let base_model = embedded_model();
    let eval = |m: &pruneforge::loader::HfModel, base: Option<&std::path::Path>, dir: &str| {
        run_with_model(
            &m.model,
            &m.tokenizer,
            dir,
            base,
            &p,
            &Resolver::local(),
            &tmp.path().join(dir),
        )
    };
    let base = eval(&base_model, None, "base").expect("base");
    assert_eq!(base.tasks[0].metric, "kl_per_token");
    assert_eq!(base.tasks[0].value, 0.0);
    let reference = tmp.path().join("base").join(kl::REFERENCE_FILE);
    assert!(reference.is_file(), "the base writes the reference");
    let base_json = tmp.path().join("base").join(EVAL_JSON);
    let mass = read(base_json.clone())["results"]["kl"]["reference_topk_mass,none"]
        .as_f64()
        .expect("mass");
    assert!(mass > 0.5 && mass <= 1.0, "top-256 mass {mass}");

    // The same model against the reference: KL 0 up to rounding.
    let same = eval(&base_model, Some(&base_json), "same").expect("same");
    assert!(same.tasks[0].value.abs() < 1e-5, "{}", same.tasks[0].value);
    assert!(same.recovery[0].percent.is_none(), "no ratio to a KL of 0");

    // Six blocks removed: far from the base, on every row.
    let mut pruned = embedded_model();
    pruned.model.remove_layers(13, 6).expect("prune");
    let out = eval(&pruned, Some(&base_json), "pruned").expect("pruned");
    assert!(out.tasks[0].value > 0.05, "KL {}", out.tasks[0].value);
    let items =
        std::fs::read_to_string(tmp.path().join("pruned").join(ITEMS_JSONL)).expect("items");
    let rows =
        pruneforge::report::row_recovery::rows_of(pruneforge::report::row_recovery::KL, &items);
    assert_eq!(rows.len(), 3);
    assert!(rows.values().all(|&k| k > 0.0), "{rows:?}");
    let doc = read(tmp.path().join("pruned").join(EVAL_JSON));
    assert!(
        doc["results"]["kl"]["kl_per_token_stderr,none"]
            .as_f64()
            .expect("se")
            > 0.0
    );

    // Without the base's reference the variant cannot be scored; the error says what to do.
    std::fs::remove_file(&reference).expect("rm");
    let err = eval(&pruned, Some(&base_json), "orphan").expect_err("no reference");
    assert!(
        err.to_string()
            .contains("evaluate the base model with the kl task"),
        "{err}"
    );
}

#[test]
fn answer_nll_scores_held_out_answers_and_grows_with_pruning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p = EvalParams {
        tasks: vec!["answer_nll:0:4".parse().expect("spec")],
        data_dir: Some(shared_dir().join("data")),
        ..EvalParams::default()
    };
    let base_model = embedded_model();
    let base = run_with_model(
        &base_model.model,
        &base_model.tokenizer,
        "base",
        None,
        &p,
        &Resolver::local(),
        &tmp.path().join("base"),
    )
    .expect("base");
    assert_eq!(base.tasks[0].metric, "nll_per_answer_token");
    assert!(base.tasks[0].value > 0.0 && base.tasks[0].value < 5.0);
    let items = std::fs::read_to_string(tmp.path().join("base").join(ITEMS_JSONL)).expect("items");
    let rows = pruneforge::report::row_recovery::rows_of(
        pruneforge::report::row_recovery::ANSWER_NLL,
        &items,
    );
    let first = pruneforge_api::spec::ANSWER_NLL_FIRST_RECORD as u64;
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        (first..first + 4).collect::<Vec<_>>()
    );
    let mut pruned = embedded_model();
    pruned.model.remove_layers(13, 6).expect("prune");
    let out = run_with_model(
        &pruned.model,
        &pruned.tokenizer,
        "pruned",
        Some(&tmp.path().join("base").join(EVAL_JSON)),
        &p,
        &Resolver::local(),
        &tmp.path().join("pruned"),
    )
    .expect("pruned");
    assert!(
        out.tasks[0].value > base.tasks[0].value + 0.2,
        "{} vs {}",
        out.tasks[0].value,
        base.tasks[0].value
    );
    let few_shot = EvalParams {
        tasks: vec!["answer_nll:2:4".parse().expect("spec")],
        ..p.clone()
    };
    let err = run_with_model(
        &pruned.model,
        &pruned.tokenizer,
        "x",
        None,
        &few_shot,
        &Resolver::local(),
        &tmp.path().join("x"),
    )
    .expect_err("shots refused");
    assert!(err.to_string().contains("shots must be 0"), "{err}");
}
