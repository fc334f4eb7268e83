//! Parity of our model, tokenizer and importer with PyTorch/transformers on the embedded
//! SmolLM2-135M-Instruct (../shared/reference).

mod common;

use candle_core::{Device, Tensor};
use common::*;
use pruneforge::model::ForwardOptions;
use sha2::{Digest, Sha256};

#[test]
fn imported_weights_match_reference_digests() {
    let dir = embedded_dir();
    let refs = read_json("weights_sha256.json");
    let weights = pruneforge::model::safetensors_io::SafetensorsWeights::open_dir(
        &dir,
        candle_core::DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let tensors = refs["tensors"].as_object().unwrap();
    for (name, info) in tensors {
        let (values, shape) = weights
            .load_f32(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want_shape: Vec<usize> = info["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(shape, want_shape, "{name} shape");
        let mut h = Sha256::new();
        for v in &values {
            h.update(v.to_le_bytes());
        }
        assert_eq!(
            hex::encode(h.finalize()),
            info["sha256_f32_le"].as_str().unwrap(),
            "{name} digest"
        );
    }
    assert_eq!(weights.names().len(), tensors.len());
}

#[test]
fn tokenizer_matches_reference_ids_and_template() {
    let m = embedded_model();
    let logits = read_json("logits.json");
    for p in logits["prompts"].as_array().unwrap() {
        let want: Vec<u32> = p["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = match p["kind"].as_str().unwrap() {
            "plain" => m
                .tokenizer
                .encode(p["text"].as_str().unwrap(), false)
                .unwrap(),
            _ => {
                let msg =
                    pruneforge::tokenizer::ChatMessage::user(p["user_message"].as_str().unwrap());
                m.tokenizer.encode_chat(&[msg], true).unwrap()
            }
        };
        assert_eq!(ids, want, "prompt {}", p["name"]);
    }
    // Calibration ids: the first row of the reference calibration set.
    let cal = RefTensors::open("calibration_ids.safetensors").i64("input_ids");
    assert_eq!(&cal[..4], &[9215, 260, 827, 8545]);
}

#[test]
fn imported_tokenizer_json_equals_reference() {
    let ours: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(embedded_dir().join("tokenizer.json")).unwrap(),
    )
    .unwrap();
    let theirs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reference("tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    for key in ["added_tokens", "pre_tokenizer", "normalizer", "decoder"] {
        assert_eq!(ours[key], theirs[key], "tokenizer.json `{key}`");
    }
    assert_eq!(ours["model"]["vocab"], theirs["model"]["vocab"]);
    assert_eq!(ours["model"]["merges"], theirs["model"]["merges"]);
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check_model(m: &pruneforge::model::Llama, tag: &str) {
    let refs = RefTensors::open("logits.safetensors");
    for p in REFERENCE_PROMPTS {
        let ids: Vec<u32> = refs
            .i64(&format!("{p}/input_ids"))
            .iter()
            .map(|&v| v as u32)
            .collect();
        let t = ids.len();
        let tokens = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
        let out = m
            .forward(
                &tokens,
                ForwardOptions {
                    hidden_states: true,
                    train: false,
                },
            )
            .unwrap();
        let last = out.last_hidden.narrow(1, t - 1, 1).unwrap();
        let logits = m
            .logits(&last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = refs.f32(&format!("{p}/{tag}/logits_last"));
        let diff = max_abs(&logits, &want);
        assert!(diff < 1e-3, "{p}/{tag}: max |logit diff| {diff}");
        let norms = refs.f64(&format!("{p}/{tag}/hidden_norms_last"));
        assert_eq!(norms.len(), out.hidden_states.len());
        for (l, (h, want)) in out.hidden_states.iter().zip(&norms).enumerate() {
            let v = h
                .narrow(1, t - 1, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let norm = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            let rel = (norm - want).abs() / want;
            assert!(
                rel < 1e-3,
                "{p}/{tag} h_{l}: norm {norm} vs {want} (rel {rel})"
            );
        }
        // Argmax at every position.
        let all = m
            .logits(&out.last_hidden)
            .unwrap()
            .argmax(candle_core::D::Minus1)
            .unwrap();
        let argmax: Vec<i64> = all
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .map(|&v| v as i64)
            .collect();
        assert_eq!(
            argmax,
            refs.i64(&format!("{p}/{tag}/argmax_all")),
            "{p}/{tag} argmax"
        );
    }
}

#[test]
fn full_model_logits_and_hidden_norms_match_pytorch() {
    let m = embedded_model();
    check_model(&m.model, "full");
}

#[test]
fn pruned_model_logits_match_pytorch() {
    let mut m = embedded_model();
    let removed = read_json("logits.json")["pruned_layers_removed"].clone();
    let removed: Vec<usize> = removed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    m.model.remove_layers(removed[0], removed.len()).unwrap();
    check_model(&m.model, "pruned");
}

#[test]
fn fused_and_generic_paths_agree_on_a_padded_batch() {
    let m = embedded_model();
    let refs = RefTensors::open("logits.safetensors");
    let rows: Vec<Vec<u32>> = reference_prompt_ids();
    let t = rows.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    for r in &rows {
        flat.extend(r);
        flat.extend(std::iter::repeat_n(2u32, t - r.len()));
    }
    let tokens = Tensor::from_vec(flat, (rows.len(), t), &Device::Cpu).unwrap();
    let fused = m
        .model
        .forward(&tokens, ForwardOptions::default())
        .unwrap()
        .last_hidden;
    let generic = m
        .model
        .forward(
            &tokens,
            ForwardOptions {
                hidden_states: false,
                train: true,
            },
        )
        .unwrap()
        .last_hidden;
    for (i, r) in rows.iter().enumerate() {
        let a = fused.get(i).unwrap().narrow(0, 0, r.len()).unwrap();
        let b = generic.get(i).unwrap().narrow(0, 0, r.len()).unwrap();
        let la = m
            .model
            .logits(&a)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let lb = m
            .model
            .logits(&b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs(&la, &lb);
        assert!(d < 1e-3, "row {i}: fused vs generic max diff {d}");
        // And the padded batch agrees with the reference (row alone, unpadded).
        let last = la[(r.len() - 1) * 49152..].to_vec();
        let want = refs.f32(&format!("{}/full/logits_last", REFERENCE_PROMPTS[i]));
        assert!(max_abs(&last, &want) < 1e-3, "row {i} padded vs reference");
    }
}
