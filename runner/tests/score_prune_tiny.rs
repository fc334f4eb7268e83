//! `score` and `prune` on a tiny random-weight model: outputs, clamping, bad input, padding,
//! degenerate hidden states, the perplexity metric against real pruning, and the CLI.

mod common;

use common::tiny::Tiny;
use pruneforge::loader::{load_hf_dir, open_model};
use pruneforge::model::safetensors_io::RawTensor;
use pruneforge::resolve::Resolver;
use pruneforge::stages::prune::{self, PruneParams};
use pruneforge::stages::score::perplexity::perplexity;
use pruneforge::stages::score::{
    self, CalibrationData, Packing, ScoreMetric, ScoreParams, ScoresFile, TokenRows,
};
use safetensors::Dtype;
use std::path::{Path, PathBuf};

fn tiny(dir: &Path, t: Tiny) -> PathBuf {
    t.write(&dir.join("model"))
}

/// Writes `input_ids` (int64 [rows, width]) and optionally `attention_mask`.
fn write_ids(path: &Path, rows: usize, width: usize, ids: &[i64], mask: Option<&[i64]>) {
    let raw = |v: &[i64]| RawTensor {
        dtype: Dtype::I64,
        shape: vec![rows, width],
        bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let ids = raw(ids);
    let mut tensors = vec![("input_ids".to_string(), &ids)];
    let mask_raw = mask.map(raw);
    if let Some(m) = &mask_raw {
        tensors.push(("attention_mask".to_string(), m));
    }
    safetensors::tensor::serialize_to_file(tensors, None, path).unwrap();
}

fn pseudo_ids(n: usize, vocab: i64) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7919 + 13) % vocab).collect()
}

fn ids_params(path: &Path, n: usize, l: usize) -> ScoreParams {
    ScoreParams {
        calibration: CalibrationData::Ids {
            path: path.to_path_buf(),
            tensor: "input_ids".into(),
        },
        num_sequences: n,
        sequence_length: l,
        batch_size: 3,
        ..ScoreParams::default()
    }
}

fn all_finite(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => false,
        serde_json::Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        serde_json::Value::Array(a) => a.iter().all(all_finite),
        serde_json::Value::Object(o) => o.values().all(all_finite),
        _ => true,
    }
}

#[test]
fn scores_file_heatmap_summary_and_layer_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), Tiny::default());
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 8, 12, &pseudo_ids(96, 258), None);
    let out = tmp.path().join("out");
    let summary = score::run(
        &model,
        &ids_params(&ids, 8, 12),
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!((summary.num_sequences, summary.sequence_length), (8, 12));
    assert_eq!(summary.tokens, 96);
    assert!(summary.tokens_per_s > 0.0);
    // Default block sizes for 4 layers: 1..=3. With layer 0 and layer 3 excluded, n = 3 has no
    // allowed block.
    let ns: Vec<usize> = summary.blocks.iter().map(|b| b.n).collect();
    assert_eq!(ns, vec![1, 2, 3]);
    assert!(summary.blocks[2].chosen.is_none());
    assert!(summary.blocks[2].line.contains("no block fits"));
    let c2 = summary.blocks[1].chosen.as_ref().unwrap();
    assert_eq!((c2.start, c2.end), (1, 2));
    for b in &summary.blocks[..2] {
        let c = b.chosen.as_ref().unwrap();
        assert!(c.start >= 1 && c.end <= 2, "{}", b.line);
    }
    let scores = ScoresFile::read(&out.join("scores.json")).unwrap();
    assert_eq!(scores.bi.len(), 4);
    assert_eq!(scores.n[&1].d_lasttok.len(), 4);
    assert_eq!(scores.n[&3].d_alltok.len(), 2);
    assert_eq!(
        scores.data.sha256,
        TokenRows::from_safetensors(&ids, "input_ids")
            .unwrap()
            .sha256()
    );
    // The chosen block is the argmin of d_lasttok over the allowed starts.
    let d = &scores.n[&1].d_lasttok;
    let best = if d[1] <= d[2] { 1 } else { 2 };
    assert_eq!(scores.n[&1].chosen.as_ref().unwrap().start, best);
    // BI sums.
    let bi = &scores.bi;
    assert!((scores.n[&2].bi_sum[1] - (bi[1] + bi[2])).abs() < 1e-12);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    for n in ["1", "2", "3"] {
        assert!(all_finite(&raw["n"][n]["d_lasttok"]) && all_finite(&raw["n"][n]["d_alltok"]));
    }
    assert!(all_finite(&raw["BI"]) && all_finite(&raw["BI_lasttok"]));
    let svg = std::fs::read_to_string(out.join("heatmap.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    // 4 + 3 + 2 cells.
    assert_eq!(svg.matches("<title>").count(), 9);

    // Including the first and last layer makes n = 3 possible and may move the choice.
    let mut p = ids_params(&ids, 8, 12);
    p.include_first_layer = true;
    p.include_last_layer = true;
    let s = score::run(
        &model,
        &p,
        &Resolver::local(),
        &tmp.path().join("out2"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let c3 = s.blocks[2].chosen.as_ref().unwrap();
    let d3 = &scores.n[&3].d_lasttok;
    assert_eq!(c3.start, if d3[0] <= d3[1] { 0 } else { 1 });
    assert_eq!(c3.runner_up_start, Some(1 - c3.start));
    assert!((c3.margin.unwrap() - (d3[0] - d3[1]).abs()).abs() < 1e-15);
}

#[test]
fn bad_block_sizes_and_params_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), Tiny::default());
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 2, 8, &pseudo_ids(16, 258), None);
    let out = tmp.path().join("out");
    let mut p = ids_params(&ids, 2, 8);
    p.block_sizes = Some(vec![1, 4]);
    let e = score::run(
        &model,
        &p,
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("block size 4") && e.contains("1..=3"), "{e}");
    p.block_sizes = Some(vec![0]);
    assert!(score::run(
        &model,
        &p,
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu()
    )
    .is_err());
    p.block_sizes = None;
    p.batch_size = 0;
    assert!(score::run(
        &model,
        &p,
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu()
    )
    .unwrap_err()
    .to_string()
    .contains("batch_size"));
    p.batch_size = 2;
    p.perplexity_top_k = Some(2);
    let e = score::run(
        &model,
        &p,
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("perplexity_top_k"), "{e}");
    // Longer sequences than the ids file holds.
    let e = score::run(
        &model,
        &ids_params(&ids, 2, 9),
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("fewer than the 9 asked"), "{e}");
    // Token ids outside the vocabulary.
    let big = tmp.path().join("big.safetensors");
    write_ids(&big, 1, 4, &[1, 2, 3, 300], None);
    let e = score::run(
        &model,
        &ids_params(&big, 1, 4),
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("outside the model's vocabulary"), "{e}");
    assert!(!out.join("scores.json").exists(), "no output after errors");
}

#[test]
fn short_calibration_text_is_clamped_or_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), Tiny::default());
    // The tiny tokenizer has one token per byte: 100 bytes = 100 tokens.
    let text = tmp.path().join("cal.txt");
    std::fs::write(&text, "abcdefghij".repeat(10)).unwrap();
    let params = |n: usize, l: usize| ScoreParams {
        calibration: CalibrationData::Text {
            dataset: text.display().to_string(),
            field: None,
            packing: Packing::Stream,
        },
        num_sequences: n,
        sequence_length: l,
        ..ScoreParams::default()
    };
    let s = score::run(
        &model,
        &params(10, 16),
        &Resolver::local(),
        &tmp.path().join("a"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!((s.num_sequences, s.sequence_length, s.tokens), (6, 16, 96));
    let e = score::run(
        &model,
        &params(4, 101),
        &Resolver::local(),
        &tmp.path().join("b"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("has 100 tokens, fewer than one sequence of 101"),
        "{e}"
    );
    let e = score::run(
        &model,
        &params(0, 16),
        &Resolver::local(),
        &tmp.path().join("c"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least 1 sequence"), "{e}");
    // A JSONL field, one document per row: empty documents are skipped, the rest padded.
    let jsonl = tmp.path().join("docs.jsonl");
    std::fs::write(
        &jsonl,
        "{\"body\": \"short\"}\n{\"body\": \"\"}\n{\"body\": \"a longer document here\"}\n",
    )
    .unwrap();
    let p = ScoreParams {
        calibration: CalibrationData::Text {
            dataset: jsonl.display().to_string(),
            field: Some("body".into()),
            packing: Packing::Rows,
        },
        num_sequences: 8,
        sequence_length: 16,
        ..ScoreParams::default()
    };
    let s = score::run(
        &model,
        &p,
        &Resolver::local(),
        &tmp.path().join("d"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(
        (s.num_sequences, s.sequence_length, s.tokens),
        (2, 16, 5 + 16)
    );
    let scores = ScoresFile::read(&tmp.path().join("d/scores.json")).unwrap();
    assert_eq!(scores.data.padded_rows, 1);
    std::fs::write(&jsonl, "{\"body\": \"\"}\n").unwrap();
    let e = score::run(
        &model,
        &p,
        &Resolver::local(),
        &tmp.path().join("e"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no non-empty document"), "{e}");
}

#[test]
fn padding_only_rows_are_dropped_and_padding_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny(tmp.path(), Tiny::default());
    let hf = open_model(&dir).unwrap();
    // Row 1 is padding only, row 2 has 5 real tokens of 10.
    let ids = pseudo_ids(30, 258);
    let mut mask = vec![1i64; 30];
    mask[10..20].fill(0);
    mask[25..30].fill(0);
    let path = tmp.path().join("padded.safetensors");
    write_ids(&path, 3, 10, &ids, Some(&mask));
    let rows = TokenRows::from_safetensors(&path, "input_ids").unwrap();
    assert_eq!(rows.rows(), 2);
    assert_eq!(rows.lengths(), &[10, 5]);
    // Batched with padding == one row at a time without padding.
    let together = score::score_pass(&hf.model, &rows, &[1, 2], 2, &[]).unwrap();
    let alone = score::score_pass(&hf.model, &rows, &[1, 2], 1, &[]).unwrap();
    for n in [1, 2] {
        for (a, b) in [
            (
                &together.angular.d_lasttok[&n],
                &alone.angular.d_lasttok[&n],
            ),
            (&together.angular.d_alltok[&n], &alone.angular.d_alltok[&n]),
        ] {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!((x - y).abs() < 1e-6, "n={n}: {x} vs {y}");
            }
        }
    }
    assert_eq!(together.angular.tokens, 15);
    assert_eq!(together.angular.sequences, 2);
    // Every row padding only: a clear error.
    write_ids(&path, 3, 10, &ids, Some(&[0i64; 30]));
    let e = TokenRows::from_safetensors(&path, "input_ids")
        .unwrap_err()
        .to_string();
    assert!(e.contains("every one is padding only"), "{e}");
    // Left padding is rejected.
    let mut left = vec![1i64; 30];
    left[0] = 0;
    write_ids(&path, 3, 10, &ids, Some(&left));
    let e = TokenRows::from_safetensors(&path, "input_ids")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not right-padded"), "{e}");
}

#[test]
fn zero_hidden_states_give_finite_scores_and_nan_weights_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let zero = tiny(
        &tmp.path().join("zero"),
        Tiny {
            zero_embeddings: true,
            ..Tiny::default()
        },
    );
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 4, 6, &pseudo_ids(24, 258), None);
    let out = tmp.path().join("out");
    score::run(
        &zero,
        &ids_params(&ids, 4, 6),
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("scores.json")).unwrap();
    assert!(!text.contains("NaN"));
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(all_finite(&raw["n"]["1"]["d_alltok"]) && all_finite(&raw["BI"]));
    let scores = ScoresFile::read(&out.join("scores.json")).unwrap();
    // All hidden states are zero: nothing changes, distance 0.
    assert!(scores.n[&2].d_alltok.iter().all(|&d| d == 0.0));
    assert!(scores.bi.iter().all(|&b| b == 0.0));
    assert!(scores.degenerate_comparisons > 0);

    let broken = tiny(
        &tmp.path().join("nan"),
        Tiny {
            nan_layer: Some(1),
            ..Tiny::default()
        },
    );
    let e = score::run(
        &broken,
        &ids_params(&ids, 4, 6),
        &Resolver::local(),
        &tmp.path().join("o2"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not finite") && e.contains("h_2"), "{e}");
}

#[test]
fn perplexity_metric_equals_perplexity_of_the_pruned_model() {
    let tmp = tempfile::tempdir().unwrap();
    let t = Tiny {
        layers: 6,
        ..Tiny::default()
    };
    let model = tiny(tmp.path(), t);
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 5, 9, &pseudo_ids(45, 258), None);
    let mut p = ids_params(&ids, 5, 9);
    p.metric = ScoreMetric::Perplexity;
    p.block_sizes = Some(vec![1, 2]);
    let s = score::run(
        &model,
        &p,
        &Resolver::local(),
        &tmp.path().join("scored"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let scores = ScoresFile::read(&tmp.path().join("scored/scores.json")).unwrap();
    let rows = TokenRows::from_safetensors(&ids, "input_ids").unwrap();
    let full = perplexity(&open_model(&model).unwrap().model, &rows, 2).unwrap();
    assert!((scores.perplexity_full.unwrap() - full.ppl).abs() < 1e-6 * full.ppl);
    // Check two blocks by actually pruning them.
    for (n, start) in [(2usize, 2usize), (1, 4)] {
        let out = tmp.path().join(format!("pruned-{n}-{start}"));
        prune::run(&model, None, &PruneParams::depth(Some(start), n), &out).unwrap();
        let pruned = load_hf_dir(
            &out.join("model"),
            &candle_core::Device::Cpu,
            candle_core::DType::F32,
        )
        .unwrap();
        let want = perplexity(&pruned.model, &rows, 5).unwrap().ppl;
        let got = scores.n[&n].ppl.as_ref().unwrap()[start].unwrap();
        assert!(
            (got - want).abs() < 1e-6 * want,
            "n={n} start={start}: {got} vs {want}"
        );
    }
    // Every allowed block was measured, excluded ones were not; the choice is the argmin.
    let ppl1 = scores.n[&1].ppl.as_ref().unwrap();
    assert!(ppl1[0].is_none() && ppl1[5].is_none());
    let best = (1..5)
        .min_by(|&a, &b| ppl1[a].unwrap().total_cmp(&ppl1[b].unwrap()))
        .unwrap();
    assert_eq!(s.blocks[0].chosen.as_ref().unwrap().start, best);

    // Top-k: only the k blocks with the lowest all-token angular distance are measured.
    p.perplexity_top_k = Some(1);
    score::run(
        &model,
        &p,
        &Resolver::local(),
        &tmp.path().join("topk"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let topk = ScoresFile::read(&tmp.path().join("topk/scores.json")).unwrap();
    for n in [1, 2] {
        let e = &topk.n[&n];
        let measured: Vec<usize> = (0..e.d_alltok.len())
            .filter(|&l| e.ppl.as_ref().unwrap()[l].is_some())
            .collect();
        assert_eq!(measured.len(), 1);
        let l = measured[0];
        assert_eq!(e.chosen.as_ref().unwrap().start, l);
        let want = scores.n[&n].ppl.as_ref().unwrap()[l].unwrap();
        assert!((e.ppl.as_ref().unwrap()[l].unwrap() - want).abs() < 1e-9 * want);
    }
}

#[test]
fn prune_writes_a_loadable_model_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), Tiny::default());
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 4, 8, &pseudo_ids(32, 258), None);
    score::run(
        &model,
        &ids_params(&ids, 4, 8),
        &Resolver::local(),
        &tmp.path().join("scored"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let scores_path = tmp.path().join("scored/scores.json");
    let chosen = ScoresFile::read(&scores_path).unwrap().n[&2]
        .chosen
        .clone()
        .unwrap();
    let out = tmp.path().join("pruned");
    let report = prune::run(
        &model,
        Some(&scores_path),
        &PruneParams::depth(None, 2),
        &out,
    )
    .unwrap();
    assert_eq!(report.removed_layers, vec![chosen.start, chosen.start + 1]);
    assert_eq!((report.layers_before, report.layers_after), (4, 2));
    assert!(report.params_after < report.params_before);
    assert!(report.flops_per_token_after < report.flops_per_token_before);
    let on_disk: prune::PruneReport =
        serde_json::from_str(&std::fs::read_to_string(out.join("prune.json")).unwrap()).unwrap();
    assert_eq!(on_disk, report);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["num_hidden_layers"], 2);
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(out.join("model").join(f).exists(), "{f}");
    }
    // The pruned model's layers are the source's layers minus the block, renumbered.
    let src = open_model(&model).unwrap().model;
    let dst = open_model(&out.join("model")).unwrap().model;
    let kept: Vec<usize> = (0..4)
        .filter(|l| !report.removed_layers.contains(l))
        .collect();
    for (new, &old) in kept.iter().enumerate() {
        let a = dst.layers[new]
            .down_proj
            .weight
            .tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let b = src.layers[old]
            .down_proj
            .weight
            .tensor()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(a, b, "layer {new} should be source layer {old}");
    }

    // Scores of other weights are refused unless allowed.
    let other = tiny(
        &tmp.path().join("other"),
        Tiny {
            seed: 99,
            ..Tiny::default()
        },
    );
    let e = prune::run(
        &other,
        Some(&scores_path),
        &PruneParams::depth(None, 2),
        &tmp.path().join("x"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("other weights"), "{e}");
    let mut allow = PruneParams::depth(None, 2);
    allow.allow_model_mismatch = true;
    prune::run(&other, Some(&scores_path), &allow, &tmp.path().join("x")).unwrap();
    // A block size the scores have no choice for, a block that does not fit, no block at all.
    let e = prune::run(
        &model,
        Some(&scores_path),
        &PruneParams::depth(None, 3),
        &tmp.path().join("y"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no block of 3 layers fits"), "{e}");
    let e = prune::run(
        &model,
        None,
        &PruneParams::depth(Some(3), 2),
        &tmp.path().join("y"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not fit"), "{e}");
    let e = prune::run(
        &model,
        None,
        &PruneParams::depth(Some(0), 4),
        &tmp.path().join("y"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("n must be 1..=3"), "{e}");
    let e = prune::run(
        &model,
        None,
        &PruneParams::depth(None, 1),
        &tmp.path().join("y"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("give its start"), "{e}");
    // An existing non-model directory is never replaced.
    let busy = tmp.path().join("busy");
    std::fs::create_dir_all(busy.join("model")).unwrap();
    std::fs::write(busy.join("model/notes.txt"), "keep me").unwrap();
    let e = prune::run(&model, None, &PruneParams::depth(Some(1), 1), &busy)
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing to replace"), "{e}");
    assert!(busy.join("model/notes.txt").exists());
}

#[test]
fn cli_score_prune_and_ppl() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), Tiny::default());
    let ids = tmp.path().join("ids.safetensors");
    write_ids(&ids, 4, 8, &pseudo_ids(32, 258), None);
    let bin = env!("CARGO_BIN_EXE_pruneforge");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let m = model.to_str().unwrap();
    let scored = tmp.path().join("scored");
    let (ok, stdout, stderr) = run(&[
        "score",
        "--model",
        m,
        "--ids",
        ids.to_str().unwrap(),
        "--sequences",
        "4",
        "--length",
        "8",
        "--block-sizes",
        "1,2",
        "--out",
        scored.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("n=2: remove layers") && stdout.contains("tokens/s"),
        "{stdout}"
    );
    let pruned = tmp.path().join("pruned");
    let (ok, stdout, stderr) = run(&[
        "prune",
        "--model",
        m,
        "--scores",
        scored.join("scores.json").to_str().unwrap(),
        "--n",
        "2",
        "--out",
        pruned.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("4 -> 2 layers"), "{stdout}");
    let (ok, stdout, stderr) = run(&[
        "ppl",
        "--model",
        pruned.join("model").to_str().unwrap(),
        "--ids",
        ids.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let dst = open_model(&pruned.join("model")).unwrap();
    let rows = TokenRows::from_safetensors(&ids, "input_ids").unwrap();
    let want = perplexity(&dst.model, &rows, 8).unwrap().ppl;
    assert!(
        stdout.starts_with(&format!("ppl {want:.4} ")),
        "{stdout} vs {want}"
    );
    // Bad input: a clear message and a failing exit status, no panic.
    let (ok, _, stderr) = run(&[
        "score",
        "--model",
        m,
        "--ids",
        ids.to_str().unwrap(),
        "--block-sizes",
        "9",
        "--length",
        "8",
        "--out",
        tmp.path().join("z").to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("block size 9"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
