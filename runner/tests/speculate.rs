//! Speculative decoding equals target-only greedy decoding token for token.

mod common;

use common::*;
use pruneforge::generate::sampler::SamplingParams;
use pruneforge::generate::{generate_all, GenerateParams};
use pruneforge::stages::speculate::decoder::{draft_cost, speculative_generate, SpecConfig};
use pruneforge::stages::speculate::draft_length::DraftLength;

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
            let mut lengths = DraftLength::new(k, false, 1.0);
            let cfg = SpecConfig {
                draft_shares_prompt_cache: false,
                max_new_tokens: 48,
                sampling: &greedy,
                eos: &target.tokenizer.eos_ids,
                stream: 0,
            };
            let out =
                speculative_generate(&target.model, &draft.model, &prompt, &cfg, &mut lengths)
                    .unwrap();
            assert_eq!(out.tokens, want, "k={k}");
            assert!(out.accepted <= out.drafted);
            assert!(out.steps >= 1);
        }
    }
}

#[test]
fn adaptive_length_keeps_the_output_and_stops_drafting_when_it_cannot_pay() {
    let target = embedded_model();
    let mut draft = embedded_model();
    draft.model.remove_layers(13, 6).unwrap();
    let greedy = SamplingParams::default();
    let cost = draft_cost(&target.model, &draft.model);
    assert!(
        (0.8..0.9).contains(&cost),
        "24 of 30 layers and the head: {cost}"
    );
    for (prompt, want) in reference_cases() {
        let mut lengths = DraftLength::new(4, true, cost);
        let cfg = SpecConfig {
            draft_shares_prompt_cache: false,
            max_new_tokens: 48,
            sampling: &greedy,
            eos: &target.tokenizer.eos_ids,
            stream: 0,
        };
        let out =
            speculative_generate(&target.model, &draft.model, &prompt, &cfg, &mut lengths).unwrap();
        assert_eq!(out.tokens, want);
        // A draft costing 0.84 target passes never pays: only probes of one token draft.
        assert!(out.target_only_steps > 0);
        assert_eq!(out.drafted, out.steps, "probes draft one token each");
        assert!(
            out.steps <= 4,
            "probes after pauses of 8, 16, 32: {}",
            out.steps
        );
    }
}

#[test]
fn an_8_bit_copy_of_the_target_drafts_cheaply_and_keeps_the_output() {
    let target = embedded_model();
    let draft = target.model.with_int8_decoding().unwrap();
    let cost = draft_cost(&target.model, &draft);
    assert!(
        (0.35..0.5).contains(&cost),
        "a fixed share and 1.125 of 4 bytes: {cost}"
    );
    let greedy = SamplingParams::default();
    let mut lengths = DraftLength::new(6, true, cost);
    let (mut drafted, mut accepted) = (0, 0);
    for share in [true, false] {
        for (prompt, want) in reference_cases() {
            let cfg = SpecConfig {
                draft_shares_prompt_cache: share,
                max_new_tokens: 48,
                sampling: &greedy,
                eos: &target.tokenizer.eos_ids,
                stream: 0,
            };
            let out =
                speculative_generate(&target.model, &draft, &prompt, &cfg, &mut lengths).unwrap();
            assert_eq!(out.tokens, want, "shared prompt cache: {share}");
            drafted += out.drafted;
            accepted += out.accepted;
        }
    }
    let rate = accepted as f64 / drafted as f64;
    assert!(
        rate > 0.85,
        "the 8-bit copy agrees with the f32 model: {accepted}/{drafted}"
    );
    assert!(lengths.next(100) > 2, "a cheap, accurate draft drafts long");
}

#[test]
fn identical_draft_accepts_everything_and_a_random_draft_changes_nothing() {
    let target = embedded_model();
    let same = embedded_model();
    let greedy = SamplingParams::default();
    let (prompt, want) = reference_cases().remove(1);
    let cfg = SpecConfig {
        draft_shares_prompt_cache: false,
        max_new_tokens: 48,
        sampling: &greedy,
        eos: &target.tokenizer.eos_ids,
        stream: 0,
    };
    let mut lengths = DraftLength::new(4, false, 1.0);
    let out =
        speculative_generate(&target.model, &same.model, &prompt, &cfg, &mut lengths).unwrap();
    assert_eq!(out.tokens, want);
    assert_eq!(
        out.accepted, out.drafted,
        "a draft equal to the target is always accepted"
    );

    let tmp = tempfile::tempdir().unwrap();
    common::tiny::write_tiny_model(tmp.path(), &common::tiny::TinySpec::default());
    let tiny = pruneforge::loader::open_model(tmp.path()).unwrap();
    let out =
        speculative_generate(&target.model, &tiny.model, &prompt, &cfg, &mut lengths).unwrap();
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
        draft_shares_prompt_cache: false,
        max_new_tokens: 24,
        sampling: &sampling,
        eos: &target.tokenizer.eos_ids,
        stream: 7,
    };
    let cost = draft_cost(&target.model, &draft.model);
    let run = || {
        let mut lengths = DraftLength::new(3, true, cost);
        speculative_generate(&target.model, &draft.model, &prompt, &cfg, &mut lengths).unwrap()
    };
    let (a, b) = (run(), run());
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
