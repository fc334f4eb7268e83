//! `score` and `prune` on the embedded SmolLM2-135M-Instruct against the PyTorch reference
//! (../shared/reference): calibration ids, layer scores and chosen blocks, the pruned model's
//! logits, and held-out perplexity before and after pruning.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use pruneforge::loader::load_hf_dir;
use pruneforge::model::ForwardOptions;
use pruneforge::resolve::Resolver;
use pruneforge::stages::prune::{self, PruneParams};
use pruneforge::stages::score::calibration::{self, CalibrationData};
use pruneforge::stages::score::choose::choose_block_dense;
use pruneforge::stages::score::perplexity::perplexity;
use pruneforge::stages::score::{
    self, LayerLimits, ScoreMetric, ScoreParams, ScoresFile, TokenRows,
};
use std::path::PathBuf;
use std::sync::OnceLock;

const CALIBRATION_SHA256: &str = "7dcfd8ec46aed1a64a890d92649a36b6fa883980d42c940fbd441c4e4c4b92b8";

fn calibration_params() -> ScoreParams {
    ScoreParams {
        calibration: CalibrationData::Ids {
            path: reference("calibration_ids.safetensors"),
            tensor: "input_ids".into(),
        },
        ..ScoreParams::default()
    }
}

/// Scores the embedded model once (default params on the reference calibration ids).
fn scored_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let summary = score::run(
            &embedded_dir(),
            &calibration_params(),
            &Resolver::local(),
            &dir,
            &pruneforge::device::Compute::cpu(),
        )
        .unwrap();
        println!(
            "score: {} tokens at {:.1} tokens/s",
            summary.tokens, summary.tokens_per_s
        );
        dir
    })
    .clone()
}

fn ref_vec(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn max_dev(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn calibration_ids_from_the_alpaca_stream_equal_the_reference() {
    let m = embedded_model();
    let rows = calibration::build(
        &CalibrationData::default(),
        &m.tokenizer,
        64,
        128,
        &Resolver::local(),
    )
    .unwrap();
    assert_eq!(
        (rows.rows(), rows.width(), rows.padded_rows()),
        (64, 128, 0)
    );
    assert_eq!(rows.sha256(), CALIBRATION_SHA256);
    let want: Vec<u32> = RefTensors::open("calibration_ids.safetensors")
        .i64("input_ids")
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(rows.ids(), want.as_slice());
    let from_file =
        TokenRows::from_safetensors(&reference("calibration_ids.safetensors"), "input_ids")
            .unwrap();
    assert_eq!(from_file.sha256(), CALIBRATION_SHA256);
}

#[test]
fn scores_and_chosen_blocks_match_the_reference() {
    let scores = ScoresFile::read(&scored_dir().join("scores.json")).unwrap();
    let reference = read_json("layer_scores.json");
    assert_eq!(scores.data.sha256, CALIBRATION_SHA256);
    assert_eq!(
        (scores.data.num_sequences, scores.data.sequence_length),
        (64, 128)
    );
    assert_eq!(scores.model.num_hidden_layers, 30);
    let mut worst = 0f64;
    for n in 1..=8usize {
        let ours = &scores.n[&n];
        let theirs = &reference["n"][n.to_string()];
        for key in ["d_lasttok", "d_alltok"] {
            let mine = if key == "d_lasttok" {
                &ours.d_lasttok
            } else {
                &ours.d_alltok
            };
            let dev = max_dev(mine, &ref_vec(&theirs[key]));
            assert!(dev < 1e-3, "n={n} {key}: max deviation {dev}");
            worst = worst.max(dev);
        }
        // Same block for last-token and all-token, with and without excluding layers 0/29.
        for (metric, values) in [("lasttok", &ours.d_lasttok), ("alltok", &ours.d_alltok)] {
            for (sel, limits) in [
                (
                    "all_starts",
                    LayerLimits {
                        include_first_layer: true,
                        include_last_layer: true,
                    },
                ),
                ("excl_first_last_layer", LayerLimits::default()),
            ] {
                let want = &theirs[format!("best_{metric}_{sel}")];
                let got = choose_block_dense(n, values, &limits.allowed_starts(30, n)).unwrap();
                assert_eq!(
                    got.start as u64,
                    want["start"].as_u64().unwrap(),
                    "n={n} {metric} {sel}"
                );
                assert_eq!(
                    got.runner_up_start.map(|s| s as u64),
                    want["runner_up_start"].as_u64(),
                    "n={n} {metric} {sel} runner-up"
                );
                let margin = want["margin_to_runner_up"].as_f64().unwrap();
                assert!((got.margin.unwrap() - margin).abs() < 1e-3);
            }
        }
        // The stage's own choice: angular last token, layers 0 and 29 excluded.
        let chosen = ours.chosen.as_ref().unwrap();
        let want = &theirs["best_lasttok_excl_first_last_layer"];
        assert_eq!(chosen.start as u64, want["start"].as_u64().unwrap());
        assert_eq!(chosen.end, chosen.start + n - 1);
    }
    for key in ["BI", "BI_lasttok"] {
        let mine = if key == "BI" {
            &scores.bi
        } else {
            &scores.bi_lasttok
        };
        let dev = max_dev(mine, &ref_vec(&reference[key]));
        assert!(dev < 1e-3, "{key}: max deviation {dev}");
        worst = worst.max(dev);
    }
    let order: Vec<usize> = reference["shortgpt_order_lowest_BI_first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut six: Vec<usize> = scores.shortgpt_order_lowest_bi_first[..6].to_vec();
    six.sort_unstable();
    let mut want_six = order[..6].to_vec();
    want_six.sort_unstable();
    assert_eq!(six, want_six, "ShortGPT's 6 lowest-BI layers");
    println!("max deviation from layer_scores.json: {worst:e}");
    assert_eq!(scores.n[&6].chosen.as_ref().unwrap().start, 13);
    assert!(std::fs::read_to_string(scored_dir().join("heatmap.svg"))
        .unwrap()
        .starts_with("<svg"));
}

#[test]
fn perplexity_metric_reuses_hidden_states_and_matches_the_reference() {
    // Only the best block of 6 by all-token distance (13..18) is measured.
    let params = ScoreParams {
        metric: ScoreMetric::Perplexity,
        block_sizes: Some(vec![6]),
        perplexity_top_k: Some(1),
        ..calibration_params()
    };
    let dir = tempfile::tempdir().unwrap();
    score::run(
        &embedded_dir(),
        &params,
        &Resolver::local(),
        dir.path(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let scores = ScoresFile::read(&dir.path().join("scores.json")).unwrap();
    let accuracy = read_json("accuracy.json");
    let want = &accuracy["perplexity"]["calibration_alpaca_64x128"];
    let full = scores.perplexity_full.unwrap();
    let want_full = want["full"]["ppl"].as_f64().unwrap();
    assert!(
        (full / want_full - 1.0).abs() < 1e-3,
        "{full} vs {want_full}"
    );
    let chosen = scores.n[&6].chosen.clone().unwrap();
    assert_eq!(chosen.start, 13);
    let want_pruned = want["pruned"]["ppl"].as_f64().unwrap();
    assert!(
        (chosen.score / want_pruned - 1.0).abs() < 1e-3,
        "{} vs {want_pruned}",
        chosen.score
    );
    println!(
        "calibration ppl: full {full:.4} (ref {want_full:.4}), without 13..18 {:.4} (ref {want_pruned:.4})",
        chosen.score
    );
}

#[test]
fn pruned_model_from_scores_matches_reference_logits_and_perplexity() {
    let out = tempfile::tempdir().unwrap();
    let report = prune::run(
        &embedded_dir(),
        Some(&scored_dir().join("scores.json")),
        &PruneParams::depth(None, 6),
        out.path(),
    )
    .unwrap();
    let removed: Vec<usize> = read_json("logits.json")["pruned_layers_removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(report.removed_layers, removed);
    // Parameter counts from the reference README.
    assert_eq!(
        (report.params_before, report.params_after),
        (134_515_008, 113_274_432)
    );
    assert_eq!((report.layers_before, report.layers_after), (30, 24));
    let dir = out.path().join(prune::MODEL_DIR);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 24);
    let pruned = load_hf_dir(&dir, &Device::Cpu, candle_core::DType::F32).unwrap();
    let refs = RefTensors::open("logits.safetensors");
    for p in ["p1", "p2", "c1", "c2"] {
        let ids: Vec<u32> = refs
            .i64(&format!("{p}/input_ids"))
            .iter()
            .map(|&v| v as u32)
            .collect();
        let t = ids.len();
        let tokens = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
        let h = pruned
            .model
            .forward(&tokens, ForwardOptions::default())
            .unwrap()
            .last_hidden
            .narrow(1, t - 1, 1)
            .unwrap();
        let logits = pruned
            .model
            .logits(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = refs.f32(&format!("{p}/pruned/logits_last"));
        let diff = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "{p}: max |logit diff| {diff}");
    }
    // Held-out perplexity before and after.
    let heldout =
        TokenRows::from_safetensors(&reference("heldout_ids.safetensors"), "input_ids").unwrap();
    let accuracy = read_json("accuracy.json");
    let want = &accuracy["perplexity"]["heldout_alpaca_64x256"];
    let after = perplexity(&pruned.model, &heldout, 8).unwrap();
    drop(pruned);
    let before = perplexity(&embedded_model().model, &heldout, 8).unwrap();
    for (tag, got) in [("full", &before), ("pruned", &after)] {
        let w = want[tag]["ppl"].as_f64().unwrap();
        assert_eq!(got.tokens_scored, 16320);
        assert!(
            (got.ppl / w - 1.0).abs() < 1e-3,
            "{tag}: ppl {} vs {w}",
            got.ppl
        );
    }
    println!(
        "held-out ppl: full {:.4}, pruned {:.4}",
        before.ppl, after.ppl
    );
}
