//! Preference training (issue 17): the DPO/cDPO/IPO/hinge/SPIN losses against a PyTorch
//! computation of TRL's formulas (scripts/preference_reference.py), LoRA gradients of the
//! preference loss through the model against finite differences, and the `prefer` stage on a
//! tiny model (DPO from a pairs file; SPIN's self-play pairs).

mod common;

use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::data::preference::PreferenceRecord;
use pruneforge::data::sft::SftRecord;
use pruneforge::loader::{open_model, HfModel};
use pruneforge::stages::prefer::{run, self_play_pairs, PreferRunParams};
use pruneforge::tokenizer::ChatMessage;
use pruneforge::train::batching::{example_of, Example};
use pruneforge::train::lora::{LoraParams, LoraSet};
use pruneforge::train::preference::{
    sequence_logps, PairLogps, PreferenceLoss, PreferenceObjective, PreferencePair,
};
use pruneforge::train::trainer::Trainer;
use pruneforge::train::{AdamW, OptimizerParams};
use std::path::PathBuf;

fn fixture() -> serde_json::Value {
    let p =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preference_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn loss_of(name: &str) -> PreferenceLoss {
    serde_json::from_value(serde_json::Value::String(name.into())).unwrap()
}

#[test]
fn losses_rewards_and_gradients_match_pytorch() {
    let f = fixture();
    let pairs: Vec<Vec<f64>> = serde_json::from_value(f["pairs"].clone()).unwrap();
    let n = pairs.len() as f64;
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let o = PreferenceObjective {
            beta: case["beta"].as_f64().unwrap(),
            loss: loss_of(case["loss"].as_str().unwrap()),
            label_smoothing: case["label_smoothing"].as_f64().unwrap(),
        };
        let ipo = o.loss.averages_tokens();
        let mut total = 0.0;
        for (i, p) in pairs.iter().enumerate() {
            let (nc, nr) = if ipo { (p[4], p[5]) } else { (1.0, 1.0) };
            let pl = o.pair(PairLogps {
                chosen: p[0] / nc,
                rejected: p[1] / nr,
                ref_chosen: p[2] / nc,
                ref_rejected: p[3] / nr,
            });
            total += pl.loss;
            let at = |k: &str| case[k][i].as_f64().unwrap();
            let close = |a: f64, b: f64, what: &str| {
                assert!(
                    (a - b).abs() <= 1e-10 * (1.0 + b.abs()),
                    "{} pair {i} {what}: {a} vs torch {b}",
                    case["name"]
                )
            };
            close(pl.loss, at("losses"), "loss");
            close(pl.chosen_reward, at("chosen_rewards"), "chosen reward");
            close(
                pl.rejected_reward,
                at("rejected_rewards"),
                "rejected reward",
            );
            // d(mean loss)/d(policy sum): 1/n of the pair's derivative, 1/tokens for ipo.
            close(pl.d_chosen / n / nc, at("grad_policy_chosen"), "d/dchosen");
            close(
                pl.d_rejected / n / nr,
                at("grad_policy_rejected"),
                "d/drejected",
            );
        }
        let mean = total / n;
        let want = case["mean_loss"].as_f64().unwrap();
        assert!(
            (mean - want).abs() < 1e-10,
            "{}: {mean} vs {want}",
            case["name"]
        );
    }
}

fn tiny() -> (tempfile::TempDir, HfModel) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write_tiny_model(
        &dir,
        &TinySpec {
            seed: 21,
            ..Default::default()
        },
    );
    let m = open_model(&dir).unwrap();
    (tmp, m)
}

fn records() -> Vec<PreferenceRecord> {
    let qa = [
        ("What is two plus two?", "Four.", "Five, I think."),
        ("Name a primary colour.", "Red is one.", "Purple."),
        (
            "Say hello politely.",
            "Hello, nice to meet you.",
            "What do you want?",
        ),
        ("Spell cat.", "C-A-T.", "K-A-T, obviously."),
    ];
    qa.iter()
        .map(|(q, c, r)| PreferenceRecord {
            prompt: vec![ChatMessage::user(*q)],
            chosen: c.to_string(),
            rejected: r.to_string(),
        })
        .collect()
}

fn tokenized(m: &HfModel, recs: &[PreferenceRecord]) -> Vec<(Example, Example)> {
    recs.iter()
        .map(|r| {
            let c = example_of(&m.tokenizer, &r.prompt, &r.chosen, 128)
                .unwrap()
                .unwrap()
                .0;
            let j = example_of(&m.tokenizer, &r.prompt, &r.rejected, 128)
                .unwrap()
                .unwrap()
                .0;
            (c, j)
        })
        .collect()
}

#[test]
fn preference_gradients_through_the_model_match_finite_differences() {
    let (_t, mut m) = tiny();
    let pad = m.tokenizer.pad_id.unwrap_or(0);
    let ex = tokenized(&m, &records());
    for loss in [
        PreferenceLoss::Sigmoid,
        PreferenceLoss::Hinge,
        PreferenceLoss::Ipo,
    ] {
        let o = PreferenceObjective {
            beta: 0.5,
            loss,
            label_smoothing: if loss == PreferenceLoss::Sigmoid {
                0.1
            } else {
                0.0
            },
        };
        let avg = loss.averages_tokens();
        let refs = |side: usize| -> Vec<f64> {
            let e: Vec<&Example> = ex
                .iter()
                .map(|p| if side == 0 { &p.0 } else { &p.1 })
                .collect();
            sequence_logps(&m.model, &e, 3, pad, avg).unwrap()
        };
        let (rc, rr) = (refs(0), refs(1));
        // The reference shifted so that the hinge is active for every pair.
        let pairs: Vec<PreferencePair> = ex
            .iter()
            .zip(rc.iter().zip(&rr))
            .map(|((c, r), (&a, &b))| PreferencePair {
                chosen: c.clone(),
                rejected: r.clone(),
                ref_chosen: a + 0.3,
                ref_rejected: b - 0.2,
            })
            .collect();
        let params = LoraParams {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            ..Default::default()
        };
        let lora = LoraSet::init(&m.model, &params, 5).unwrap();
        // Non-zero B so that A gets gradients too.
        common::randomize_lora_b(&lora, 3);
        let theta = lora.values().unwrap();
        let opt = AdamW::new(&lora.sizes(), &OptimizerParams::default());
        let mut tr = Trainer::new(&mut m.model, None, lora, opt, None, 1.0).unwrap();
        // Two micro-batches: pairs 0-1 and 2-3.
        let micro = vec![vec![&pairs[0], &pairs[1]], vec![&pairs[2], &pairs[3]]];
        let (loss0, g, out) = tr.preference_gradient(&micro, &o, 1, pad).unwrap();
        assert_eq!(out.pairs, 4);
        assert!(loss0.is_finite() && loss0 > 0.0, "{loss:?}: {loss0}");
        let mut eval = |vals: &[Vec<f32>]| {
            tr.lora.set_values(vals).unwrap();
            tr.preference_gradient(&micro, &o, 1, pad).unwrap().0
        };
        let gnorm = g
            .iter()
            .flatten()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(gnorm > 0.0, "{loss:?}: zero gradient");
        let unit: Vec<Vec<f32>> = g
            .iter()
            .map(|v| v.iter().map(|x| (*x as f64 / gnorm) as f32).collect())
            .collect();
        let eps = 1e-2f32;
        let shifted = |s: f32| -> Vec<Vec<f32>> {
            theta
                .iter()
                .zip(&unit)
                .map(|(t, d)| t.iter().zip(d).map(|(a, b)| a + s * b).collect())
                .collect()
        };
        let fd = (eval(&shifted(eps)) - eval(&shifted(-eps))) / (2.0 * eps as f64);
        let rel = (fd - gnorm).abs() / gnorm;
        assert!(
            rel < 2e-2,
            "{loss:?}: directional derivative {fd} vs |g| {gnorm}"
        );
        // The largest entries of the first A and B.
        for vi in [0usize, 1] {
            let (j, _) = g[vi]
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let mut plus = theta.clone();
            plus[vi][j] += eps;
            let mut minus = theta.clone();
            minus[vi][j] -= eps;
            let fd = (eval(&plus) - eval(&minus)) / (2.0 * eps as f64);
            let a = g[vi][j] as f64;
            assert!(
                (fd - a).abs() < 3e-2 * a.abs() + 1e-6,
                "{loss:?} var {vi} entry {j}: fd {fd} vs analytic {a}"
            );
        }
        tr.lora.detach(&mut *tr.student).unwrap();
    }
}

fn run_params(steps: u64, lr: f64) -> PreferRunParams {
    PreferRunParams {
        objective: PreferenceObjective {
            beta: 0.5,
            loss: PreferenceLoss::Sigmoid,
            label_smoothing: 0.0,
        },
        lora: LoraParams {
            rank: 4,
            alpha: 8.0,
            dropout: 0.0,
            ..Default::default()
        },
        optimizer: OptimizerParams {
            lr,
            warmup_steps: 1,
            steps,
            batch_size: 2,
            grad_accum: 1,
            max_seq_len: 128,
            seed: 4,
            ..Default::default()
        },
        log_every: 0,
        checkpoint_every: 0,
        stop_after: None,
    }
}

#[test]
fn dpo_raises_the_reward_margin_and_writes_a_merged_model() {
    let (tmp, m) = tiny();
    let dir = tmp.path().join("model");
    let out = tmp.path().join("out");
    let r = run(m, &dir, &records(), &run_params(24, 5e-3), &out, None, None).unwrap();
    assert_eq!((r.pairs, r.pairs_skipped), (4, 0));
    // The policy starts as the reference: loss ln 2, margin 0 at step 1.
    let first = &r.history[0].outcome;
    assert!(
        (first.loss - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        first.loss
    );
    assert!(first.margin.abs() < 1e-4);
    assert!(
        r.final_loss < r.initial_loss - 0.05,
        "{} -> {}",
        r.initial_loss,
        r.final_loss
    );
    assert!(r.final_margin > 0.1 && r.final_accuracy > 0.9, "{r:?}");
    for f in [
        "prefer.json",
        "adapter_model.safetensors",
        "adapter_config.json",
        "merged/config.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The merged model prefers the chosen answers more than the input model did.
    let merged = open_model(&out.join("merged")).unwrap();
    let pad = merged.tokenizer.pad_id.unwrap_or(0);
    let ex = tokenized(&merged, &records());
    let margin = |model: &HfModel| -> f64 {
        let c: Vec<&Example> = ex.iter().map(|p| &p.0).collect();
        let j: Vec<&Example> = ex.iter().map(|p| &p.1).collect();
        let a = sequence_logps(&model.model, &c, 4, pad, false).unwrap();
        let b = sequence_logps(&model.model, &j, 4, pad, false).unwrap();
        a.iter().zip(&b).map(|(x, y)| x - y).sum::<f64>()
    };
    let before = open_model(&dir).unwrap();
    assert!(
        margin(&merged) > margin(&before) + 0.5,
        "{} vs {}",
        margin(&merged),
        margin(&before)
    );
}

#[test]
fn spin_pairs_the_data_answers_with_the_models_own() {
    // The embedded model: the tiny random one samples tokens that decode to nothing.
    let m = common::embedded_model();
    let sft: Vec<SftRecord> = records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| SftRecord {
            id: i.to_string(),
            instruction: r.prompt[0].content.clone(),
            input: String::new(),
            output: r.chosen,
            gold: None,
            original: Default::default(),
        })
        .collect();
    let generation: pruneforge_api::spec::GenerationSpec = serde_json::from_value(
        serde_json::json!({"maxNewTokens": 8, "batchSize": 2, "temperature": 1.0, "seed": 3}),
    )
    .unwrap();
    let (pairs, rep) = self_play_pairs(&m, &sft, &generation, 1, 0).unwrap();
    assert_eq!(rep.prompts, 4);
    assert_eq!(pairs.len() + rep.identical + rep.empty, 4);
    assert!(rep.generated_tokens > 0 && !pairs.is_empty(), "{rep:?}");
    for (p, r) in pairs.iter().zip(&sft) {
        assert_eq!(p.chosen, r.output);
        assert_ne!(p.rejected, p.chosen);
        assert_eq!(p.prompt, vec![ChatMessage::user(r.instruction.clone())]);
    }
}

#[test]
fn bad_settings_get_clear_errors() {
    let (tmp, m) = tiny();
    let dir = tmp.path().join("model");
    let mut p = run_params(2, 1e-3);
    p.objective.beta = 0.0;
    let e = run(m, &dir, &records(), &p, &tmp.path().join("o1"), None, None).unwrap_err();
    assert!(e.to_string().contains("beta must be > 0"), "{e}");
    let m = open_model(&dir).unwrap();
    let mut p = run_params(2, 1e-3);
    p.optimizer.max_seq_len = 4;
    let e = run(m, &dir, &records(), &p, &tmp.path().join("o2"), None, None).unwrap_err();
    assert!(e.to_string().contains("no preference pairs left"), "{e}");
}

#[test]
fn cli_trains_dpo_from_a_pairs_file_and_spin_from_an_sft_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    write_tiny_model(
        &dir,
        &TinySpec {
            seed: 21,
            ..Default::default()
        },
    );
    let pairs = tmp.path().join("pairs.jsonl");
    let lines: Vec<String> = records()
        .iter()
        .map(|r| {
            serde_json::json!({"prompt": r.prompt[0].content, "chosen": r.chosen, "rejected": r.rejected})
                .to_string()
        })
        .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let sft = tmp.path().join("sft.jsonl");
    let lines: Vec<String> = records()
        .iter()
        .map(|r| {
            serde_json::json!({"instruction": r.prompt[0].content, "input": "", "output": r.chosen})
                .to_string()
        })
        .collect();
    std::fs::write(&sft, lines.join("\n")).unwrap();
    let bin = env!("CARGO_BIN_EXE_pruneforge");
    let run = |source: &[&str], out: &str, loss: &str| {
        std::process::Command::new(bin)
            .arg("prefer")
            .args(source)
            .args([
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--max-seq-len",
                "128",
                "--loss",
                loss,
            ])
            .args(["--max-new-tokens", "8", "--device", "cpu", "--out"])
            .arg(tmp.path().join(out))
            .output()
            .unwrap()
    };
    let model = dir.to_str().unwrap();
    let o = run(
        &["--pairs", pairs.to_str().unwrap(), "--model", model],
        "dpo",
        "ipo",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["pairs"].as_u64(), v["steps"].as_u64()),
        (Some(4), Some(2))
    );
    assert!(tmp.path().join("dpo/merged/config.json").exists());
    // SPIN on the embedded model (the tiny random one's answers decode to nothing).
    let embedded = common::embedded_dir();
    let o = run(
        &[
            "--spin-data",
            sft.to_str().unwrap(),
            "--model",
            embedded.to_str().unwrap(),
        ],
        "spin",
        "sigmoid",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["self_play"]["prompts"].as_u64(), Some(4));
    assert!(v["pairs"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert!(tmp.path().join("spin/merged/config.json").exists());
    let o = run(
        &["--pairs", pairs.to_str().unwrap(), "--model", model],
        "bad",
        "kto",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("use sigmoid, hinge or ipo"));
}

#[test]
fn an_interrupted_run_resumes_step_for_step() {
    let (tmp, m) = tiny();
    let dir = tmp.path().join("model");
    let mut p = run_params(6, 5e-3);
    p.lora.dropout = 0.1;
    let straight = run(m, &dir, &records(), &p, &tmp.path().join("a"), None, None).unwrap();
    p.checkpoint_every = 2;
    p.stop_after = Some(3);
    let out = tmp.path().join("b");
    let first = run(
        open_model(&dir).unwrap(),
        &dir,
        &records(),
        &p,
        &out,
        None,
        None,
    )
    .unwrap();
    assert!(!first.completed && first.steps == 3);
    assert!(!out.join("merged").exists() && out.join("checkpoints/latest.json").exists());
    p.stop_after = None;
    let resumed = run(
        open_model(&dir).unwrap(),
        &dir,
        &records(),
        &p,
        &out,
        None,
        None,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from_step, Some(3));
    assert!(resumed.completed);
    let losses = |r: &pruneforge::stages::prefer::PreferReport| -> Vec<f64> {
        r.history.iter().map(|h| h.outcome.loss).collect()
    };
    assert_eq!(losses(&straight), losses(&resumed));
    let read = |d: &std::path::Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(read(&tmp.path().join("a")), read(&out));
    // Other pairs: the checkpoint is refused, not silently reused.
    let mut other = records();
    other[0].chosen = "Four, exactly.".into();
    let e = run(
        open_model(&dir).unwrap(),
        &dir,
        &other,
        &p,
        &out,
        None,
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("checkpoint of a different run"),
        "{e}"
    );
}
