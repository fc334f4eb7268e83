//! The 8-bit copy of the embedded model as its own speculative draft: its decoding speed
//! alone against the f32 model's (the draft cost), then target-only greedy decoding against
//! speculative decoding at fixed and adaptive draft lengths (acceptance, tok/s, speed-up, and
//! whether the output is the target's), two rounds, alternated.
//!
//! `cargo run --release -p pruneforge --example int8_draft` (the quickstart's 8 Alpaca prompts,
//! 64 new tokens; `ONLY_COST=1` stops after the draft cost).
use pruneforge::generate::{generate_all, GenerateParams, SamplingParams};
use pruneforge::loader::open_model;
use pruneforge::stages::speculate::chat_prompts;
use pruneforge::stages::speculate::decoder::{speculative_generate, SpecConfig};
use pruneforge::stages::speculate::draft_length::DraftLength;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    pruneforge::util::workers::on_pool(body)
}
fn body() -> anyhow::Result<()> {
    let m = open_model(&pruneforge::loader::embedded::ensure_hf_dir()?)?;
    let (model, tok) = (m.model, m.tokenizer);
    let draft = model.with_int8_decoding()?;
    let alpaca = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/alpaca/alpaca_5000.json");
    let records = pruneforge::data::sft::load_alpaca(&alpaca)?;
    let prompts = chat_prompts(&records[..8.min(records.len())], &tok)?;
    let greedy = SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        seed: 0,
    };
    let p = GenerateParams {
        max_new_tokens: 64,
        sampling: greedy.clone(),
        stop: vec![],
        stop_on_eos: true,
        batch_size: 1,
    };
    for _ in 0..2 {
        let t = Instant::now();
        let (_, st) = generate_all(&model, &tok, &prompts, &p)?;
        let a = st.generated_tokens as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (_, st) = generate_all(&draft, &tok, &prompts, &p)?;
        let b = st.generated_tokens as f64 / t.elapsed().as_secs_f64();
        println!(
            "target alone {a:.1} tok/s, int8 draft alone {b:.1} tok/s: draft cost {:.2}",
            a / b
        );
    }
    if std::env::var_os("ONLY_COST").is_some() {
        return Ok(());
    }
    for round in 0..2 {
        let t = Instant::now();
        let (outs, st) = generate_all(&model, &tok, &prompts, &p)?;
        let base = st.generated_tokens as f64 / t.elapsed().as_secs_f64();
        println!("round {round} baseline {base:.1} tok/s");
        for (k, adaptive) in [(4usize, false), (6, false), (8, true), (16, true)] {
            let t = Instant::now();
            let (mut d, mut a, mut n, mut same, mut alone) = (0, 0, 0, 0, 0);
            let mut lengths = DraftLength::new(
                k,
                adaptive,
                pruneforge::stages::speculate::decoder::draft_cost(&model, &draft),
            );
            for (i, pr) in prompts.iter().enumerate() {
                let cfg = SpecConfig {
                    draft_shares_prompt_cache: true,
                    max_new_tokens: 64,
                    sampling: &greedy,
                    eos: &tok.eos_ids,
                    stream: i as u64,
                };
                let o = speculative_generate(&model, &draft, pr, &cfg, &mut lengths)?;
                d += o.drafted;
                a += o.accepted;
                n += o.tokens.len();
                alone += o.target_only_steps;
                same += (o.tokens == outs[i].tokens) as usize;
            }
            let s = n as f64 / t.elapsed().as_secs_f64();
            println!("  k {k} adaptive {adaptive}: acceptance {:.3}, {s:.1} tok/s, speed-up {:.2}, identical {same}/8, target-only {alone}", a as f64 / d.max(1) as f64, s / base);
        }
    }
    Ok(())
}
