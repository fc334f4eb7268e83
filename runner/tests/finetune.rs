//! Fine-tuning: training kernels against composable ops, LoRA gradients against finite
//! differences, merge equivalence, KD properties, gradient accumulation, resume exactness,
//! PEFT output and bad inputs. All on a tiny random model with the real SmolLM2 tokenizer.

mod common;

use candle_core::{Device, Tensor};
use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::data::sft::SftRecord;
use pruneforge::loader::{open_model, save_hf_dir, HfModel};
use pruneforge::model::{ForwardOptions, Llama};
use pruneforge::report::dose_md::FinetuneDose;
use pruneforge::stages::finetune::{load_records, run, FinetuneParams};
use pruneforge::stages::prune::PruningLineage;
use pruneforge::stages::StageError;
use pruneforge::train::batching::{tokenize, Batch, Example};
use pruneforge::train::dose::TrainingDose;
use pruneforge::train::lora::{LoraParams, LoraSet};
use pruneforge::train::loss::LossWeights;
use pruneforge::train::trainer::{forward_loss, Trainer};
use pruneforge::train::{AdamW, HiddenKd, KdParams, OptimizerParams, TrainError};
use std::path::{Path, PathBuf};

fn tiny(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write_tiny_model(
        &dir,
        &TinySpec {
            seed,
            ..Default::default()
        },
    );
    (tmp, dir)
}

fn alpaca() -> PathBuf {
    common::shared_dir().join("data/alpaca/alpaca_5000.json")
}

fn records(n: usize) -> Vec<SftRecord> {
    pruneforge::data::SftDataset::load_detected(&alpaca())
        .unwrap()
        .records
        .into_iter()
        .take(n)
        .collect()
}

fn examples(m: &HfModel, n: usize, max_len: usize) -> Vec<Example> {
    tokenize(&m.tokenizer, &records(n), max_len)
        .unwrap()
        .examples
}

fn batch_of(m: &HfModel, ex: &[Example]) -> Batch {
    let refs: Vec<&Example> = ex.iter().collect();
    Batch::from_examples(&refs, m.tokenizer.pad_id.unwrap())
}

/// Adapters with random B (so that every gradient is non-zero).
fn random_lora(model: &Llama, dropout: f64, seed: u64) -> LoraSet {
    let lora = LoraSet::init(
        model,
        &LoraParams {
            dropout,
            ..Default::default()
        },
        seed,
    )
    .unwrap();
    common::randomize_lora_b(&lora, seed ^ 99);
    lora
}

fn weights(n: usize, ratio: f32, t: f32) -> LossWeights {
    LossWeights {
        ce: (1.0 - ratio) / n as f32,
        kd: ratio / n as f32,
        temperature: t,
    }
}

fn grads_of(lora: &LoraSet, loss: &Tensor) -> Vec<Vec<f32>> {
    let g = loss.backward().unwrap();
    lora.vars()
        .iter()
        .map(|v| {
            g.get(v.as_tensor())
                .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
                .unwrap_or_else(|| vec![0.0; v.elem_count()])
        })
        .collect()
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let scale = a
        .iter()
        .flatten()
        .fold(0f64, |m, &v| m.max(v.abs() as f64))
        .max(1e-12);
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f64, |m, (&x, &y)| m.max((x - y).abs() as f64))
        / scale
}

#[test]
fn training_kernels_match_composable_ops_with_dropout() {
    let (_t, dir) = tiny(3);
    let mut m = open_model(&dir).unwrap();
    let ex = examples(&m, 3, 80);
    let batch = batch_of(&m, &ex);
    let n = batch.target_count();
    let lora = random_lora(&m.model, 0.1, 5);
    let mut results = Vec::new();
    for kernels in [true, false] {
        m.model.train_kernels = kernels;
        lora.attach(&mut m.model, 1234).unwrap();
        let hl = forward_loss(&m.model, None, &batch, weights(n, 0.0, 1.0), 7, !kernels).unwrap();
        let loss = hl.loss.to_scalar::<f32>().unwrap();
        results.push((loss, hl.ce_sum, grads_of(&lora, &hl.loss)));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(
        (a.0 - b.0).abs() < 1e-4 * a.0.abs(),
        "loss {} vs {}",
        a.0,
        b.0
    );
    assert!((a.1 - b.1).abs() < 1e-4 * a.1.abs());
    let d = max_rel_diff(&a.2, &b.2);
    assert!(d < 2e-4, "gradients differ: max rel {d}");
    // Dropout is active: another seed changes the loss.
    m.model.train_kernels = true;
    lora.attach(&mut m.model, 999).unwrap();
    let other = forward_loss(&m.model, None, &batch, weights(n, 0.0, 1.0), 7, false).unwrap();
    assert!((other.loss.to_scalar::<f32>().unwrap() - a.0).abs() > 1e-6);
}

#[test]
fn kd_head_kernel_matches_composable_head() {
    let (_t, dir) = tiny(3);
    let (_t2, tdir) = tiny(8);
    let m = open_model(&dir).unwrap();
    let teacher = open_model(&tdir).unwrap();
    let mut student = m;
    let ex = examples(&student, 3, 80);
    let batch = batch_of(&student, &ex);
    let n = batch.target_count();
    let lora = random_lora(&student.model, 0.0, 5);
    lora.attach(&mut student.model, 0).unwrap();
    let w = weights(n, 0.3, 2.0);
    let fused = forward_loss(&student.model, Some(&teacher.model), &batch, w, 5, false).unwrap();
    let comp = forward_loss(&student.model, Some(&teacher.model), &batch, w, 5, true).unwrap();
    let (lf, lc) = (
        fused.loss.to_scalar::<f32>().unwrap(),
        comp.loss.to_scalar::<f32>().unwrap(),
    );
    assert!((lf - lc).abs() < 1e-4 * lc.abs(), "{lf} vs {lc}");
    assert!(
        (fused.kd_sum - comp.kd_sum).abs() < 1e-3 * comp.kd_sum.abs(),
        "{} vs {}",
        fused.kd_sum,
        comp.kd_sum
    );
    assert!(comp.kd_sum > 0.0);
    let d = max_rel_diff(&grads_of(&lora, &fused.loss), &grads_of(&lora, &comp.loss));
    assert!(d < 2e-4, "KD gradients differ: max rel {d}");
}

/// Loss in f64 from the per-position values (for finite differences).
fn loss_at(m: &Llama, batch: &Batch, w: LossWeights) -> f64 {
    let hl = forward_loss(m, None, batch, w, 64, false).unwrap();
    hl.ce_sum * w.ce as f64
}

#[test]
fn lora_gradients_match_finite_differences() {
    let (_t, dir) = tiny(4);
    let mut m = open_model(&dir).unwrap();
    let ex = examples(&m, 2, 64);
    let batch = batch_of(&m, &ex);
    let w = weights(batch.target_count(), 0.0, 1.0);
    let lora = random_lora(&m.model, 0.0, 6);
    lora.attach(&mut m.model, 0).unwrap();
    let hl = forward_loss(&m.model, None, &batch, w, 64, false).unwrap();
    let g = grads_of(&lora, &hl.loss);
    let theta = lora.values().unwrap();
    let eval = |vals: &[Vec<f32>]| {
        lora.set_values(vals).unwrap();
        loss_at(&m.model, &batch, w)
    };
    let shifted = |dir: &[Vec<f32>], eps: f32| -> Vec<Vec<f32>> {
        theta
            .iter()
            .zip(dir)
            .map(|(t, d)| t.iter().zip(d).map(|(a, b)| a + eps * b).collect())
            .collect()
    };
    // Directional derivatives along the gradient and along a random direction.
    let gnorm = g
        .iter()
        .flatten()
        .map(|v| (*v as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let mut rng = pruneforge::util::rng::SplitMix64::new(17);
    let random: Vec<Vec<f32>> = g
        .iter()
        .map(|v| {
            v.iter()
                .map(|_| if rng.next_f64() < 0.5 { -1.0 } else { 1.0 })
                .collect()
        })
        .collect();
    let rnorm = (random.iter().map(Vec::len).sum::<usize>() as f64).sqrt();
    for (name, dir, norm) in [("gradient", g.clone(), gnorm), ("random", random, rnorm)] {
        let unit: Vec<Vec<f32>> = dir
            .iter()
            .map(|v| v.iter().map(|x| (*x as f64 / norm) as f32).collect())
            .collect();
        let eps = 1e-2f32;
        let fd = (eval(&shifted(&unit, eps)) - eval(&shifted(&unit, -eps))) / (2.0 * eps as f64);
        let analytic: f64 = g
            .iter()
            .flatten()
            .zip(unit.iter().flatten())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let rel = (fd - analytic).abs() / analytic.abs().max(1e-3 * gnorm);
        assert!(
            rel < 1e-2,
            "{name}: finite difference {fd} vs analytic {analytic}"
        );
    }
    // Single entries: the largest |grad| of A and B in the first and last adapter.
    let last = g.len() - 2;
    for vi in [0usize, 1, last, last + 1] {
        let (j, _) = g[vi]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let eps = 1e-2f32;
        let mut plus = theta.clone();
        plus[vi][j] += eps;
        let mut minus = theta.clone();
        minus[vi][j] -= eps;
        let fd = (eval(&plus) - eval(&minus)) / (2.0 * eps as f64);
        let a = g[vi][j] as f64;
        assert!(
            (fd - a).abs() < 2e-2 * a.abs() + 1e-6,
            "var {vi} entry {j}: fd {fd} vs analytic {a}"
        );
    }
}

#[test]
fn merged_model_equals_adapter_model() {
    let (_t, dir) = tiny(5);
    let mut m = open_model(&dir).unwrap();
    let lora = random_lora(&m.model, 0.05, 9);
    lora.attach(&mut m.model, 0).unwrap();
    let ex = examples(&m, 2, 48);
    let tokens = Tensor::from_slice(&ex[0].tokens, (1, ex[0].tokens.len()), &Device::Cpu).unwrap();
    let logits = |model: &Llama| -> Vec<f32> {
        let h = model
            .forward(&tokens, ForwardOptions::default())
            .unwrap()
            .last_hidden;
        model
            .logits(&h)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let with_adapters = logits(&m.model);
    let base_model = open_model(&dir).unwrap();
    let base = logits(&base_model.model);
    m.model.merge_lora().unwrap();
    let merged = logits(&m.model);
    let diff = with_adapters
        .iter()
        .zip(&merged)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    let moved = with_adapters
        .iter()
        .zip(&base)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff < 1e-5, "merged vs adapter logits: {diff}");
    assert!(
        moved > 1e-2,
        "the adapters must change the output ({moved})"
    );
}

#[test]
fn kd_ratio_zero_is_pure_ce_and_identical_teacher_gives_zero_kd() {
    let (_t, dir) = tiny(6);
    let mut student = open_model(&dir).unwrap();
    let teacher = open_model(&dir).unwrap();
    let ex = examples(&student, 3, 64);
    let batch = batch_of(&student, &ex);
    let n = batch.target_count();
    // Fresh adapters (B = 0): the student is the teacher.
    let fresh = LoraSet::init(&student.model, &LoraParams::default(), 1).unwrap();
    fresh.attach(&mut student.model, 0).unwrap();
    let hl = forward_loss(
        &student.model,
        Some(&teacher.model),
        &batch,
        weights(n, 1.0, 2.0),
        16,
        false,
    )
    .unwrap();
    assert!(
        hl.kd_sum.abs() / (n as f64) < 1e-5,
        "KD of identical models: {}",
        hl.kd_sum
    );
    let g = grads_of(&fresh, &hl.loss);
    let gmax = g.iter().flatten().fold(0f32, |a, v| a.max(v.abs()));
    assert!(gmax < 1e-5, "KD gradient of identical models: {gmax}");
    // Ratio 0 with a teacher equals plain cross-entropy.
    let lora = random_lora(&student.model, 0.0, 2);
    lora.attach(&mut student.model, 0).unwrap();
    let with_t = forward_loss(
        &student.model,
        Some(&teacher.model),
        &batch,
        weights(n, 0.0, 2.0),
        16,
        false,
    )
    .unwrap();
    let plain = forward_loss(
        &student.model,
        None,
        &batch,
        weights(n, 0.0, 2.0),
        16,
        false,
    )
    .unwrap();
    assert_eq!(
        with_t.loss.to_scalar::<f32>().unwrap(),
        plain.loss.to_scalar::<f32>().unwrap()
    );
    assert!(with_t.kd_sum > 0.0);
    let d = max_rel_diff(
        &grads_of(&lora, &plain.loss),
        &grads_of(&lora, &with_t.loss),
    );
    assert!(d < 1e-6, "{d}");
}

#[test]
fn gradient_accumulation_equals_one_big_batch() {
    let (_t, dir) = tiny(7);
    let ex;
    let pad;
    let runs: Vec<(f64, f64, u64)> = {
        let probe = open_model(&dir).unwrap();
        ex = examples(&probe, 4, 64);
        pad = probe.tokenizer.pad_id.unwrap();
        let refs: Vec<&Example> = ex.iter().collect();
        let splits: [Vec<Batch>; 2] = [
            vec![Batch::from_examples(&refs, pad)],
            vec![
                Batch::from_examples(&refs[..2], pad),
                Batch::from_examples(&refs[2..], pad),
            ],
        ];
        splits
            .iter()
            .map(|micro| {
                let mut m = open_model(&dir).unwrap();
                let lora = random_lora(&m.model, 0.0, 3);
                let opt = AdamW::new(&lora.sizes(), &OptimizerParams::default());
                let mut tr = Trainer::new(&mut m.model, None, lora, opt, None, 1.0).unwrap();
                let out = tr.step(micro, 1e-3, 5, 0).unwrap();
                (out.loss, out.grad_norm, out.tokens)
            })
            .collect()
    };
    // Same mean loss over the same answer tokens, same accumulated gradient (its norm).
    assert_eq!(runs[0].2, runs[1].2);
    assert!(
        (runs[0].0 - runs[1].0).abs() < 1e-5 * runs[0].0,
        "{} vs {}",
        runs[0].0,
        runs[1].0
    );
    assert!(
        (runs[0].1 - runs[1].1).abs() < 1e-4 * runs[0].1,
        "{} vs {}",
        runs[0].1,
        runs[1].1
    );
}

fn small_params(steps: u64) -> FinetuneParams {
    FinetuneParams {
        lora: LoraParams {
            rank: 4,
            alpha: 8.0,
            dropout: 0.05,
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: 2e-3,
            warmup_steps: 2,
            steps,
            batch_size: 2,
            grad_accum: 2,
            max_seq_len: 96,
            seed: 11,
            ..Default::default()
        },
        kd: None,
        checkpoint_every: 2,
        limit: Some(40),
        holdout: 4,
        write_merged: false,
        log_every: 0,
        stop_after: None,
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn resumed_run_continues_exactly_and_writes_peft_adapter() {
    let (tmp, dir) = tiny(9);
    let data = vec![alpaca()];
    let full_dir = tmp.path().join("full");
    let full = run(
        &dir,
        None,
        &data,
        &small_params(6),
        &full_dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert!(full.completed && full.steps == 6);
    assert!(full.heldout_nll_before.is_some() && full.heldout_nll_after.is_some());
    let crash_dir = tmp.path().join("crash");
    let first = run(
        &dir,
        None,
        &data,
        &FinetuneParams {
            stop_after: Some(3),
            ..small_params(6)
        },
        &crash_dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert!(!first.completed && first.steps == 3);
    assert!(!crash_dir.join("adapter_model.safetensors").exists());
    let resumed = run(
        &dir,
        None,
        &data,
        &small_params(6),
        &crash_dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(resumed.resumed_from_step, Some(3));
    let a = read_json(&full_dir.join("finetune.json"));
    let b = read_json(&crash_dir.join("finetune.json"));
    let (ha, hb) = (
        a["history"].as_array().unwrap(),
        b["history"].as_array().unwrap(),
    );
    assert_eq!(ha.len(), 6);
    assert_eq!(hb.len(), 6);
    for (x, y) in ha.iter().zip(hb) {
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((lx - ly).abs() < 1e-5, "step {}: {lx} vs {ly}", x["step"]);
        assert_eq!(x["tokens"], y["tokens"]);
    }
    let ta =
        pruneforge::train::tensor_io::read(&full_dir.join("adapter_model.safetensors")).unwrap();
    let tb =
        pruneforge::train::tensor_io::read(&crash_dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(ta.len(), tb.len());
    for (k, (sa, va)) in &ta {
        let (sb, vb) = &tb[k];
        assert_eq!(sa, sb);
        let d = va
            .iter()
            .zip(vb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-6, "{k}: {d}");
    }
    // PEFT layout: config fields and tensor names/shapes.
    let cfg = read_json(&full_dir.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8);
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["use_rslora"], false);
    assert_eq!(cfg["target_modules"].as_array().unwrap().len(), 7);
    let (sa, _) = &ta["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"];
    assert_eq!(sa, &vec![4, 64]);
    let (sb, _) = &ta["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"];
    assert_eq!(sb, &vec![64, 4]);
    assert_eq!(ta.len(), 2 * 7 * 2);
    // The saved adapter reloads onto the model.
    let m = open_model(&dir).unwrap();
    let back = LoraSet::load_peft(&m.model, &full_dir).unwrap();
    assert_eq!(back.params.rank, 4);
    assert!(full_dir.join("loss.svg").exists());
    assert_eq!(a["summary"]["truncated"], b["summary"]["truncated"]);
    // The dose counts every session of the resumed run.
    for field in [
        "optimizer_steps",
        "sequences",
        "answer_tokens",
        "input_tokens",
    ] {
        assert_eq!(a["dose"][field], b["dose"][field], "dose.{field}");
    }
    let (ra, rb) = (
        a["dose"]["weight_change"]["overall"]["ratio"]
            .as_f64()
            .unwrap(),
        b["dose"]["weight_change"]["overall"]["ratio"]
            .as_f64()
            .unwrap(),
    );
    assert!((ra / rb - 1.0).abs() < 1e-4, "{ra} vs {rb}");
    // A finished run started again does not train further.
    let again = run(
        &dir,
        None,
        &data,
        &small_params(6),
        &full_dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(again.resumed_from_step, Some(6));
    // A checkpoint of another run is refused.
    let err = run(
        &dir,
        None,
        &data,
        &small_params(7),
        &full_dir,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("different run"), "{err}");
}

#[test]
fn training_lowers_the_loss_and_writes_the_merged_model() {
    let (tmp, dir) = tiny(10);
    let out = tmp.path().join("out");
    let params = FinetuneParams {
        write_merged: true,
        checkpoint_every: 0,
        lora: LoraParams {
            dropout: 0.0,
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: 5e-3,
            warmup_steps: 1,
            steps: 30,
            batch_size: 4,
            max_seq_len: 64,
            ..Default::default()
        },
        limit: Some(8),
        holdout: 0,
        ..Default::default()
    };
    let s = run(
        &dir,
        None,
        &[alpaca()],
        &params,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert!(
        s.final_loss < s.initial_loss - 0.5,
        "{} -> {}",
        s.initial_loss,
        s.final_loss
    );
    assert!(out.join("merged/config.json").exists());
    let merged = open_model(&out.join("merged")).unwrap();
    assert_eq!(merged.model.config.num_hidden_layers, 2);
    assert!(!out.join("checkpoints").exists());
}

/// `‖W‖²_F` of every projection of every layer of `model`, by (layer, projection), and of
/// the difference to `other` (same shape).
fn projection_norms_sq(model: &Llama, other: &Llama) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for (l, (layer, other_layer)) in model.layers.iter().zip(&other.layers).enumerate() {
        for name in pruneforge::model::llama::PROJECTIONS {
            let weight = |lay| {
                let lin = Llama::projection(lay, name).unwrap();
                let w = lin.part_weight(lin.part_index(name).unwrap()).unwrap();
                w.to_dtype(candle_core::DType::F64).unwrap()
            };
            let (w, v) = (weight(layer), weight(other_layer));
            let sq = |t: &Tensor| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            out.push((format!("{l}.{name}"), sq(&w), sq(&(&v - &w).unwrap())));
        }
    }
    out
}

#[test]
fn finetune_json_reports_the_training_dose() {
    let (tmp, dir) = tiny(12);
    let out = tmp.path().join("out");
    let params = FinetuneParams {
        write_merged: true,
        checkpoint_every: 0,
        ..small_params(5)
    };
    let s = run(
        &dir,
        None,
        &[alpaca()],
        &params,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let doc = read_json(&out.join("finetune.json"));
    let dose: TrainingDose = serde_json::from_value(doc["dose"].clone()).expect("dose block");
    assert_eq!(dose.optimizer_steps, 5);
    assert_eq!(dose.optimizer_steps, s.steps);
    assert_eq!(dose.training_records, s.examples);
    // 5 steps of 2 micro-batches of at most 2 sequences (a window's last batch may be short).
    assert!(
        dose.sequences > 10 && dose.sequences <= 20,
        "{} sequences",
        dose.sequences
    );
    assert!((dose.epochs - dose.sequences as f64 / s.examples as f64).abs() < 1e-12);
    assert_eq!(dose.answer_tokens, s.tokens);
    assert!(dose.input_tokens > dose.answer_tokens);
    let change = dose.weight_change.expect("weight change");
    let ok = |r: f64| r > 0.0 && r.is_finite();
    assert!(ok(change.overall.ratio), "{:?}", change.overall);
    assert_eq!(change.overall.modules, 2 * 7);
    assert_eq!(change.per_projection.len(), 7);
    for (name, c) in &change.per_projection {
        assert!(ok(c.ratio), "{name}: {c:?}");
    }
    assert_eq!(change.per_layer.len(), 2);
    // Against the dense difference between the merged and the original weights.
    let base = open_model(&dir).unwrap();
    let merged = open_model(&out.join("merged")).unwrap();
    let norms = projection_norms_sq(&base.model, &merged.model);
    let (base_sq, delta_sq) = norms
        .iter()
        .fold((0.0, 0.0), |(b, d), (_, w, dw)| (b + w, d + dw));
    let dense_ratio = (delta_sq / base_sq).sqrt();
    assert!(
        (change.overall.ratio / dense_ratio - 1.0).abs() < 1e-2,
        "low-rank {} vs dense {dense_ratio}",
        change.overall.ratio
    );
    let q: (f64, f64) = norms
        .iter()
        .filter(|(k, _, _)| k.ends_with(".q_proj"))
        .fold((0.0, 0.0), |(b, d), (_, w, dw)| (b + w, d + dw));
    let q_ratio = change.per_projection["q_proj"].ratio;
    assert!(
        (q_ratio / (q.1 / q.0).sqrt() - 1.0).abs() < 1e-2,
        "q_proj: {q_ratio} vs {}",
        (q.1 / q.0).sqrt()
    );
    // The report reads this finetune.json, and one written before the block existed.
    let read = FinetuneDose::from_finetune_json("n2-sft", &doc.to_string()).unwrap();
    assert_eq!(read.sequences, Some(dose.sequences));
    let mut old = doc.clone();
    old.as_object_mut().unwrap().remove("dose");
    let read = FinetuneDose::from_finetune_json("n2-sft", &old.to_string()).unwrap();
    assert_eq!((read.steps, read.sequences), (Some(5), None));
    assert_eq!(read.answer_tokens, Some(s.tokens));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let (tmp, dir) = tiny(11);
    let data = vec![alpaca()];
    let out = tmp.path().join("bad");
    // Unknown LoRA target.
    let mut p = small_params(2);
    p.lora.target_modules = vec!["q_proj".into(), "qkv".into()];
    let e = run(
        &dir,
        None,
        &data,
        &p,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`qkv`") && e.contains("gate_proj"), "{e}");
    // KD without a teacher.
    let mut p = small_params(2);
    p.kd = Some(KdParams::default());
    let e = run(
        &dir,
        None,
        &data,
        &p,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("teacher"), "{e}");
    // Empty data set.
    let empty = tmp.path().join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let mut p = small_params(2);
    p.holdout = 0;
    let e = run(
        &dir,
        None,
        &[empty],
        &p,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no training examples"), "{e}");
    // Every prompt longer than max_seq_len.
    let mut p = small_params(2);
    p.optimizer.max_seq_len = 8;
    let e = run(
        &dir,
        None,
        &data,
        &p,
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("prompt alone") && e.contains("40 skipped"),
        "{e}"
    );
    // Missing data file.
    let e = run(
        &dir,
        None,
        &[tmp.path().join("nope.jsonl")],
        &small_params(2),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
    // Divergence: a huge learning rate blows up after the first (checkpointed) step.
    let mut p = small_params(5);
    p.optimizer.lr = 1e30;
    p.optimizer.warmup_steps = 0;
    p.optimizer.max_grad_norm = 0.0;
    p.checkpoint_every = 1;
    let nan_out = tmp.path().join("nan");
    let e = run(
        &dir,
        None,
        &data,
        &p,
        &nan_out,
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err();
    assert!(
        matches!(e, StageError::Train(TrainError::NonFinite { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not finite") && msg.contains("last good checkpoint"),
        "{msg}"
    );
    let latest = read_json(&nan_out.join("checkpoints/latest.json"));
    assert!(latest["step"].as_u64().unwrap() >= 1);
}

#[test]
fn tokenization_masks_the_prompt_and_keeps_the_answer() {
    let (_t, dir) = tiny(12);
    let m = open_model(&dir).unwrap();
    let recs = records(20);
    let tok = tokenize(&m.tokenizer, &recs, 4096).unwrap();
    assert_eq!(tok.examples.len(), 20);
    assert_eq!(tok.truncated, 0);
    for (e, r) in tok.examples.iter().zip(&recs) {
        let prompt = m
            .tokenizer
            .decode(&e.tokens[..e.prompt_len], false)
            .unwrap();
        assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt:?}");
        assert!(prompt.contains(&r.instruction));
        let answer = m
            .tokenizer
            .decode(&e.tokens[e.prompt_len..], false)
            .unwrap();
        assert_eq!(answer, format!("{}<|im_end|>\n", r.output));
    }
    let cut = tokenize(&m.tokenizer, &recs, 60).unwrap();
    assert!(cut.truncated > 0 && cut.examples.iter().all(|e| e.tokens.len() <= 60));
}

#[test]
fn shard_directories_are_read_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("distilled");
    std::fs::create_dir_all(&shards).unwrap();
    let line = |i: usize| {
        format!("{{\"instruction\": \"q{i}\", \"input\": \"\", \"output\": \"a{i}\"}}\n")
    };
    std::fs::write(shards.join("part-00001.jsonl"), line(2) + &line(3)).unwrap();
    std::fs::write(shards.join("part-00000.jsonl"), line(0) + &line(1)).unwrap();
    std::fs::write(shards.join("notes.txt"), "ignored").unwrap();
    let single = tmp.path().join("extra.jsonl");
    std::fs::write(&single, line(4)).unwrap();
    let (records, files) = load_records(&[shards.clone(), single]).unwrap();
    let got: Vec<&str> = records.iter().map(|r| r.instruction.as_str()).collect();
    assert_eq!(got, ["q0", "q1", "q2", "q3", "q4"]);
    assert_eq!(files.len(), 3);
    let empty = tmp.path().join("empty_dir");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load_records(&[empty]).unwrap_err().to_string();
    assert!(e.contains("part-*.jsonl"), "{e}");
}

/// The device-generic training path (what CUDA and bf16 run), with and without activation
/// checkpointing per layer, against the fused CPU kernels: one optimizer step with dropout.
#[test]
fn generic_path_and_layer_checkpointing_match_the_fused_kernels_over_one_adamw_step() {
    let (_t, dir) = tiny(11);
    let probe = open_model(&dir).unwrap();
    let ex = examples(&probe, 4, 64);
    let pad = probe.tokenizer.pad_id.unwrap();
    let refs: Vec<&Example> = ex.iter().collect();
    let micro = vec![
        Batch::from_examples(&refs[..2], pad),
        Batch::from_examples(&refs[2..], pad),
    ];
    let run = |fused: bool, checkpoint: bool| {
        let mut m = open_model(&dir).unwrap();
        m.model.train_kernels = fused;
        let lora = random_lora(&m.model, 0.1, 3);
        let opt = AdamW::new(&lora.sizes(), &OptimizerParams::default());
        let mut tr = Trainer::new(&mut m.model, None, lora, opt, None, 1.0).unwrap();
        assert_eq!(
            tr.checkpoint_layers, !fused,
            "checkpointing is the generic default"
        );
        tr.checkpoint_layers = checkpoint;
        let out = tr.step(&micro, 1e-3, 5, 0).unwrap();
        (out.loss, out.grad_norm, tr.values.clone())
    };
    let fused = run(true, false);
    let generic = run(false, false);
    let checkpointed = run(false, true);
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * a.abs().max(1e-12);
    // Checkpointing recomputes the same ops: the same loss, gradient and update.
    assert!(
        close(generic.0, checkpointed.0, 1e-6),
        "{generic:?} vs {checkpointed:?}"
    );
    assert!(
        close(generic.1, checkpointed.1, 1e-5),
        "grad norm {} vs {}",
        generic.1,
        checkpointed.1
    );
    let max_abs = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
            .fold(0f32, f32::max)
    };
    let d = max_abs(&generic.2, &checkpointed.2);
    assert!(d <= 1e-5, "values after one AdamW step differ by {d}");
    // And the generic path agrees with the fused kernels.
    assert!(
        close(fused.0, generic.0, 1e-4),
        "loss {} vs {}",
        fused.0,
        generic.0
    );
    assert!(
        close(fused.1, generic.1, 1e-4),
        "grad norm {} vs {}",
        fused.1,
        generic.1
    );
    let d = max_abs(&fused.2, &generic.2);
    assert!(
        d <= 1e-5,
        "fused vs generic values after one AdamW step differ by {d}"
    );
}

/// A pod preempted mid-fine-tune loses its work directory; its checkpoints were saved to the
/// job's storage, so the next pod, starting in an empty directory, resumes from them and ends
/// with the same adapter as an uninterrupted run.
#[test]
fn a_new_pod_resumes_from_the_checkpoint_saved_in_storage() {
    use pruneforge::exec::resume::ResumeStore;
    use pruneforge::stages::finetune::run_resumable;
    use pruneforge::storage::BlockingStorage;

    let (tmp, dir) = tiny(9);
    let data = vec![alpaca()];
    let cpu = pruneforge::device::Compute::cpu();
    let storage_root = tmp.path().join("storage");
    std::fs::create_dir_all(&storage_root).unwrap();
    let store = || {
        let s = BlockingStorage::open(&format!("file://{}", storage_root.display())).unwrap();
        ResumeStore::at(
            s,
            "_resume/finetune-test",
            std::time::Duration::from_secs(0),
        )
    };
    let full_dir = tmp.path().join("full");
    run(&dir, None, &data, &small_params(6), &full_dir, &cpu).unwrap();

    let first_pod = tmp.path().join("pod-1");
    let first = run_resumable(
        &dir,
        None,
        &data,
        &FinetuneParams {
            stop_after: Some(4),
            ..small_params(6)
        },
        &first_pod,
        &cpu,
        Some(&store()),
    )
    .unwrap();
    assert!(!first.completed && first.steps == 4);
    std::fs::remove_dir_all(&first_pod).unwrap();
    assert!(storage_root
        .join("_resume/finetune-test/checkpoints/_SUCCESS")
        .exists());

    let second_pod = tmp.path().join("pod-2");
    let resumed = run_resumable(
        &dir,
        None,
        &data,
        &small_params(6),
        &second_pod,
        &cpu,
        Some(&store()),
    )
    .unwrap();
    assert_eq!(resumed.resumed_from_step, Some(4));
    assert!(resumed.completed && resumed.steps == 6);
    let ta =
        pruneforge::train::tensor_io::read(&full_dir.join("adapter_model.safetensors")).unwrap();
    let tb =
        pruneforge::train::tensor_io::read(&second_pod.join("adapter_model.safetensors")).unwrap();
    for (k, (_, va)) in &ta {
        let d = va
            .iter()
            .zip(&tb[k].1)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(d < 1e-6, "{k}: {d}");
    }
    // `pruneforge gc` of the artifact removes its resume state too; without it a new pod
    // starts from step 0.
    let uri = format!("file://{}/finetune/test", storage_root.display());
    let deleted = pruneforge::exec::resume::delete_for_artifact(&uri).unwrap();
    assert!(deleted > 0, "nothing deleted");
    assert!(!storage_root
        .join("_resume/finetune-test/checkpoints/_SUCCESS")
        .exists());
    let third_pod = tmp.path().join("pod-3");
    let fresh = run_resumable(
        &dir,
        None,
        &data,
        &FinetuneParams {
            stop_after: Some(1),
            ..small_params(6)
        },
        &third_pod,
        &cpu,
        Some(&store()),
    )
    .unwrap();
    assert_eq!(fresh.resumed_from_step, None);
}

/// A 3-layer teacher and the student that drops its layer 1 (with the `pruning.json` that
/// prune writes), in `tmp`.
fn depth_pruned_pair(tmp: &Path) -> (PathBuf, PathBuf) {
    let teacher = tmp.join("teacher");
    write_tiny_model(
        &teacher,
        &TinySpec {
            seed: 21,
            layers: 3,
            ..Default::default()
        },
    );
    let student = tmp.join("student");
    let mut m = open_model(&teacher).unwrap();
    let hidden = m.model.config.hidden_size;
    m.model.remove_layers(1, 1).unwrap();
    save_hf_dir(&m.model, &m.tokenizer, &student, m.stored_dtype).unwrap();
    PruningLineage::new(3, hidden, &[1], None, "")
        .write(&student)
        .unwrap();
    (teacher, student)
}

/// Hidden-state distillation on a depth-pruned student: the fused CPU kernels, the
/// device-generic path and layer checkpointing agree on the loss, the term and the update;
/// the term adds exactly `weight × its mean error` to the loss and changes the update.
#[test]
fn hidden_state_kd_agrees_across_training_paths_and_enters_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let (tdir, sdir) = depth_pruned_pair(tmp.path());
    let teacher = open_model(&tdir).unwrap();
    let probe = open_model(&sdir).unwrap();
    let lineage = PruningLineage::read(&sdir).unwrap().unwrap();
    let ex = examples(&probe, 4, 64);
    let pad = probe.tokenizer.pad_id.unwrap();
    let refs: Vec<&Example> = ex.iter().collect();
    let micro = vec![
        Batch::from_examples(&refs[..2], pad),
        Batch::from_examples(&refs[2..], pad),
    ];
    let kd = KdParams {
        ratio: 0.5,
        ..Default::default()
    };
    let run = |fused: bool, checkpoint: bool, weight: f64| {
        let mut m = open_model(&sdir).unwrap();
        m.model.train_kernels = fused;
        let lora = random_lora(&m.model, 0.1, 3);
        let opt = AdamW::new(&lora.sizes(), &OptimizerParams::default());
        let mut tr = Trainer::new(
            &mut m.model,
            Some(&teacher.model),
            lora,
            opt,
            Some(kd.clone()),
            1.0,
        )
        .unwrap();
        if weight > 0.0 {
            let h = HiddenKd::new(weight, &[], &lineage, (2, 64), (3, 64), &Device::Cpu).unwrap();
            assert_eq!(h.pairs, [(0, 0), (1, 2)]);
            tr = tr.with_hidden_kd(h).unwrap();
        }
        tr.checkpoint_layers = checkpoint;
        let out = tr.step(&micro, 1e-3, 5, 0).unwrap();
        (
            out.loss,
            out.ce,
            out.hidden,
            out.grad_norm,
            tr.values.clone(),
        )
    };
    let fused = run(true, false, 2.0);
    let generic = run(false, false, 2.0);
    let checkpointed = run(false, true, 2.0);
    let without = run(true, false, 0.0);
    let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * a.abs().max(1e-12);
    let max_abs = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        a.iter()
            .zip(b)
            .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
            .fold(0f32, f32::max)
    };
    for (name, other) in [("generic", &generic), ("checkpointed", &checkpointed)] {
        assert!(
            close(fused.0, other.0, 1e-4),
            "{name} loss {} vs {}",
            fused.0,
            other.0
        );
        assert!(
            close(fused.2, other.2, 1e-4),
            "{name} term {} vs {}",
            fused.2,
            other.2
        );
        assert!(
            close(fused.3, other.3, 1e-4),
            "{name} grad norm {} vs {}",
            fused.3,
            other.3
        );
        let d = max_abs(&fused.4, &other.4);
        assert!(
            d <= 1e-5,
            "{name}: values after one AdamW step differ by {d}"
        );
    }
    // The student's layer 1 stands in for two teacher layers: a clear error to learn from.
    assert!(fused.2 > 1e-3, "hidden-state error {}", fused.2);
    assert_eq!(without.2, 0.0);
    assert!(close(fused.1, without.1, 1e-6), "the CE term is unchanged");
    let added = fused.0 - without.0;
    assert!(
        close(added, 2.0 * fused.2, 1e-4),
        "the loss grew by {added}, expected 2 × {}",
        fused.2
    );
    assert!(
        max_abs(&fused.4, &without.4) > 1e-6,
        "the term changes the update"
    );
}

/// A fine-tune with hidden-state distillation ends with a lower hidden-state error than the
/// same fine-tune where the term is recorded but carries (almost) no weight, and records it
/// per step in finetune.json; a student without pruning.json and another shape is refused.
#[test]
fn hidden_state_kd_training_lowers_the_matched_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (tdir, sdir) = depth_pruned_pair(tmp.path());
    let params = |hidden_weight: f64| FinetuneParams {
        checkpoint_every: 0,
        lora: LoraParams {
            dropout: 0.0,
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: 5e-3,
            warmup_steps: 1,
            steps: 16,
            batch_size: 4,
            max_seq_len: 64,
            ..Default::default()
        },
        kd: Some(KdParams {
            ratio: 0.5,
            hidden_weight,
            ..Default::default()
        }),
        limit: Some(8),
        holdout: 0,
        ..Default::default()
    };
    let cpu = pruneforge::device::Compute::cpu();
    let final_error = |weight: f64, name: &str| -> f64 {
        let out = tmp.path().join(name);
        run(&sdir, Some(&tdir), &[alpaca()], &params(weight), &out, &cpu).unwrap();
        let report = read_json(&out.join("finetune.json"));
        let hidden: Vec<f64> = report["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|h| h["hidden"].as_f64().expect("hidden per step"))
            .collect();
        assert_eq!(hidden.len(), 16);
        hidden[hidden.len() - 4..].iter().sum::<f64>() / 4.0
    };
    let driven = final_error(10.0, "driven");
    let recorded = final_error(1e-9, "recorded");
    assert!(
        driven < 0.5 * recorded,
        "hidden-state error after training: {driven} with the term, {recorded} without"
    );
    // Without the record, a student of another shape cannot be paired.
    std::fs::remove_file(sdir.join("pruning.json")).unwrap();
    let e = run(
        &sdir,
        Some(&tdir),
        &[alpaca()],
        &params(1.0),
        &tmp.path().join("o2"),
        &cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pruning.json"), "{e}");
}
