//! Speculative decoding equals target-only greedy decoding token for token.

mod common;

use common::*;
use pruneforge::generate::sampler::SamplingParams;
use pruneforge::generate::{generate_all, GenerateParams};
use pruneforge::stages::speculate::decoder::{speculative_generate, SpecConfig};

fn reference_cases() -> Vec<(Vec<u32>, Vec<u32>)> {
    let g = read_json("generation.json");
    g["full"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = |k: &str| {
                c[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect::<Vec<_>>()
            };
            (ids("prompt_ids"), ids("new_ids"))
        })
        .collect()
}

#[test]
fn pruned_draft_reproduces_target_greedy_output() {
    let target = embedded_model();
    let mut draft = embedded_model();
    draft.model.remove_layers(13, 6).unwrap();
    let greedy = SamplingParams::default();
    for k in [1usize, 4] {
        for (prompt, want) in reference_cases() {
            let cfg = SpecConfig {
                k,
                max_new_tokens: 48,
                sampling: &greedy,
                eos: &target.tokenizer.eos_ids,
                stream: 0,
            };
            let out = speculative_generate(&target.model, &draft.model, &prompt, &cfg).unwrap();
            assert_eq!(out.tokens, want, "k={k}");
            assert!(out.accepted <= out.drafted);
            assert!(out.steps >= 1);
        }
    }
}

#[test]
fn identical_draft_accepts_everything_and_a_random_draft_changes_nothing() {
    let target = embedded_model();
    let same = embedded_model();
    let greedy = SamplingParams::default();
    let (prompt, want) = reference_cases().remove(1);
    let cfg = SpecConfig {
        k: 4,
        max_new_tokens: 48,
        sampling: &greedy,
        eos: &target.tokenizer.eos_ids,
        stream: 0,
    };
    let out = speculative_generate(&target.model, &same.model, &prompt, &cfg).unwrap();
    assert_eq!(out.tokens, want);
    assert_eq!(
        out.accepted, out.drafted,
        "a draft equal to the target is always accepted"
    );

    let tmp = tempfile::tempdir().unwrap();
    common::tiny::write_tiny_model(tmp.path(), &common::tiny::TinySpec::default());
    let tiny = pruneforge::loader::open_model(tmp.path()).unwrap();
    let out = speculative_generate(&target.model, &tiny.model, &prompt, &cfg).unwrap();
    assert_eq!(out.tokens, want, "a bad draft only costs speed");
    assert!(out.accepted < out.drafted);
}

#[test]
fn sampled_speculation_is_seeded_and_valid() {
    let target = embedded_model();
    let mut draft = embedded_model();
    draft.model.remove_layers(13, 6).unwrap();
    let sampling = SamplingParams {
        temperature: 0.7,
        top_p: 0.9,
        top_k: 0,
        seed: 5,
    };
    let (prompt, _) = reference_cases().remove(0);
    let cfg = SpecConfig {
        k: 3,
        max_new_tokens: 24,
        sampling: &sampling,
        eos: &target.tokenizer.eos_ids,
        stream: 7,
    };
    let a = speculative_generate(&target.model, &draft.model, &prompt, &cfg).unwrap();
    let b = speculative_generate(&target.model, &draft.model, &prompt, &cfg).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(!a.tokens.is_empty() && a.tokens.len() <= 24);
    assert!(a
        .tokens
        .iter()
        .all(|&t| (t as usize) < target.model.config.vocab_size));
    // The greedy baseline with the same engine, for comparison of the API.
    let (base, _) = generate_all(
        &target.model,
        &target.tokenizer,
        &[prompt],
        &GenerateParams {
            max_new_tokens: 8,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!base[0].tokens.is_empty());
}
