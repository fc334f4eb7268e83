//! Width pruning (issue 16) on the embedded SmolLM2-135M-Instruct against the PyTorch
//! reference of scripts/width_reference.py (stored in tests/data/width_reference.safetensors):
//! the Minitron activation importance under both aggregations, the channels each variant
//! keeps, and the width-pruned model's last-position logits on the 4 reference prompts.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use pruneforge::loader::load_hf_dir;
use pruneforge::model::{ForwardOptions, ModelConfig};
use pruneforge::resolve::Resolver;
use pruneforge::stages::prune::{self, PruneMethod, PruneParams, WidthSize, WidthTargets};
use pruneforge::stages::score::calibration::CalibrationData;
use pruneforge::stages::score::{
    self, Reduce, ScoreParams, WidthAggregation, WidthImportance, SCORES_FILE, WIDTH_FILE,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Relative tolerance of the importance scores (f32 sums over 2048 tokens on both sides).
const IMPORTANCE_REL_TOL: f64 = 1e-4;
/// Largest difference of a logit from PyTorch's pruned model (issue 16: within 1e-4).
const LOGIT_ABS_TOL: f64 = 1e-4;

fn reference_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/width_reference.safetensors")
}

/// Every reference tensor, flattened to f64.
fn reference() -> &'static HashMap<String, Vec<f64>> {
    static REF: OnceLock<HashMap<String, Vec<f64>>> = OnceLock::new();
    REF.get_or_init(|| {
        let tensors = candle_core::safetensors::load(reference_file(), &Device::Cpu)
            .expect("tests/data/width_reference.safetensors (scripts/width_reference.py)");
        tensors
            .into_iter()
            .map(|(k, t)| {
                let v = t
                    .to_dtype(candle_core::DType::F64)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f64>())
                    .expect("reference tensor");
                (k, v)
            })
            .collect()
    })
}

fn ref_vec(name: &str) -> &'static [f64] {
    reference()
        .get(name)
        .unwrap_or_else(|| panic!("reference has no `{name}`"))
}

/// Scores the embedded model on the reference's calibration rows with `aggregation`.
fn scored(aggregation: WidthAggregation) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let ids = reference_file();
    let params = ScoreParams {
        calibration: CalibrationData::Ids {
            path: ids,
            tensor: "calibration_ids".into(),
        },
        num_sequences: 16,
        sequence_length: 128,
        block_sizes: Some(vec![2]),
        width: Some(aggregation),
        ..ScoreParams::default()
    };
    let s = score::run(
        &embedded_dir(),
        &params,
        &Resolver::local(),
        &dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert!(s.files.iter().any(|f| f == WIDTH_FILE), "{:?}", s.files);
    dir
}

fn default_scores() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| scored(WidthAggregation::default()))
}

fn check_importance(w: &WidthImportance, tag: &str) {
    let mut worst = (0.0f64, String::new());
    let mut compare = |name: String, ours: &[f64]| {
        let theirs = ref_vec(&format!("importance.{tag}.{name}"));
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
            let rel = (a - b).abs() / b.abs().max(1e-3);
            if rel > worst.0 {
                worst = (rel, format!("{name}[{i}]: {a} vs {b}"));
            }
        }
    };
    compare("hidden".into(), &w.hidden);
    for (l, layer) in w.layers.iter().enumerate() {
        compare(format!("layers.{l}.mlp"), &layer.mlp);
        compare(format!("layers.{l}.heads"), &layer.heads);
        compare(format!("layers.{l}.groups"), &layer.groups);
    }
    println!(
        "importance {tag}: largest relative difference {:.2e} at {}",
        worst.0, worst.1
    );
    assert!(
        worst.0 < IMPORTANCE_REL_TOL,
        "{tag}: {} ({:.2e})",
        worst.1,
        worst.0
    );
}

#[test]
fn importance_matches_pytorch_with_modelopt_aggregation() {
    let w = WidthImportance::read(&default_scores().join(WIDTH_FILE)).unwrap();
    assert_eq!((w.rows, w.tokens), (16, 16 * 128));
    check_importance(&w, "mean_l2");
}

#[test]
fn importance_matches_pytorch_with_the_other_aggregation() {
    let dir = scored(WidthAggregation {
        sequence: Reduce::L2,
        batch: Reduce::Mean,
    });
    let w = WidthImportance::read(&dir.join(WIDTH_FILE)).unwrap();
    check_importance(&w, "l2_mean");
}

fn targets(variant: &str) -> WidthTargets {
    match variant {
        "mlp_kv" => WidthTargets {
            intermediate_size: Some(WidthSize::Count(1152)),
            num_key_value_heads: Some(WidthSize::Count(2)),
            ..WidthTargets::default()
        },
        "all" => WidthTargets {
            intermediate_size: Some(WidthSize::Percent("75%".into())),
            num_key_value_heads: Some(WidthSize::Count(2)),
            heads_per_group: Some(WidthSize::Count(2)),
            hidden_size: Some(WidthSize::Count(480)),
        },
        other => panic!("no variant {other}"),
    }
}

/// Prunes the embedded model to `variant` and checks the shapes, the parameter count and the
/// last-position logits against PyTorch's pruned model.
fn check_variant(variant: &str) {
    let out = tempfile::tempdir().unwrap();
    let mut params = PruneParams::depth(None, 1);
    params.method = PruneMethod::Width {
        width: targets(variant),
    };
    let scores = default_scores().join(SCORES_FILE);
    let report = prune::run(&embedded_dir(), Some(&scores), &params, out.path()).unwrap();
    let dir = out.path().join(prune::MODEL_DIR);
    let cfg = ModelConfig::from_json_file(&dir.join("config.json")).unwrap();
    let shape: Vec<usize> = ref_vec(&format!("variant.{variant}.shape"))
        .iter()
        .map(|&x| x as usize)
        .collect();
    assert_eq!(
        vec![
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads
        ],
        shape
    );
    assert_eq!(cfg.head_dim, 64);
    assert_eq!(report.params_after, cfg.parameter_count());
    assert!(report.width.is_some() && report.removed_layers.is_empty());
    // pruning.json: every layer kept; the kept embedding channels where hidden shrank.
    let lineage = prune::PruningLineage::read(&dir).unwrap().unwrap();
    assert_eq!(lineage.kept_layers, (0..30).collect::<Vec<_>>());
    assert_eq!(
        lineage.kept_hidden_channels.as_ref().map(Vec::len),
        (cfg.hidden_size != 576).then_some(cfg.hidden_size)
    );
    let hf = load_hf_dir(&dir, &Device::Cpu, candle_core::DType::F32).unwrap();
    let counted: usize = hf
        .model
        .named_weights()
        .unwrap()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(counted as u64, report.params_after);
    let mut worst = 0.0f64;
    for i in 0..4 {
        let ids: Vec<u32> = ref_vec(&format!("prompt.{i}"))
            .iter()
            .map(|&x| x as u32)
            .collect();
        let t = ids.len();
        let tokens = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
        let out = hf
            .model
            .forward(&tokens, ForwardOptions::default())
            .unwrap();
        let last = out.last_hidden.narrow(1, t - 1, 1).unwrap();
        let logits: Vec<f64> = hf
            .model
            .logits(&last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect();
        let p = format!("variant.{variant}.prompt.{i}");
        let top_ids = ref_vec(&format!("{p}.top_ids"));
        let top = ref_vec(&format!("{p}.top_logits"));
        for (&id, &want) in top_ids.iter().zip(top) {
            worst = worst.max((logits[id as usize] - want).abs());
        }
        // The argmax agrees, and so does the normalizer over the whole vocabulary.
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(argmax as f64, top_ids[0], "{p}: argmax");
        let m = logits.iter().copied().fold(f64::MIN, f64::max);
        let lse = m + logits.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        worst = worst.max((lse - ref_vec(&format!("{p}.logsumexp"))[0]).abs());
    }
    println!(
        "{variant}: largest |logit − PyTorch| {worst:.2e}, {} parameters",
        report.params_after
    );
    assert!(worst < LOGIT_ABS_TOL, "{variant}: {worst}");
}

#[test]
fn mlp_and_kv_group_pruning_matches_pytorch() {
    check_variant("mlp_kv");
}

#[test]
fn pruning_every_width_dimension_matches_pytorch() {
    check_variant("all");
}

#[test]
fn width_pruning_without_importance_says_to_score_width() {
    let dir = tempfile::tempdir().unwrap();
    // A scores.json with no width importance beside it.
    std::fs::write(dir.path().join(SCORES_FILE), "{}").unwrap();
    let mut params = PruneParams::depth(None, 1);
    params.method = PruneMethod::Width {
        width: targets("mlp_kv"),
    };
    let e = prune::run(
        &embedded_dir(),
        Some(&dir.path().join(SCORES_FILE)),
        &params,
        &dir.path().join("out"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--width"), "{e}");
}

/// Depth and width together: width chosen on the full model, then the block removed.
#[test]
fn depth_and_width_combine() {
    let out = tempfile::tempdir().unwrap();
    let mut params = PruneParams::depth(None, 1);
    params.method = PruneMethod::DepthWidth {
        start: None,
        n: 2,
        width: WidthTargets {
            intermediate_size: Some(WidthSize::Percent("50%".into())),
            ..WidthTargets::default()
        },
    };
    let scores = default_scores().join(SCORES_FILE);
    let r = prune::run(&embedded_dir(), Some(&scores), &params, out.path()).unwrap();
    assert_eq!(r.layers_after, 28);
    assert_eq!(r.removed_layers.len(), 2);
    let cfg = ModelConfig::from_json_file(&out.path().join(prune::MODEL_DIR).join("config.json"))
        .unwrap();
    assert_eq!((cfg.num_hidden_layers, cfg.intermediate_size), (28, 768));
    let lineage = prune::PruningLineage::read(&out.path().join(prune::MODEL_DIR))
        .unwrap()
        .unwrap();
    let kept: Vec<usize> = (0..30).filter(|l| !r.removed_layers.contains(l)).collect();
    assert_eq!(lineage.kept_layers, kept);
    assert_eq!(lineage.source_model_sha256, r.source_model_sha256);
    assert!(r.params_ratio < 0.8, "{}", r.params_ratio);
}
