//! Greedy generation reproduces transformers' continuations, and batching (continuous
//! refilling of rows) does not change any output.

mod common;

use common::*;
use pruneforge::generate::{generate_all, FinishReason, GenerateParams};

fn reference_prompts() -> Vec<(Vec<u32>, Vec<u32>)> {
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
fn greedy_generation_matches_transformers_batched_and_alone() {
    let m = embedded_model();
    let cases = reference_prompts();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| c.0.clone()).collect();
    let params = GenerateParams {
        max_new_tokens: 48,
        batch_size: 1,
        ..Default::default()
    };
    let (alone, _) = generate_all(&m.model, &m.tokenizer, &prompts, &params).unwrap();
    for (c, (_, want)) in alone.iter().zip(&cases) {
        assert_eq!(&c.tokens, want, "prompt {}", c.index);
    }
    assert_eq!(alone[0].finish, FinishReason::Eos);
    assert_eq!(alone[0].text, "The capital of France is Paris.");
    assert_eq!(alone[1].finish, FinishReason::Length);

    // Many prompts through 3 rows: rows are refilled as they finish; every completion must
    // equal the one computed alone.
    let mut many = Vec::new();
    for i in 0..7 {
        many.push(prompts[i % 2].clone());
    }
    let params3 = GenerateParams {
        max_new_tokens: 48,
        batch_size: 3,
        ..Default::default()
    };
    let (batched, stats) = generate_all(&m.model, &m.tokenizer, &many, &params3).unwrap();
    assert_eq!(batched.len(), 7);
    for c in &batched {
        assert_eq!(c.tokens, cases[c.index % 2].1, "batched prompt {}", c.index);
    }
    assert!(stats.generated_tokens > 0);
}

#[test]
fn stop_strings_cut_the_text() {
    let m = embedded_model();
    let (prompt, _) = reference_prompts().remove(1);
    let params = GenerateParams {
        max_new_tokens: 48,
        stop: vec![" light".into()],
        ..Default::default()
    };
    let (out, _) = generate_all(&m.model, &m.tokenizer, &[prompt], &params).unwrap();
    assert_eq!(out[0].finish, FinishReason::Stop(" light".into()));
    assert_eq!(
        out[0].text,
        "The sky is blue because of the way the human eye perceives"
    );
}
