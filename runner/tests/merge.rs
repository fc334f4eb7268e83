//! Stage `merge`: SLERP / linear on tiny random Llama models written to temp dirs, the
//! task-vector methods (task arithmetic, TIES, NuSLERP) against a pruned base with expected
//! tensors computed here from mergekit's formulas, mismatch errors, the CLI, the stage request,
//! and a merge of the embedded SmolLM2.

mod common;

use pruneforge::loader::open_model;
use pruneforge::model::safetensors_io::{
    encode_f32, write_safetensors, SafetensorsWeights, SaveDtype,
};
use pruneforge::model::ForwardOptions;
use pruneforge::stages::merge::{self, MergeMethod, MergeParams, MergeReport, TValue};
use safetensors::Dtype;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tiny Llama: 8 hidden, 2 heads of 4 (1 kv head), 12 intermediate, 16 tokens.
#[derive(Clone)]
struct Tiny {
    layers: usize,
    hidden: usize,
    vocab: usize,
    tie: bool,
    dtype: SaveDtype,
    seed: u64,
}

impl Tiny {
    fn new(layers: usize, seed: u64) -> Self {
        Self {
            layers,
            hidden: 8,
            vocab: 16,
            tie: false,
            dtype: SaveDtype::F32,
            seed,
        }
    }

    fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, kv) = (self.hidden, 12, self.hidden / 2);
        let mut s = vec![
            ("model.embed_tokens.weight".to_string(), vec![self.vocab, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tie {
            s.push(("lm_head.weight".to_string(), vec![self.vocab, h]));
        }
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            for (n, shape) in [
                ("input_layernorm.weight", vec![h]),
                ("post_attention_layernorm.weight", vec![h]),
                ("self_attn.q_proj.weight", vec![h, h]),
                ("self_attn.k_proj.weight", vec![kv, h]),
                ("self_attn.v_proj.weight", vec![kv, h]),
                ("self_attn.o_proj.weight", vec![h, h]),
                ("mlp.gate_proj.weight", vec![i, h]),
                ("mlp.up_proj.weight", vec![i, h]),
                ("mlp.down_proj.weight", vec![h, i]),
            ] {
                s.push((format!("{p}.{n}"), shape));
            }
        }
        s
    }

    /// Random weights (xorshift; norms around 1 so that RMSNorm stays sane).
    fn tensors(&self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        let mut state = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        self.shapes()
            .into_iter()
            .map(|(n, shape)| {
                let len: usize = shape.iter().product();
                let v: Vec<f32> = if n.ends_with("norm.weight") {
                    (0..len).map(|_| (0.5 + next()) as f32).collect()
                } else {
                    (0..len).map(|_| (next() * 0.4 - 0.2) as f32).collect()
                };
                (n, (shape, v))
            })
            .collect()
    }

    fn write(&self, dir: &Path) {
        self.write_with(dir, &self.tensors());
    }

    fn write_with(&self, dir: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
        std::fs::create_dir_all(dir).unwrap();
        let config = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": 12,
            "num_hidden_layers": self.layers,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 64,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "tie_word_embeddings": self.tie,
            "torch_dtype": self.dtype.torch_name(),
            "bos_token_id": 1,
            "eos_token_id": 2,
        });
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let raw: Vec<_> = tensors
            .iter()
            .map(|(n, (shape, v))| {
                let mut r = encode_f32(v, self.dtype);
                r.shape = shape.clone();
                (n.clone(), r)
            })
            .collect();
        write_safetensors(dir, &raw, usize::MAX).unwrap();
        write_tokenizer(dir, &tokens(self.vocab));
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": false}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("chat_template.jinja"),
            "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
        )
        .unwrap();
        std::fs::write(
            dir.join("generation_config.json"),
            r#"{"bos_token_id": 1, "eos_token_id": 2}"#,
        )
        .unwrap();
    }
}

fn tokens(vocab: usize) -> Vec<String> {
    let mut t = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    t.extend((3..vocab).map(|i| format!("w{i}")));
    t
}

/// A WordLevel tokenizer.json over `tokens` (id = position), whitespace pre-tokenizer.
fn write_tokenizer(dir: &Path, tokens: &[String]) {
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let tj = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec_pretty(&tj).unwrap(),
    )
    .unwrap();
}

fn read(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let w = SafetensorsWeights::open_dir(dir, candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    w.names()
        .into_iter()
        .map(|n| {
            let v = w.load_f32(&n).unwrap().0;
            (n, v)
        })
        .collect()
}

/// Exact equality of all tensors; reports the first difference only.
fn assert_same(got: &BTreeMap<String, Vec<f32>>, want: &BTreeMap<String, Vec<f32>>, what: &str) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}"
    );
    for (n, v) in got {
        if let Some(i) = v.iter().zip(&want[n]).position(|(x, y)| x != y) {
            panic!(
                "{what}: `{n}`[{i}] is {} but should be {}",
                v[i], want[n][i]
            );
        }
        assert_eq!(v.len(), want[n].len(), "{what}: {n}");
    }
}

fn report(dir: &Path) -> MergeReport {
    serde_json::from_slice(&std::fs::read(dir.join(merge::REPORT_FILE)).unwrap()).unwrap()
}

fn slerp(t: TValue) -> MergeParams {
    MergeParams {
        method: MergeMethod::Slerp,
        t,
        ..MergeParams::default()
    }
}

fn pair(tmp: &Path, a: &Tiny, b: &Tiny) -> (PathBuf, PathBuf) {
    let (da, db) = (tmp.join("a"), tmp.join("b"));
    a.write(&da);
    b.write(&db);
    (da, db)
}

fn err_text(r: pruneforge::stages::Result<merge::MergeSummary>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn t0_is_model_a_and_t1_is_model_b_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // Both stored in bf16: the output is stored in the base model's dtype.
    let mut a = Tiny::new(3, 1);
    a.dtype = SaveDtype::BF16;
    let mut b = Tiny::new(3, 2);
    b.dtype = SaveDtype::BF16;
    let (da, db) = pair(tmp.path(), &a, &b);
    let (wa, wb) = (read(&da), read(&db));
    for (t, want) in [(0.0, &wa), (1.0, &wb)] {
        let out = tmp.path().join(format!("out-{t}"));
        let s = merge::run(
            &[da.clone(), db.clone()],
            None,
            &slerp(TValue::Scalar(t)),
            &out,
        )
        .unwrap();
        assert_eq!(s.tensors, want.len());
        assert_eq!(s.fallback_count, 0, "random tensors are not colinear");
        assert_same(&read(&out), want, &format!("t = {t}"));
        // Stored in the base (first) model's dtype.
        let st =
            SafetensorsWeights::open_dir(&out, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        assert_eq!(st.stored_dtype("model.norm.weight"), Some(Dtype::BF16));
    }
    // --base picks the t = 0 end: base b at t = 0 gives b.
    let out = tmp.path().join("out-base");
    let s = merge::run(
        &[da.clone(), db.clone()],
        Some(&db),
        &slerp(TValue::Scalar(0.0)),
        &out,
    )
    .unwrap();
    assert_eq!(s.base, db.display().to_string());
    assert_same(&read(&out), &wb, "base b, t = 0");
}

#[test]
fn identical_inputs_give_the_same_model_via_lerp_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = pair(tmp.path(), &Tiny::new(2, 7), &Tiny::new(2, 7));
    let out = tmp.path().join("out");
    let s = merge::run(&[da.clone(), db], None, &slerp(TValue::Scalar(0.5)), &out).unwrap();
    let wa = read(&da);
    assert_eq!(s.tensors, wa.len());
    assert_eq!(s.fallback_count, wa.len());
    // The lerp fallback 0.5·a + 0.5·a is exact in f32.
    assert_same(&read(&out), &wa, "identical inputs");
    let r = report(&out);
    assert_eq!(r.fallback_count, wa.len());
    assert_eq!(r.fallback_tensors.len(), wa.len());
    assert!(r
        .tensors
        .iter()
        .all(|t| t.lerp_fallback && t.cosine.unwrap() > 0.9999));
    assert_eq!(
        r.inputs[0].digest, r.inputs[1].digest,
        "same files, same digest"
    );
    assert!(r.inputs[0].digest.starts_with("sha256:"));
}

#[test]
fn slerp_of_orthogonal_models_is_analytic() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Tiny::new(2, 11);
    let ta = a.tensors();
    // b: per tensor, a random tensor with its component along a removed (orthogonal to a).
    let noise = Tiny::new(2, 12).tensors();
    let tb: BTreeMap<_, _> = ta
        .iter()
        .map(|(n, (shape, va))| {
            let r = &noise[n].1;
            let dot: f64 = va.iter().zip(r).map(|(&x, &y)| x as f64 * y as f64).sum();
            let sq: f64 = va.iter().map(|&x| x as f64 * x as f64).sum();
            let vb: Vec<f32> = va
                .iter()
                .zip(r)
                .map(|(&x, &y)| (y as f64 - dot / sq * x as f64) as f32)
                .collect();
            (n.clone(), (shape.clone(), vb))
        })
        .collect();
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    a.write_with(&da, &ta);
    a.write_with(&db, &tb);
    let t = 0.3;
    let out = tmp.path().join("out");
    let s = merge::run(&[da, db], None, &slerp(TValue::Scalar(t)), &out).unwrap();
    assert_eq!(s.fallback_count, 0);
    let (c0, c1) = (
        (std::f64::consts::FRAC_PI_2 * t).cos(),
        (std::f64::consts::FRAC_PI_2 * t).sin(),
    );
    for (n, v) in read(&out) {
        for ((x, a), b) in v.iter().zip(&ta[&n].1).zip(&tb[&n].1) {
            let want = c0 * *a as f64 + c1 * *b as f64;
            assert!((*x as f64 - want).abs() < 1e-5, "{n}: {x} vs {want}");
        }
    }
    for r in report(&out).tensors {
        assert!(r.cosine.unwrap().abs() < 1e-5, "{}: {:?}", r.name, r.cosine);
    }
}

#[test]
fn t_gradient_and_filters_resolve_as_mergekit() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = pair(tmp.path(), &Tiny::new(5, 3), &Tiny::new(5, 4));
    let (wa, wb) = (read(&da), read(&db));
    let out = tmp.path().join("out");
    // x = 0, .25, .5, .75, 1 over 5 layers → 0, 0.5, 1, 0.6, 0.2; embeddings 0; norm/lm_head 0.2.
    let s = merge::run(
        &[da.clone(), db.clone()],
        None,
        &slerp(TValue::List(vec![0.0, 1.0, 0.2])),
        &out,
    )
    .unwrap();
    let resolved = s.t_resolved.unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].embedding, 0.0);
    assert_eq!(resolved[0].final_, 0.2);
    for (got, want) in resolved[0].layers.iter().zip([0.0, 0.5, 1.0, 0.6, 0.2]) {
        assert!((got - want).abs() < 1e-12, "{:?}", resolved[0].layers);
    }
    let merged = read(&out);
    let r = report(&out);
    let t_of = |n: &str| r.tensors.iter().find(|t| t.name == n).unwrap().t.unwrap();
    assert_eq!(
        merged["model.embed_tokens.weight"],
        wa["model.embed_tokens.weight"]
    );
    assert_eq!(
        merged["model.layers.0.mlp.up_proj.weight"],
        wa["model.layers.0.mlp.up_proj.weight"]
    );
    assert_eq!(
        merged["model.layers.2.self_attn.q_proj.weight"],
        wb["model.layers.2.self_attn.q_proj.weight"]
    );
    assert!((t_of("model.layers.3.mlp.down_proj.weight") - 0.6).abs() < 1e-12);
    assert!((t_of("lm_head.weight") - 0.2).abs() < 1e-12);
    assert_ne!(merged["lm_head.weight"], wa["lm_head.weight"]);

    // Filters: attention from a, MLP from b, the rest halfway.
    let t: TValue = serde_json::from_value(json!([
        {"filter": "self_attn", "value": 0.0},
        {"filter": "mlp", "value": [1.0, 1.0]},
        {"value": 0.5}
    ]))
    .unwrap();
    let out = tmp.path().join("out-filter");
    let s = merge::run(&[da, db], None, &slerp(t), &out).unwrap();
    assert_eq!(s.t_resolved.unwrap().len(), 3);
    let merged = read(&out);
    for l in 0..5 {
        let q = format!("model.layers.{l}.self_attn.k_proj.weight");
        let g = format!("model.layers.{l}.mlp.gate_proj.weight");
        let n = format!("model.layers.{l}.input_layernorm.weight");
        assert_eq!(merged[&q], wa[&q]);
        assert_eq!(merged[&g], wb[&g]);
        assert_ne!(merged[&n], wa[&n]);
        assert_ne!(merged[&n], wb[&n]);
    }
    let r = report(&out);
    assert!(r
        .tensors
        .iter()
        .filter(|t| t.name.contains("norm"))
        .all(|t| t.t == Some(0.5)));
}

#[test]
fn linear_weights_and_two_model_lerp() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = pair(tmp.path(), &Tiny::new(2, 5), &Tiny::new(2, 6));
    let (wa, wb) = (read(&da), read(&db));
    let weighted = |w: Vec<f64>, normalize: bool, out: &str| {
        let out = tmp.path().join(out);
        let p = MergeParams {
            method: MergeMethod::Linear,
            weights: Some(w),
            normalize: Some(normalize),
            ..MergeParams::default()
        };
        let s = merge::run(&[da.clone(), db.clone()], None, &p, &out).unwrap();
        assert_eq!(s.fallback_count, 0);
        read(&out)
    };
    let m = weighted(vec![1.0, 3.0], true, "w13");
    let raw = weighted(vec![1.0, 3.0], false, "w13raw");
    for n in wa.keys() {
        for i in 0..wa[n].len() {
            let (a, b) = (wa[n][i], wb[n][i]);
            assert!((m[n][i] - (a + 3.0 * b) / 4.0).abs() < 1e-6);
            assert!((raw[n][i] - (a + 3.0 * b)).abs() < 1e-6);
        }
    }
    // No weights, two models: (1 - t)·a + t·b with t per tensor.
    let out = tmp.path().join("lerp");
    let p = MergeParams {
        method: MergeMethod::Linear,
        t: TValue::Scalar(0.25),
        ..MergeParams::default()
    };
    merge::run(&[da.clone(), db.clone()], None, &p, &out).unwrap();
    let m = read(&out);
    for n in wa.keys() {
        for i in 0..wa[n].len() {
            let want = 0.75 * wa[n][i] + 0.25 * wb[n][i];
            assert!((m[n][i] - want).abs() < 1e-6);
        }
    }
    // Wrong weight count, zero-sum weights, slerp with 3 models.
    let p = MergeParams {
        method: MergeMethod::Linear,
        weights: Some(vec![1.0]),
        ..MergeParams::default()
    };
    let e = err_text(merge::run(
        &[da.clone(), db.clone()],
        None,
        &p,
        &tmp.path().join("x"),
    ));
    assert!(e.contains("weights has 1 values for 2 models"), "{e}");
    let p = MergeParams {
        method: MergeMethod::Linear,
        weights: Some(vec![1.0, -1.0]),
        ..MergeParams::default()
    };
    let e = err_text(merge::run(
        &[da.clone(), db.clone()],
        None,
        &p,
        &tmp.path().join("x"),
    ));
    assert!(e.contains("sum to 0"), "{e}");
    let e = err_text(merge::run(
        &[da.clone(), db.clone(), da.clone()],
        None,
        &slerp(TValue::Scalar(0.5)),
        &tmp.path().join("x"),
    ));
    assert!(e.contains("exactly 2 models, got 3"), "{e}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn mismatched_models_are_refused_with_the_difference_named() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Tiny::new(2, 1);
    let da = tmp.path().join("a");
    a.write(&da);
    let out = tmp.path().join("out");
    let check = |b: &Path, want: &[&str]| {
        let e = err_text(merge::run(
            &[da.clone(), b.to_path_buf()],
            None,
            &slerp(TValue::Scalar(0.5)),
            &out,
        ));
        for w in want {
            assert!(e.contains(w), "`{w}` not in: {e}");
        }
        assert!(!out.exists());
    };
    // Different layer count.
    let d = tmp.path().join("layers");
    Tiny::new(3, 2).write(&d);
    check(&d, &["num_hidden_layers", "is 2 in", "but 3 in"]);
    // Different hidden size.
    let d = tmp.path().join("hidden");
    let mut b = Tiny::new(2, 2);
    b.hidden = 12;
    b.write(&d);
    check(&d, &["hidden_size", "is 8 in", "but 12 in"]);
    // Different config vocab_size.
    let d = tmp.path().join("vocab_size");
    let mut b = Tiny::new(2, 2);
    b.vocab = 20;
    b.write(&d);
    check(&d, &["vocab_size", "is 16 in", "but 20 in"]);
    // A tensor missing from b (config unchanged).
    let d = tmp.path().join("missing");
    let mut tb = a.tensors();
    tb.remove("model.layers.1.mlp.down_proj.weight");
    a.write_with(&d, &tb);
    check(
        &d,
        &[
            "model.layers.1.mlp.down_proj.weight",
            "missing from",
            "missing",
        ],
    );
    // Same config, a tensor of another shape.
    let d = tmp.path().join("shape");
    let mut tb = a.tensors();
    tb.insert("model.norm.weight".into(), (vec![4], vec![1.0; 4]));
    a.write_with(&d, &tb);
    check(&d, &["model.norm.weight", "shape [8]", "[4]"]);
    // Same sizes, different vocabulary (two tokens swapped).
    let d = tmp.path().join("tokens");
    Tiny::new(2, 2).write(&d);
    let mut toks = tokens(16);
    toks.swap(5, 6);
    write_tokenizer(&d, &toks);
    check(
        &d,
        &[
            "tokenizer vocabularies differ",
            "\"w5\" is id 5",
            "id 6",
            "tokenizer.json",
        ],
    );
    // A model directory that does not exist.
    check(&tmp.path().join("nope"), &["nope"]);
}

#[test]
fn merged_directory_loads_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Tiny::new(2, 8);
    a.tie = true;
    let mut b = Tiny::new(2, 9);
    b.tie = true;
    let (da, db) = pair(tmp.path(), &a, &b);
    let out = tmp.path().join("merged");
    merge::run(&[da.clone(), db], None, &slerp(TValue::Scalar(0.5)), &out).unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(da.join(f)).unwrap(),
            "{f}"
        );
    }
    let m = open_model(&out).unwrap();
    assert_eq!(m.model.config.num_hidden_layers, 2);
    let ids = m.tokenizer.encode("w3 w4 w5 w9", false).unwrap();
    assert_eq!(ids, [3, 4, 5, 9]);
    let tokens = candle_core::Tensor::new(&ids[..], &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let f = m.model.forward(&tokens, ForwardOptions::default()).unwrap();
    let logits = m.model.logits(&f.last_hidden).unwrap();
    assert_eq!(logits.dims(), &[1, 4, 16]);
    let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));

    // Re-running into an earlier merge output replaces it; other non-empty dirs are refused.
    merge::run(
        &[da.clone(), tmp.path().join("b")],
        None,
        &slerp(TValue::Scalar(0.0)),
        &out,
    )
    .unwrap();
    assert_same(&read(&out), &read(&da), "re-run at t = 0");
    let e = err_text(merge::run(
        &[da.clone(), tmp.path().join("b")],
        None,
        &slerp(TValue::Scalar(0.5)),
        tmp.path(),
    ));
    assert!(e.contains("refusing to replace"), "{e}");
    let e = err_text(merge::run(
        &[da.clone(), tmp.path().join("b")],
        None,
        &slerp(TValue::Scalar(0.5)),
        &da,
    ));
    assert!(e.contains("is one of the inputs"), "{e}");
    assert!(da.join("model.safetensors").exists());
}

#[test]
fn cli_merges_with_a_gradient_and_rejects_bad_t() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = pair(tmp.path(), &Tiny::new(3, 1), &Tiny::new(3, 2));
    let out = tmp.path().join("out");
    let bin = env!("CARGO_BIN_EXE_pruneforge");
    let o = std::process::Command::new(bin)
        .args(["merge", "--models"])
        .args([&da, &db])
        .args(["--t", "0,1", "--t-filter", "mlp=1", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: merge::MergeSummary = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary.tensors, read(&da).len());
    let r = report(&out);
    let layers: Vec<f64> = r.t_resolved.as_ref().unwrap()[1].layers.clone();
    assert_eq!(layers, [0.0, 0.5, 1.0]);
    assert!(r
        .tensors
        .iter()
        .filter(|t| t.name.contains(".mlp."))
        .all(|t| t.t == Some(1.0)));
    let o = std::process::Command::new(bin)
        .args(["merge", "--models"])
        .args([&da, &db])
        .args(["--t", "0,x", "--out"])
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`x` is not a number"), "{err}");
}

/// Merging the embedded SmolLM2 with itself: every tensor takes the lerp fallback, the result
/// equals the original, and the merged directory produces the same logits.
#[test]
fn embedded_model_merged_with_itself_is_unchanged() {
    let dir = common::embedded_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    let s = merge::run(
        &[dir.clone(), dir.clone()],
        None,
        &slerp(TValue::List(vec![0.2, 0.8])),
        &out,
    )
    .unwrap();
    assert_eq!(s.fallback_count, s.tensors);
    let orig = open_model(&dir).unwrap();
    let merged = open_model(&out).unwrap();
    let ids = orig
        .tokenizer
        .encode("The capital of France is", false)
        .unwrap();
    let tokens = candle_core::Tensor::new(&ids[..], &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let run = |m: &pruneforge::loader::HfModel| -> Vec<f32> {
        let f = m.model.forward(&tokens, ForwardOptions::default()).unwrap();
        m.model
            .logits(&f.last_hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, b) = (run(&orig), run(&merged));
    let max = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(max < 1e-4, "max logit difference {max}");
    assert!(merged.tokenizer.has_chat_template());
}

// ---------------------------------------------------------------------------------------------
// Task-vector methods: a pruned base and fine-tuned models made from it by hand.

type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

const NORM: &str = "model.norm.weight";

/// The base (`model.norm.weight` = 1 everywhere) and one fine-tuned model per entry of
/// `norms`: base + 0.25·noise for every tensor, and `model.norm.weight` = the entry, so that
/// its task vector is the entry minus 1.
fn task_vector_models(tmp: &Path, norms: &[[f32; 8]]) -> (PathBuf, Vec<PathBuf>) {
    task_vector_models_keeping(tmp, norms, &[])
}

/// [`task_vector_models`] where the fine-tuned models keep the base's `untouched` tensors (as
/// LoRA leaves the tensors it does not adapt).
fn task_vector_models_keeping(
    tmp: &Path,
    norms: &[[f32; 8]],
    untouched: &[&str],
) -> (PathBuf, Vec<PathBuf>) {
    let shape = Tiny::new(2, 40);
    let mut base = shape.tensors();
    base.insert(NORM.into(), (vec![8], vec![1.0; 8]));
    let base_dir = tmp.join("pruned");
    shape.write_with(&base_dir, &base);
    let models = norms
        .iter()
        .enumerate()
        .map(|(i, norm)| {
            let noise = Tiny::new(2, 50 + i as u64).tensors();
            let mut model: Tensors = base
                .iter()
                .map(|(n, (shape, b))| {
                    let v = if untouched.contains(&n.as_str()) {
                        b.clone()
                    } else {
                        b.iter()
                            .zip(&noise[n].1)
                            .map(|(&b, &e)| b + 0.25 * e)
                            .collect()
                    };
                    (n.clone(), (shape.clone(), v))
                })
                .collect();
            model.insert(NORM.into(), (vec![8], norm.to_vec()));
            let dir = tmp.join(format!("finetuned-{i}"));
            shape.write_with(&dir, &model);
            dir
        })
        .collect();
    (base_dir, models)
}

/// mergekit `get_task_vectors`: `x - base`, in float32 as mergekit computes it.
fn task_vector(base: &[f32], x: &[f32]) -> Vec<f64> {
    x.iter()
        .zip(base)
        .map(|(&x, &b)| f64::from(x - b))
        .collect()
}

/// mergekit `magnitude`: the int(density · n) largest |τ| kept (equal magnitudes: lower index).
fn magnitude_reference(tau: &[f64], density: f64) -> Vec<f64> {
    if density >= 1.0 {
        return tau.to_vec();
    }
    let k = (density * tau.len() as f64) as usize;
    let mut order: Vec<usize> = (0..tau.len()).collect();
    order.sort_by(|&a, &b| tau[b].abs().total_cmp(&tau[a].abs()));
    let mut out = vec![0.0; tau.len()];
    for &i in &order[..k] {
        out[i] = tau[i];
    }
    out
}

/// mergekit `GTATask.execute` for task_arithmetic (`ties: None`) or ties (`Some(density)`).
fn gta_reference(
    base: &[f32],
    models: &[&[f32]],
    weights: &[f64],
    lambda: f64,
    normalize: bool,
    ties: Option<f64>,
) -> Vec<f64> {
    let deltas: Vec<Vec<f64>> = models
        .iter()
        .zip(weights)
        .map(|(x, w)| {
            let tau = task_vector(base, x);
            let tau = match ties {
                Some(density) => magnitude_reference(&tau, density),
                None => tau,
            };
            tau.iter().map(|t| t * w).collect()
        })
        .collect();
    (0..base.len())
        .map(|i| {
            let sum: f64 = deltas.iter().map(|d| d[i]).sum();
            let (mixed, divisor) = if ties.is_some() {
                let elected = if sum >= 0.0 { 1.0 } else { -1.0 };
                let agree: Vec<usize> = (0..deltas.len())
                    .filter(|&m| deltas[m][i] != 0.0 && deltas[m][i].signum() == elected)
                    .collect();
                let mixed: f64 = agree.iter().map(|&m| deltas[m][i]).sum();
                let divisor: f64 = agree.iter().map(|&m| weights[m]).sum();
                (mixed, if divisor == 0.0 { 1.0 } else { divisor })
            } else {
                let divisor: f64 = weights.iter().sum();
                (sum, if divisor.abs() < 1e-8 { 1.0 } else { divisor })
            };
            let merged = if normalize { mixed / divisor } else { mixed };
            f64::from(base[i]) + lambda * merged
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= tol,
            "{what}[{i}]: {g} but mergekit's formula gives {w}"
        );
    }
}

fn task_vector_params(method: MergeMethod) -> MergeParams {
    MergeParams {
        method,
        ..MergeParams::default()
    }
}

#[test]
fn task_arithmetic_adds_weighted_task_vectors_to_the_pruned_base() {
    let tmp = tempfile::tempdir().unwrap();
    // Task vectors of model.norm.weight: τ₀ = (0.5, 0, -0.5, 1, 0, 0, 0, 0),
    // τ₁ = (-0.5, 0, 1, 0, 0, 2, 0, 0).
    let (base, models) = task_vector_models(
        tmp.path(),
        &[
            [1.5, 1.0, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0],
            [0.5, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0],
        ],
    );
    let (wb, w0, w1) = (read(&base), read(&models[0]), read(&models[1]));
    let run = |weights: Option<Vec<f64>>, lambda: f64, normalize: Option<bool>, out: &str| {
        let out = tmp.path().join(out);
        let p = MergeParams {
            weights,
            lambda,
            normalize,
            ..task_vector_params(MergeMethod::TaskArithmetic)
        };
        let s = merge::run(&models, Some(&base), &p, &out).unwrap();
        assert_eq!(s.base, base.display().to_string());
        assert_eq!(s.models.len(), 3, "the base and two fine-tuned models");
        (read(&out), report(&out))
    };

    // weights (1, 0.5), λ = 0.8, not normalised (task_arithmetic's default):
    // Σ wτ = (0.25, 0, 0, 1, 0, 1, 0, 0); 1 + 0.8·Σ = (1.2, 1, 1, 1.8, 1, 1.8, 1, 1).
    let (m, r) = run(Some(vec![1.0, 0.5]), 0.8, None, "ta");
    assert_close(
        &m[NORM],
        &[1.2, 1.0, 1.0, 1.8, 1.0, 1.8, 1.0, 1.0],
        1e-6,
        NORM,
    );
    for (n, v) in &m {
        let want = gta_reference(&wb[n], &[&w0[n], &w1[n]], &[1.0, 0.5], 0.8, false, None);
        assert_close(v, &want, 1e-5, n);
    }
    assert_eq!(r.method, MergeMethod::TaskArithmetic);
    assert_eq!(r.weights, Some(vec![1.0, 0.5]));
    assert_eq!(r.normalize, Some(false));
    assert_eq!(r.total_sign_conflicts, None);
    let norm = r.tensors.iter().find(|t| t.name == NORM).unwrap();
    let norms = norm.task_vector_norms.as_ref().unwrap();
    assert!((norms[0] - 1.5f64.sqrt()).abs() < 1e-6, "{norms:?}");
    assert!((norms[1] - 5.25f64.sqrt()).abs() < 1e-6, "{norms:?}");
    assert!(norm.t.is_none() && norm.cosine.is_none() && norm.sign_conflicts.is_none());

    // normalize: divided by Σ w = 1.5: 1 + 0.8·Σ/1.5.
    let (m, r) = run(Some(vec![1.0, 0.5]), 0.8, Some(true), "ta-normalized");
    assert_eq!(r.normalize, Some(true));
    let want: Vec<f64> = [0.25, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        .iter()
        .map(|s| 1.0 + 0.8 * s / 1.5)
        .collect();
    assert_close(&m[NORM], &want, 1e-6, NORM);
    for (n, v) in &m {
        let want = gta_reference(&wb[n], &[&w0[n], &w1[n]], &[1.0, 0.5], 0.8, true, None);
        assert_close(v, &want, 1e-5, n);
    }

    // Default weights (1 each) and λ = 1: base + τ₀ + τ₁.
    let (m, _) = run(None, 1.0, None, "ta-default");
    assert_close(
        &m[NORM],
        &[1.0, 1.0, 1.5, 2.0, 1.0, 3.0, 1.0, 1.0],
        1e-6,
        NORM,
    );
    // λ = 0 gives the base back exactly.
    let (m, _) = run(Some(vec![1.0, 0.5]), 0.0, None, "ta-zero");
    assert_same(&m, &wb, "lambda 0");
}

#[test]
fn ties_sparsifies_elects_signs_and_divides_by_agreeing_weights() {
    let tmp = tempfile::tempdir().unwrap();
    // Task vectors of model.norm.weight (base 1) and what density 0.5 (k = 4) keeps:
    //   τ₀ = ( 4, -1,  3,  0.5, -2,    0.1, 0,   1.5 ) → ( 4, 0,  3, 0, -2,    0,  0,  1.5)
    //   τ₁ = (-3,  2,  1, -0.25,-1.25, 0.2, 0.5,-2.5 ) → (-3, 2,  0, 0, -1.25, 0,  0, -2.5)
    //   τ₂ = ( 1, -0.5,-4, 2,    0.25,-3,   0,   0.75) → ( 1, 0, -4, 2,  0,   -3,  0,  0  )
    // weights (1, 1, 0.5): δ₂ = (0.5, 0, -2, 1, 0, -1.5, 0, 0);
    // Σ δ = (1.5, 2, 1, 1, -3.25, -1.5, 0, -1) → elected (+, +, +, +, -, -, +, -).
    //   entry 0: δ₀ 4 and δ₂ 0.5 agree (weights 1 + 0.5), δ₁ -3 does not: 4.5 / 1.5 = 3
    //   entry 1: δ₁ 2 alone: 2 / 1 = 2
    //   entry 2: δ₀ 3 agrees, δ₂ -2 does not: 3 / 1 = 3
    //   entry 3: δ₂ 1 alone (weight 0.5): 1 / 0.5 = 2
    //   entry 4: δ₀ -2 and δ₁ -1.25: -3.25 / 2 = -1.625
    //   entry 5: δ₂ -1.5 alone: -1.5 / 0.5 = -3
    //   entry 6: nothing kept: 0 (divisor 0 counts as 1)
    //   entry 7: δ₁ -2.5 agrees, δ₀ 1.5 does not: -2.5 / 1 = -2.5
    // Normalised, λ = 1: 1 + (3, 2, 3, 2, -1.625, -3, 0, -2.5); sign conflicts: entries 0, 2, 7.
    let (base, models) = task_vector_models(
        tmp.path(),
        &[
            [5.0, 0.0, 4.0, 1.5, -1.0, 1.1, 1.0, 2.5],
            [-2.0, 3.0, 2.0, 0.75, -0.25, 1.2, 1.5, -1.5],
            [2.0, 0.5, -3.0, 3.0, 1.25, -2.0, 1.0, 1.75],
        ],
    );
    let wb = read(&base);
    let ws: Vec<_> = models.iter().map(|m| read(m)).collect();
    let weights = vec![1.0, 1.0, 0.5];
    let run = |lambda: f64, normalize: Option<bool>, out: &str| {
        let out = tmp.path().join(out);
        let p = MergeParams {
            weights: Some(weights.clone()),
            density: 0.5,
            lambda,
            normalize,
            ..task_vector_params(MergeMethod::Ties)
        };
        let s = merge::run(&models, Some(&base), &p, &out).unwrap();
        (read(&out), report(&out), s)
    };

    let (m, r, s) = run(1.0, None, "ties");
    assert_close(
        &m[NORM],
        &[4.0, 3.0, 4.0, 3.0, -0.625, -2.0, 1.0, -1.5],
        1e-6,
        NORM,
    );
    for (n, v) in &m {
        let xs: Vec<&[f32]> = ws.iter().map(|w| w[n].as_slice()).collect();
        let want = gta_reference(&wb[n], &xs, &weights, 1.0, true, Some(0.5));
        assert_close(v, &want, 1e-5, n);
    }
    assert_eq!(r.normalize, Some(true), "ties normalises by default");
    let norm = r.tensors.iter().find(|t| t.name == NORM).unwrap();
    assert_eq!(norm.sign_conflicts, Some(3));
    assert_eq!(norm.kept_per_model, Some(4));
    for t in &r.tensors {
        let elements: usize = t.shape.iter().product();
        assert_eq!(t.kept_per_model, Some(elements / 2), "{}", t.name);
        assert_eq!(t.task_vector_norms.as_ref().map(Vec::len), Some(3));
    }
    let total: usize = r.tensors.iter().filter_map(|t| t.sign_conflicts).sum();
    assert_eq!(r.total_sign_conflicts, Some(total));
    assert_eq!(s.sign_conflicts, Some(total));
    assert!(total > 3, "random task vectors disagree somewhere");

    // Not normalised, λ = 2: 1 + 2·(4.5, 2, 3, 1, -3.25, -1.5, 0, -2.5).
    let (m, _, _) = run(2.0, Some(false), "ties-raw");
    assert_close(
        &m[NORM],
        &[10.0, 5.0, 7.0, 3.0, -5.5, -2.0, 1.0, -4.0],
        1e-6,
        NORM,
    );
    for (n, v) in &m {
        let xs: Vec<&[f32]> = ws.iter().map(|w| w[n].as_slice()).collect();
        let want = gta_reference(&wb[n], &xs, &weights, 2.0, false, Some(0.5));
        assert_close(v, &want, 1e-5, n);
    }

    // Task arithmetic on the same models differs: no sparsification, no election.
    let out = tmp.path().join("ta");
    let p = MergeParams {
        weights: Some(weights.clone()),
        normalize: Some(true),
        ..task_vector_params(MergeMethod::TaskArithmetic)
    };
    merge::run(&models, Some(&base), &p, &out).unwrap();
    assert_ne!(read(&out)[NORM], m[NORM]);
}

/// mergekit `nuslerp(t, τ₀, τ₁)` (flattened) written out: SLERP of the task vectors.
fn slerp_of_task_vectors(t: f64, base: &[f32], x0: &[f32], x1: &[f32]) -> Vec<f64> {
    let (v0, v1) = (task_vector(base, x0), task_vector(base, x1));
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-7);
    let dot: f64 = v0.iter().zip(&v1).map(|(a, b)| a * b).sum();
    let theta = (dot / (norm(&v0) * norm(&v1))).clamp(-1.0, 1.0).acos();
    let (c0, c1) = if theta.sin().abs() < 1e-8 {
        (1.0 - t, t)
    } else {
        (
            ((1.0 - t) * theta).sin() / theta.sin(),
            (t * theta).sin() / theta.sin(),
        )
    };
    (0..base.len())
        .map(|i| f64::from(base[i]) + c0 * v0[i] + c1 * v1[i])
        .collect()
}

#[test]
fn nuslerp_is_a_slerp_of_the_task_vectors_added_to_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    // Orthogonal task vectors of model.norm.weight: τ₀ = (2, 0, …), τ₁ = (0, 3, …): θ = π/2, at
    // t = 0.5 both coefficients are sin(π/4): 1 + (2, 3)·0.70710678.
    let mut norm0 = [1.0f32; 8];
    norm0[0] = 3.0;
    let mut norm1 = [1.0f32; 8];
    norm1[1] = 4.0;
    // A tensor neither fine-tune changed (as LoRA leaves the embeddings): both task vectors 0.
    let untouched = "model.embed_tokens.weight";
    let (base, models) = task_vector_models_keeping(tmp.path(), &[norm0, norm1], &[untouched]);
    let (wb, w0, w1) = (read(&base), read(&models[0]), read(&models[1]));
    for t in [0.5, 0.3] {
        let out = tmp.path().join(format!("nuslerp-{t}"));
        let p = MergeParams {
            t: TValue::Scalar(t),
            ..task_vector_params(MergeMethod::Nuslerp)
        };
        let s = merge::run(&models, Some(&base), &p, &out).unwrap();
        assert_eq!(s.fallback_count, 0);
        let m = read(&out);
        for (n, v) in &m {
            let want = slerp_of_task_vectors(t, &wb[n], &w0[n], &w1[n]);
            assert_close(v, &want, 1e-5, n);
        }
        let h = (t * std::f64::consts::FRAC_PI_2).sin();
        let c = ((1.0 - t) * std::f64::consts::FRAC_PI_2).sin();
        let mut want = vec![1.0; 8];
        want[0] = 1.0 + 2.0 * c;
        want[1] = 1.0 + 3.0 * h;
        assert_close(&m[NORM], &want, 1e-6, NORM);
        assert_eq!(
            m[untouched], wb[untouched],
            "unchanged tensors stay the base's"
        );
        let r = report(&out);
        let norm = r.tensors.iter().find(|x| x.name == NORM).unwrap();
        assert_eq!(norm.cosine, Some(0.0));
        assert_eq!(norm.t, Some(t));
        assert_eq!(norm.task_vector_norms, Some(vec![2.0, 3.0]));
        // Not a SLERP of the models themselves: the base matters.
        let direct = tmp.path().join(format!("slerp-{t}"));
        merge::run(&models, None, &slerp(TValue::Scalar(t)), &direct).unwrap();
        assert_ne!(read(&direct)[NORM], m[NORM]);
    }
}

#[test]
fn task_vector_methods_refuse_what_they_cannot_merge() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, models) = task_vector_models(tmp.path(), &[[1.5; 8], [0.5; 8], [2.0; 8]]);
    let out = tmp.path().join("out");
    let two = &models[..2];
    let fails = |models: &[PathBuf], base: Option<&Path>, p: MergeParams, want: &[&str]| {
        let e = err_text(merge::run(models, base, &p, &out));
        for w in want {
            assert!(e.contains(w), "`{w}` not in: {e}");
        }
        assert!(!out.exists());
    };
    for method in [
        MergeMethod::Nuslerp,
        MergeMethod::TaskArithmetic,
        MergeMethod::Ties,
    ] {
        fails(
            two,
            None,
            task_vector_params(method),
            &[method.as_str(), "give the base model", "--base"],
        );
        fails(
            &[models[0].clone(), base.clone()],
            Some(&base),
            task_vector_params(method),
            &["is also among the models to merge", "pruned"],
        );
    }
    fails(
        &models,
        Some(&base),
        task_vector_params(MergeMethod::Nuslerp),
        &["nuslerp merges exactly 2 models besides the base, got 3"],
    );
    fails(
        two,
        Some(&base),
        MergeParams {
            weights: Some(vec![1.0]),
            ..task_vector_params(MergeMethod::Ties)
        },
        &["weights has 1 values for 2 models"],
    );
    fails(
        two,
        Some(&base),
        MergeParams {
            weights: Some(vec![1.0, 1.0]),
            ..task_vector_params(MergeMethod::Nuslerp)
        },
        &["weights apply to methods linear, task-arithmetic and ties"],
    );
    fails(
        two,
        Some(&base),
        MergeParams {
            density: 0.5,
            ..task_vector_params(MergeMethod::TaskArithmetic)
        },
        &["density applies to method ties only"],
    );
    fails(
        two,
        None,
        MergeParams {
            lambda: 2.0,
            ..slerp(TValue::Scalar(0.5))
        },
        &["lambda applies to methods task-arithmetic and ties"],
    );
    fails(
        two,
        None,
        MergeParams {
            normalize: Some(false),
            ..slerp(TValue::Scalar(0.5))
        },
        &["normalize applies to", "slerp has no such setting"],
    );
    fails(
        two,
        Some(&base),
        MergeParams {
            weights: Some(vec![1.0, -1.0]),
            normalize: Some(true),
            ..task_vector_params(MergeMethod::TaskArithmetic)
        },
        &["sum to 0", "normalize: false"],
    );
    for density in [0.0, 1.5, f64::NAN] {
        fails(
            two,
            Some(&base),
            MergeParams {
                density,
                ..task_vector_params(MergeMethod::Ties)
            },
            &["density must be greater than 0 and at most 1"],
        );
    }
    // int(0.1 · 8) = 0: the norms of 8 elements would lose every entry (mergekit asserts).
    fails(
        two,
        Some(&base),
        MergeParams {
            density: 0.1,
            ..task_vector_params(MergeMethod::Ties)
        },
        &[
            "norm.weight",
            "keeps no entry",
            "raise density to at least 0.125",
        ],
    );
    // Zero-sum weights without normalising are fine.
    let p = MergeParams {
        weights: Some(vec![1.0, -1.0]),
        ..task_vector_params(MergeMethod::TaskArithmetic)
    };
    merge::run(two, Some(&base), &p, &out).unwrap();
}

#[test]
fn cli_merges_with_ties_and_requires_a_base() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, models) = task_vector_models(tmp.path(), &[[1.5; 8], [0.5; 8]]);
    let bin = env!("CARGO_BIN_EXE_pruneforge");
    let out = tmp.path().join("out");
    let o = std::process::Command::new(bin)
        .args(["merge", "--method", "ties", "--base"])
        .arg(&base)
        .arg("--models")
        .args(&models)
        .args([
            "--weights",
            "-0.5,2",
            "--density",
            "0.5",
            "--lambda",
            "1.5",
            "--no-normalize",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: merge::MergeSummary = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary.method, MergeMethod::Ties);
    assert_eq!(summary.weights, Some(vec![-0.5, 2.0]));
    let r = report(&out);
    assert_eq!(r.params.density, 0.5);
    assert_eq!(r.params.lambda, 1.5);
    assert_eq!(r.params.normalize, Some(false));
    let (wb, w0, w1) = (read(&base), read(&models[0]), read(&models[1]));
    for (n, v) in read(&out) {
        let want = gta_reference(
            &wb[&n],
            &[&w0[&n], &w1[&n]],
            &[-0.5, 2.0],
            1.5,
            false,
            Some(0.5),
        );
        assert_close(&v, &want, 1e-5, &n);
    }
    // --normalize for task-arithmetic.
    let out = tmp.path().join("out-ta");
    let o = std::process::Command::new(bin)
        .args([
            "merge",
            "--method",
            "task-arithmetic",
            "--normalize",
            "--base",
        ])
        .arg(&base)
        .arg("--models")
        .args(&models)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report(&out).normalize, Some(true));
    // No --base.
    let o = std::process::Command::new(bin)
        .args(["merge", "--method", "nuslerp", "--models"])
        .args(&models)
        .arg("--out")
        .arg(tmp.path().join("bad"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--method nuslerp") && err.contains("give --base"),
        "{err}"
    );
    assert!(!tmp.path().join("bad").exists());
}

/// Through the stage contract: the request's `base` input (the pruned model) is the base of
/// the task vectors and `model-0`, `model-1` the fine-tuned models.
#[test]
fn stage_request_merges_task_vectors_against_the_pruned_input() {
    use pruneforge::resolve::Resolver;
    use pruneforge::stages::{ShardRun, StageContext};
    use pruneforge_api::params;
    use pruneforge_api::spec::RecoveryMethod;

    let tmp = tempfile::tempdir().unwrap();
    let (base, models) = task_vector_models(
        tmp.path(),
        &[
            [1.5, 1.0, 0.5, 2.0, 1.0, 1.0, 1.0, 1.0],
            [0.5, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0],
        ],
    );
    let inputs: BTreeMap<String, PathBuf> = [
        ("base".to_string(), base.clone()),
        ("model-0".to_string(), models[0].clone()),
        ("model-1".to_string(), models[1].clone()),
    ]
    .into();
    let out = tmp.path().join("out");
    let work = tmp.path().join("work");
    let resolver = Resolver::local();
    let compute = pruneforge::device::Compute::cpu();
    let ctx = StageContext {
        inputs: &inputs,
        work: &work,
        out: &out,
        resolver: &resolver,
        shards: ShardRun::All { count: 1 },
        compute: &compute,
        resume: None,
    };
    let request = params::MergeParams {
        block_size: 1,
        width_variant: None,
        method: MergeMethod::TaskArithmetic,
        t: 0.5,
        t_gradient: Vec::new(),
        models: vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill],
        datasets: Vec::new(),
        weights: vec![1.0, 0.5],
        density: 1.0,
        lambda: 0.8,
        normalize: None,
    };
    merge::run_request(&request, &ctx).unwrap();
    // As in task_arithmetic_adds_weighted_task_vectors_to_the_pruned_base.
    assert_close(
        &read(&out)[NORM],
        &[1.2, 1.0, 1.0, 1.8, 1.0, 1.8, 1.0, 1.0],
        1e-6,
        NORM,
    );
    let r = report(&out);
    assert_eq!(r.inputs[0].path, base.display().to_string());
    assert_eq!(r.inputs.len(), 3);
}
