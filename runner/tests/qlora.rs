//! QLoRA: LoRA over a base whose projections stay quantized (GGUF Q8_0, Q4_0, Q4_1, Q4_K and
//! bitsandbytes' NF4). The quantized model computes exactly the float model of its
//! dequantized weights (inference and training paths); LoRA gradients through the quantized
//! base match finite differences; the stage writes the dequantized base plus the adapter; on
//! the embedded model and the reference prompts each format stays within its error of f32.

mod common;

use candle_core::{DType, Device, Tensor};
use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::loader::{open_model, open_model_with_base, HfModel};
use pruneforge::model::compare::compare_logits;
use pruneforge::model::linear::ProjWeight;
use pruneforge::model::quant::BaseQuantization;
use pruneforge::model::{ForwardOptions, Llama};
use pruneforge::stages::finetune::{run, FinetuneParams};
use pruneforge::train::batching::{tokenize, Batch};
use pruneforge::train::lora::{LoraParams, LoraSet};
use pruneforge::train::loss::LossWeights;
use pruneforge::train::trainer::forward_loss;
use pruneforge::train::OptimizerParams;
use std::path::{Path, PathBuf};

/// A tiny model whose rows are multiples of 256 values, so every format applies (Q4_K's
/// super-blocks hold 256).
fn tiny(seed: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write_tiny_model(
        &dir,
        &TinySpec {
            hidden: 256,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 256,
            seed,
            ..Default::default()
        },
    );
    (tmp, dir)
}

fn quantized(dir: &Path, format: BaseQuantization) -> HfModel {
    open_model_with_base(dir, &Device::Cpu, DType::F32, Some(format)).unwrap()
}

/// The float model whose projections hold `q`'s dequantized values.
fn dequantized_twin(dir: &Path, q: &Llama) -> Llama {
    let mut f = open_model(dir).unwrap().model;
    for (lf, lq) in f.layers.iter_mut().zip(&q.layers) {
        for (a, b) in [
            (&mut lf.qkv, &lq.qkv),
            (&mut lf.o_proj, &lq.o_proj),
            (&mut lf.gate_up, &lq.gate_up),
            (&mut lf.down_proj, &lq.down_proj),
        ] {
            assert!(b.weight.quantization().is_some());
            a.weight = ProjWeight::Dense(b.weight.tensor().unwrap());
        }
    }
    f
}

fn alpaca() -> PathBuf {
    common::shared_dir().join("data/alpaca/alpaca_5000.json")
}

fn batch(m: &HfModel, n: usize) -> Batch {
    let records: Vec<_> = pruneforge::data::SftDataset::load_detected(&alpaca())
        .unwrap()
        .records
        .into_iter()
        .take(n)
        .collect();
    let ex = tokenize(&m.tokenizer, &records, 48).unwrap().examples;
    let refs: Vec<_> = ex.iter().collect();
    Batch::from_examples(&refs, m.tokenizer.pad_id.unwrap())
}

fn logits(m: &Llama, ids: &[u32]) -> Tensor {
    let tokens = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    let h = m
        .forward(&tokens, ForwardOptions::default())
        .unwrap()
        .last_hidden;
    m.logits(&h).unwrap().squeeze(0).unwrap()
}

/// Adapters with random non-zero B, so that every gradient is non-zero.
fn random_lora(model: &Llama, seed: u64) -> LoraSet {
    let lora = LoraSet::init(
        model,
        &LoraParams {
            dropout: 0.0,
            rank: 4,
            ..Default::default()
        },
        seed,
    )
    .unwrap();
    common::randomize_lora_b(&lora, seed ^ 99);
    lora
}

fn grads(lora: &LoraSet, loss: &Tensor) -> Vec<Vec<f32>> {
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

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    let scale = a.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (diff, scale)
}

#[test]
fn a_quantized_base_computes_the_float_model_of_its_dequantized_weights() {
    let (_t, dir) = tiny(21);
    let float = open_model(&dir).unwrap();
    let first = batch(&float, 8);
    let ids: Vec<u32> = first.tokens[..first.len].to_vec();
    let want_float = logits(&float.model, &ids);
    for format in BaseQuantization::ALL {
        let q = quantized(&dir, format);
        let twin = dequantized_twin(&dir, &q.model);
        // Inference: the quantized model against its dequantized twin.
        let a = compare_logits(&logits(&twin, &ids), &logits(&q.model, &ids)).unwrap();
        assert!(a.max_abs < 1e-5, "{format}: inference {a:?}");
        // Quantization changed the model (the comparison can fail).
        let moved = compare_logits(&want_float, &logits(&q.model, &ids)).unwrap();
        assert!(
            moved.max_abs > 1e-6,
            "{format}: no quantization error at all"
        );
        // Training path (fused kernels): loss and LoRA gradients through the quantized base
        // equal those through the twin.
        let b = batch(&q, 8);
        let w = LossWeights {
            ce: 1.0 / b.target_count() as f32,
            kd: 0.0,
            temperature: 1.0,
        };
        let mut qm = q.model;
        let mut twin = twin;
        let lq = random_lora(&qm, 3);
        let lt = random_lora(&twin, 3);
        lq.attach(&mut qm, 0).unwrap();
        lt.attach(&mut twin, 0).unwrap();
        let hq = forward_loss(&qm, None, &b, w, 64, false).unwrap();
        let ht = forward_loss(&twin, None, &b, w, 64, false).unwrap();
        assert!(
            (hq.ce_sum - ht.ce_sum).abs() < 1e-6 * ht.ce_sum.abs(),
            "{format}: loss {} vs {}",
            hq.ce_sum,
            ht.ce_sum
        );
        let (d, scale) = max_abs_diff(&grads(&lt, &ht.loss), &grads(&lq, &hq.loss));
        assert!(
            scale > 0.0 && d <= 1e-5 * scale,
            "{format}: gradients {d} of {scale}"
        );
        // Merging gives a dense model: the dequantized base plus the adapter.
        let with_adapter = logits(&qm, &ids);
        qm.merge_lora().unwrap();
        assert!(
            qm.quantized_base().is_none(),
            "{format}: merged weights stay quantized"
        );
        let m = compare_logits(&with_adapter, &logits(&qm, &ids)).unwrap();
        assert!(m.max_abs < 1e-4, "{format}: merged {m:?}");
    }
}

#[test]
fn lora_gradients_through_a_quantized_base_match_finite_differences() {
    let (_t, dir) = tiny(22);
    for format in [BaseQuantization::Nf4, BaseQuantization::Q4K] {
        let mut m = quantized(&dir, format);
        let b = batch(&m, 8);
        let w = LossWeights {
            ce: 1.0 / b.target_count() as f32,
            kd: 0.0,
            temperature: 1.0,
        };
        let lora = random_lora(&m.model, 6);
        lora.attach(&mut m.model, 0).unwrap();
        let hl = forward_loss(&m.model, None, &b, w, 64, false).unwrap();
        let g = grads(&lora, &hl.loss);
        let theta = lora.values().unwrap();
        let loss_at = |vals: &[Vec<f32>]| {
            lora.set_values(vals).unwrap();
            forward_loss(&m.model, None, &b, w, 64, false)
                .unwrap()
                .ce_sum
                * w.ce as f64
        };
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
            let eps = 1e-2f64;
            let at = |sign: f64| -> Vec<Vec<f32>> {
                theta
                    .iter()
                    .zip(&dir)
                    .map(|(t, d)| {
                        t.iter()
                            .zip(d)
                            .map(|(a, b)| a + (sign * eps * *b as f64 / norm) as f32)
                            .collect()
                    })
                    .collect()
            };
            let fd = (loss_at(&at(1.0)) - loss_at(&at(-1.0))) / (2.0 * eps);
            let analytic: f64 = g
                .iter()
                .flatten()
                .zip(dir.iter().flatten())
                .map(|(a, b)| *a as f64 * *b as f64 / norm)
                .sum();
            let rel = (fd - analytic).abs() / analytic.abs().max(1e-3 * gnorm);
            assert!(
                rel < 1e-2,
                "{format} {name}: finite difference {fd} vs analytic {analytic}"
            );
        }
    }
}

#[test]
fn the_stage_trains_over_nf4_and_writes_the_dequantized_base_plus_the_adapter() {
    let (tmp, dir) = tiny(23);
    let out = tmp.path().join("out");
    let params = FinetuneParams {
        write_merged: true,
        checkpoint_every: 0,
        lora: LoraParams {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            base_quantization: Some(BaseQuantization::Nf4),
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: 5e-3,
            warmup_steps: 1,
            steps: 12,
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
        s.final_loss < s.initial_loss,
        "{} -> {}",
        s.initial_loss,
        s.final_loss
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("finetune.json")).unwrap()).unwrap();
    assert_eq!(report["params"]["lora"]["base_quantization"], "nf4");
    // The merged model is the NF4 base dequantized plus the PEFT adapter, merged.
    let mut expected = quantized(&dir, BaseQuantization::Nf4).model;
    let adapter = LoraSet::load_peft(&expected, &out).unwrap();
    adapter.attach(&mut expected, 0).unwrap();
    expected.merge_lora().unwrap();
    let merged = open_model(&out.join("merged")).unwrap().model;
    let original = open_model(&dir).unwrap().model;
    let want = expected.named_weights().unwrap();
    let got = merged.named_weights().unwrap();
    let orig = original.named_weights().unwrap();
    assert_eq!(want.len(), got.len());
    for (((name, w), (name2, g)), (_, o)) in want.iter().zip(&got).zip(&orig) {
        assert_eq!(name, name2);
        let diff = (w - g)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{name}: merged differs by {diff}");
        if name.ends_with("proj.weight") {
            // Not the float base plus the adapter: the base went through NF4.
            let from_float = (o - g).unwrap().abs().unwrap().max_all().unwrap();
            assert!(from_float.to_scalar::<f32>().unwrap() > 1e-4, "{name}");
        }
    }
    // A float-base fingerprint does not name a quantization (old checkpoints stay valid).
    let plain = serde_json::to_value(LoraParams::default()).unwrap();
    assert!(plain.get("base_quantization").is_none());
}

#[test]
fn quantized_bases_of_the_embedded_model_stay_within_their_error_on_the_reference_prompts() {
    let dir = common::embedded_dir();
    let f32m = common::embedded_model();
    let prompts = common::reference_prompt_ids();
    let want: Vec<Tensor> = prompts.iter().map(|ids| logits(&f32m.model, ids)).collect();
    let want = Tensor::cat(&want, 0).unwrap();
    // (format, least top-1 agreement, largest mean KL in nats). Measured on the 140
    // positions: q8_0 top-1 0.971, KL 2.1e-3 (as much as bf16 compute); q4_0 0.643, 0.683;
    // nf4 0.636, 0.913. The embedded weights are already 4-bit (Q4_1, below), so a second
    // 4-bit grid compounds the error on this 135M model. The bounds are about twice the
    // measured KL and several flips below the measured top-1: room for rounding, not for a
    // wrong code book or block layout (which gives KL of several nats).
    for (format, top1, kl) in [
        (BaseQuantization::Q8_0, 0.95, 5e-3),
        (BaseQuantization::Q4_0, 0.55, 1.4),
        (BaseQuantization::Nf4, 0.55, 1.8),
    ] {
        let q = quantized(&dir, format);
        let got: Vec<Tensor> = prompts.iter().map(|ids| logits(&q.model, ids)).collect();
        let a = compare_logits(&want, &Tensor::cat(&got, 0).unwrap()).unwrap();
        eprintln!("{format} vs f32: {a:?}");
        assert_eq!(a.positions, 140);
        assert!(a.top1 >= top1, "{format}: top-1 agreement {}", a.top1);
        assert!(a.mean_kl <= kl, "{format}: mean KL {}", a.mean_kl);
        assert!(a.mean_kl > 0.0, "{format}: no error at all");
    }
    // The embedded model comes as a Q4_1 GGUF (every projection): its dequantized values
    // quantize back to the same blocks, so a Q4_1 base is the GGUF's own weights, exactly.
    let q = quantized(&dir, BaseQuantization::Q4_1);
    let got: Vec<Tensor> = prompts.iter().map(|ids| logits(&q.model, ids)).collect();
    let a = compare_logits(&want, &Tensor::cat(&got, 0).unwrap()).unwrap();
    assert_eq!(a.max_abs, 0.0, "q4_1 of a Q4_1 GGUF: {a:?}");
    // SmolLM2's rows hold 576 values: Q4_K (256 per super-block) is refused with the reason.
    let e = match open_model_with_base(&dir, &Device::Cpu, DType::F32, Some(BaseQuantization::Q4K))
    {
        Ok(_) => panic!("Q4_K accepted rows of 576 values"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("576") && e.contains("256"), "{e}");
}

#[test]
fn dpo_trains_over_a_quantized_base_and_merges_into_a_dense_model() {
    use pruneforge::data::preference::PreferenceRecord;
    use pruneforge::stages::prefer::{run as prefer, PreferRunParams};
    use pruneforge::tokenizer::ChatMessage;
    use pruneforge::train::preference::{PreferenceLoss, PreferenceObjective};
    let (tmp, dir) = tiny(24);
    let records: Vec<PreferenceRecord> = [
        ("What is two plus two?", "Four.", "Five, I think."),
        ("Name a primary colour.", "Red is one.", "Purple."),
        ("Spell cat.", "C-A-T.", "K-A-T, obviously."),
        (
            "Say hello politely.",
            "Hello, nice to meet you.",
            "What do you want?",
        ),
    ]
    .iter()
    .map(|(q, c, r)| PreferenceRecord {
        prompt: vec![ChatMessage::user(*q)],
        chosen: c.to_string(),
        rejected: r.to_string(),
    })
    .collect();
    let params = PreferRunParams {
        objective: PreferenceObjective {
            beta: 0.5,
            loss: PreferenceLoss::Sigmoid,
            label_smoothing: 0.0,
        },
        lora: LoraParams {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            base_quantization: Some(BaseQuantization::Q4_0),
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr: 5e-3,
            warmup_steps: 1,
            steps: 16,
            batch_size: 2,
            grad_accum: 1,
            max_seq_len: 128,
            seed: 4,
            ..Default::default()
        },
        log_every: 0,
        checkpoint_every: 0,
        stop_after: None,
    };
    // Opened dense: the stage quantizes the base the parameters name.
    let out = tmp.path().join("out");
    let r = prefer(
        open_model(&dir).unwrap(),
        &dir,
        &records,
        &params,
        &out,
        None,
        None,
    )
    .unwrap();
    // The policy starts as the (quantized) reference: loss ln 2 at step 1.
    assert!((r.history[0].outcome.loss - std::f64::consts::LN_2).abs() < 1e-4);
    assert!(r.final_margin > 0.1, "{r:?}");
    let merged = open_model(&out.join("merged")).unwrap();
    assert!(merged.model.quantized_base().is_none());
}
