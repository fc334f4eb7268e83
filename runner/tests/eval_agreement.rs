//! The eval scorer against PyTorch (`shared/reference/accuracy.json`, `accuracy_items.jsonl`):
//! token ids of every request, per-choice log-likelihoods, accuracies within 1.5 points, and
//! held-out perplexity per row. Full model on all six reference tasks; the pruned model
//! (layers 13..18 removed) on a subset, to keep the test to a few minutes on 2 cores (the CLI
//! run in the eval README covers the rest). Also: prefix-cached scoring equals plain scoring,
//! and its speed is printed next to a plain forward pass.

mod common;

use std::collections::HashMap;
use std::time::Instant;

use candle_core::Tensor;
use common::*;
use pruneforge::data::tasks::{self, McDoc, TaskConfig, TaskDocs, TaskFiles};
use pruneforge::data::{DataRoot, Selection};
use pruneforge::eval::multiple_choice::{outcome, score_docs};
use pruneforge::eval::perplexity::{self, PerplexitySource};
use pruneforge::eval::{score, ScoreStats, ScorerOptions};
use pruneforge::loader::HfModel;
use pruneforge::model::ForwardOptions;
use pruneforge_api::spec::EvalTaskName;
use serde_json::Value;

/// Accuracy may differ from the reference by at most this much (1.5 points).
const ACC_TOLERANCE: f64 = 0.015;
/// Per-choice log-likelihood: f32 noise of a correct implementation is ~1e-5 per token.
const LL_TOLERANCE: f64 = 5e-4;

fn root() -> DataRoot {
    DataRoot::new(shared_dir().join("data"))
}

fn reference_items() -> HashMap<(String, usize), Value> {
    std::fs::read_to_string(reference("accuracy_items.jsonl"))
        .expect("reference items")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let key = (
                v["task"].as_str().expect("task").to_string(),
                v["idx"].as_u64().expect("idx") as usize,
            );
            (key, v)
        })
        .collect()
}

fn docs(task: EvalTaskName, limit: Option<usize>) -> Vec<McDoc> {
    let config = TaskConfig {
        selection: Selection::new(0, limit),
        ..TaskConfig::default()
    };
    match tasks::build(task, &TaskFiles::public(task, &root()), &config) {
        Ok(TaskDocs::MultipleChoice(d)) => d,
        other => panic!("{task}: {:?}", other.map(|d| d.len())),
    }
}

fn options() -> ScorerOptions {
    ScorerOptions::new(16, 8192)
}

/// Scores the tasks with `model` (`"full"` or `"pruned"`) and checks them against the reference.
fn check_tasks(m: &HfModel, model: &str, tasks: &[EvalTaskName]) {
    let items = reference_items();
    let acc = read_json("accuracy.json");
    let mut stats = ScoreStats::default();
    for &task in tasks {
        let docs = docs(task, None);
        let scored = score_docs(&m.model, &m.tokenizer, &docs, &options(), &mut stats)
            .unwrap_or_else(|e| panic!("{task}: {e}"));
        let mut max_dll = 0f64;
        for (doc, (reqs, scores)) in docs.iter().zip(scored.requests.iter().zip(&scored.scores)) {
            let r = &items[&(task.as_str().to_string(), doc.idx)];
            for (c, (req, s)) in reqs.iter().zip(scores).enumerate() {
                let rc = &r["choices"][c];
                let ids: Vec<u32> = rc["ids"]
                    .as_array()
                    .expect("ids")
                    .iter()
                    .map(|v| v.as_u64().expect("id") as u32)
                    .collect();
                let ours: Vec<u32> = req
                    .context
                    .iter()
                    .chain(&req.continuation)
                    .copied()
                    .collect();
                assert_eq!(ours, ids, "{task} {} choice {c}: token ids", doc.idx);
                assert_eq!(
                    req.continuation.len() as u64,
                    rc["n_cont"].as_u64().expect("n_cont")
                );
                let want = rc[format!("ll_{model}").as_str()].as_f64().expect("ll");
                max_dll = max_dll.max((s.ll - want).abs());
                let greedy = rc[format!("greedy_{model}").as_str()]
                    .as_bool()
                    .expect("greedy");
                assert_eq!(
                    s.is_greedy, greedy,
                    "{task} {} choice {c}: is_greedy",
                    doc.idx
                );
            }
        }
        let out = outcome(task, &docs, &scored).expect("metrics");
        let want = &acc["tasks"][task.as_str()][model];
        let pairs = [
            ("acc,none", "acc"),
            ("acc_norm_bytes,none", "acc_norm"),
            ("acc_norm,none", "acc_norm_lmeval"),
        ];
        let mut line = format!("{model} {task}: max |dll| {max_dll:.2e}");
        for (ours_key, ref_key) in pairs {
            let ours = out.metric(ours_key).expect("metric");
            let reference = want[ref_key].as_f64().expect("reference metric");
            line.push_str(&format!("; {ref_key} {ours:.4} (ref {reference:.4})"));
            assert!(
                (ours - reference).abs() <= ACC_TOLERANCE,
                "{model} {task} {ref_key}: ours {ours}, reference {reference}"
            );
        }
        println!("{line}");
        assert!(
            max_dll < LL_TOLERANCE,
            "{model} {task}: max |Δll| {max_dll} ≥ {LL_TOLERANCE}"
        );
    }
    println!(
        "{model}: forward {:.1} tok/s, request tokens {:.1} tok/s ({} forward tokens for {} request tokens)",
        stats.forward_tokens_per_s(),
        stats.request_tokens_per_s(),
        stats.forward_tokens,
        stats.request_tokens
    );
}

/// The first `rows` held-out rows: per-row NLL sums against the reference.
fn check_perplexity(m: &HfModel, model: &str, rows: usize) {
    let ids = perplexity::read_token_rows(&reference("heldout_ids.safetensors")).expect("ids");
    assert_eq!((ids.len(), ids[0].len()), (64, 256));
    let acc = read_json("accuracy.json");
    let want = &acc["perplexity"]["heldout_alpaca_64x256"][model]["row_nll_sums"];
    let per_row: Vec<_> = ids[..rows]
        .iter()
        .map(|r| perplexity::rolling_requests(r, 8192))
        .collect();
    let flat: Vec<_> = per_row.iter().flatten().cloned().collect();
    let mut stats = ScoreStats::default();
    let scores = score(&m.model, &flat, &options(), &mut stats).expect("score");
    let mut it = scores.into_iter();
    for (i, reqs) in per_row.iter().enumerate() {
        let windows: Vec<_> = it.by_ref().take(reqs.len()).collect();
        let (nll, tokens) = perplexity::row_nll(&windows);
        assert_eq!(tokens, 255);
        let reference = want[i].as_f64().expect("row sum");
        assert!(
            ((nll - reference) / reference).abs() < 1e-4,
            "{model} row {i}: nll {nll}, reference {reference}"
        );
    }
}

#[test]
fn full_model_matches_pytorch_on_every_reference_task() {
    let m = embedded_model();
    check_tasks(
        &m,
        "full",
        &[
            EvalTaskName::ArcEasy,
            EvalTaskName::ArcChallenge,
            EvalTaskName::Hellaswag,
            EvalTaskName::Piqa,
            EvalTaskName::Winogrande,
            EvalTaskName::Mmlu,
        ],
    );
    check_perplexity(&m, "full", 8);
}

#[test]
fn pruned_model_matches_pytorch_on_a_subset() {
    let mut m = embedded_model();
    m.model.remove_layers(13, 6).expect("prune");
    check_tasks(
        &m,
        "pruned",
        &[EvalTaskName::ArcChallenge, EvalTaskName::Winogrande],
    );
    check_perplexity(&m, "pruned", 8);
}

#[test]
fn heldout_rows_are_the_reference_ids() {
    let m = embedded_model();
    let source = PerplexitySource::for_path(&root().join("alpaca/alpaca_5000.json"));
    assert_eq!(source.default_limit(), Some(64));
    let rows = perplexity::load_rows(&source, &m.tokenizer).expect("rows");
    let want = perplexity::read_token_rows(&reference("heldout_ids.safetensors")).expect("ids");
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&rows[i].tokens, w, "row {i}");
    }
}

/// Prefix sharing changes nothing but speed: few-shot MMLU (long shared prefixes) and ARC
/// scored with and without it agree to f32 noise. Prints tokens/s of both and of a plain
/// [8, 128] forward pass with the LM head at every position.
#[test]
fn prefix_cached_scoring_equals_plain_scoring() {
    let m = embedded_model();
    let root = root();
    let mut requests = Vec::new();
    for (task, shots, limit) in [(EvalTaskName::Mmlu, 5, 12), (EvalTaskName::ArcEasy, 0, 24)] {
        let config = TaskConfig {
            num_fewshot: shots,
            selection: Selection::new(0, Some(limit)),
            ..TaskConfig::default()
        };
        let TaskDocs::MultipleChoice(docs) =
            tasks::build(task, &TaskFiles::public(task, &root), &config).expect("docs")
        else {
            panic!("{task} is multiple choice");
        };
        for d in &docs {
            for c in &d.choices {
                requests.push(
                    pruneforge::eval::encode_pair(&m.tokenizer, &c.ctx, &c.cont, 2).expect("enc"),
                );
            }
        }
    }
    let mut cached_stats = ScoreStats::default();
    let cached = score(&m.model, &requests, &options(), &mut cached_stats).expect("cached");
    let mut plain_opts = options();
    plain_opts.prefix_cache = false;
    let mut plain_stats = ScoreStats::default();
    let plain = score(&m.model, &requests, &plain_opts, &mut plain_stats).expect("plain");
    let max = cached
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a.ll - b.ll).abs())
        .fold(0f64, f64::max);
    assert!(max < 2e-4, "max |Δll| prefix cache vs plain: {max}");
    assert!(cached.iter().zip(&plain).all(|(a, b)| a.tokens == b.tokens));
    assert!(
        cached_stats.forward_tokens * 2 < plain_stats.forward_tokens,
        "sharing should at least halve the work: {} vs {}",
        cached_stats.forward_tokens,
        plain_stats.forward_tokens
    );
    let ids = perplexity::read_token_rows(&reference("heldout_ids.safetensors")).expect("ids");
    let batch: Vec<u32> = ids[..8].iter().flat_map(|r| r[..128].to_vec()).collect();
    let tokens = Tensor::from_vec(batch, (8, 128), m.model.device()).expect("tensor");
    let t0 = Instant::now();
    let h = m
        .model
        .forward(&tokens, ForwardOptions::default())
        .expect("forward")
        .last_hidden;
    m.model.logits(&h).expect("logits");
    let plain_forward = 1024.0 / t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    m.model
        .forward(&tokens, ForwardOptions::default())
        .expect("forward");
    let plain_backbone = 1024.0 / t0.elapsed().as_secs_f64();
    println!(
        "max |Δll| {max:.2e}; prefix cache: {} forward tokens, {:.1} forward tok/s overall, \
         {:.1} in the forward passes, {:.1} request tok/s; plain scoring: {} forward tokens, \
         {:.1} tok/s overall, {:.1} in the forward passes; plain [8,128] forward: \
         {plain_backbone:.1} tok/s, with the LM head at every position: {plain_forward:.1} tok/s",
        cached_stats.forward_tokens,
        cached_stats.forward_tokens_per_s(),
        cached_stats.forward_pass_tokens_per_s(),
        cached_stats.request_tokens_per_s(),
        plain_stats.forward_tokens,
        plain_stats.forward_tokens_per_s(),
        plain_stats.forward_pass_tokens_per_s(),
    );
}
