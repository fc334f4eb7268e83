//! Which cheap drafts could pay for speculative decoding of the embedded model on a CPU:
//! the greedy agreement with the full model of an early exit after each layer (final norm and
//! LM head on that layer's output), of prompt lookup (the token that followed the last n-gram
//! earlier in the text) and of the projections rounded to Q8_0 and Q4_0; and what a target pass
//! over 1-9 tokens costs after a 100-token prefix.
//!
//! `cargo run --release -p pruneforge --example draft_candidates -- [PROMPTS (default 8)]`: the
//! first PROMPTS Alpaca instructions of ../shared/data, greedy, 64 new tokens (the quickstart's
//! speculative prompts).
use candle_core::{Device, Tensor};
use pruneforge::generate::{generate_all, GenerateParams, SamplingParams};
use pruneforge::loader::open_model;
use pruneforge::model::ForwardOptions;
use pruneforge::stages::speculate::chat_prompts;
use std::time::Instant;

fn argmax(v: &[f32]) -> u32 {
    let mut b = 0;
    for i in 1..v.len() {
        if v[i] > v[b] {
            b = i;
        }
    }
    b as u32
}

fn main() -> anyhow::Result<()> {
    pruneforge::util::workers::on_pool(body)
}

fn body() -> anyhow::Result<()> {
    let m = open_model(&pruneforge::loader::embedded::ensure_hf_dir()?)?;
    let (model, tok) = (m.model, m.tokenizer);
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(8);
    let alpaca = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/alpaca/alpaca_5000.json");
    let records = pruneforge::data::sft::load_alpaca(&alpaca)?;
    let prompts = chat_prompts(&records[..n.min(records.len())], &tok)?;
    let p = GenerateParams {
        max_new_tokens: 64,
        sampling: SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        },
        stop: vec![],
        stop_on_eos: true,
        batch_size: 1,
    };
    let (outs, _) = generate_all(&model, &tok, &prompts, &p)?;
    let layers = model.num_layers();
    let mut agree = vec![0usize; layers + 1];
    let mut total = 0usize;
    let mut lookup_prop = [0usize; 4];
    let mut lookup_ok = [0usize; 4];
    for (pr, o) in prompts.iter().zip(&outs) {
        let mut seq = pr.clone();
        seq.extend(&o.tokens);
        let ids = Tensor::from_vec(seq.clone(), (1, seq.len()), &Device::Cpu)?;
        let f = model.forward(
            &ids,
            ForwardOptions {
                hidden_states: true,
                train: false,
            },
        )?;
        let start = pr.len() - 1;
        let end = seq.len() - 1;
        for (k, agreed) in agree.iter_mut().enumerate().skip(1) {
            let h = f.hidden_states[k].narrow(1, start, end - start)?;
            let l = model.logits(&h)?.squeeze(0)?.to_vec2::<f32>()?;
            for (j, row) in l.iter().enumerate() {
                if argmax(row) == seq[start + j + 1] {
                    *agreed += 1;
                }
            }
        }
        total += end - start;
        // prompt lookup: match the last n tokens earlier in the context
        for (ni, ng) in [1usize, 2, 3].iter().enumerate() {
            for pos in start..end {
                if pos + 1 < *ng {
                    continue;
                }
                let key = &seq[pos + 1 - ng..=pos];
                let mut found = None;
                for s in (0..pos + 1 - ng).rev() {
                    if &seq[s..s + ng] == key {
                        found = Some(s + ng);
                        break;
                    }
                }
                if let Some(c) = found {
                    lookup_prop[ni] += 1;
                    if seq[c] == seq[pos + 1] {
                        lookup_ok[ni] += 1;
                    }
                }
            }
        }
    }
    println!("positions {total}");
    for fmt in [
        pruneforge::model::quant::BaseQuantization::Q8_0,
        pruneforge::model::quant::BaseQuantization::Q4_0,
    ] {
        let mut q = open_model(&pruneforge::loader::embedded::ensure_hf_dir()?)?.model;
        q.quantize_projections(fmt)?;
        let mut ok = 0;
        let mut tot = 0;
        for (pr, o) in prompts.iter().zip(&outs) {
            let mut seq = pr.clone();
            seq.extend(&o.tokens);
            let ids = Tensor::from_vec(seq.clone(), (1, seq.len()), &Device::Cpu)?;
            let f = q.forward(&ids, ForwardOptions::default())?;
            let start = pr.len() - 1;
            let end = seq.len() - 1;
            let h = f.last_hidden.narrow(1, start, end - start)?;
            let l = q.logits(&h)?.squeeze(0)?.to_vec2::<f32>()?;
            for (j, row) in l.iter().enumerate() {
                ok += (argmax(row) == seq[start + j + 1]) as usize;
                tot += 1;
            }
        }
        println!(
            "{fmt:?} draft: greedy agreement {:.4} ({ok}/{tot})",
            ok as f64 / tot as f64
        );
    }
    for (k, agreed) in agree.iter().enumerate().skip(1) {
        println!(
            "exit after layer {k:2}: agreement {:.3}",
            *agreed as f64 / total as f64
        );
    }
    for (ni, ng) in [1, 2, 3].iter().enumerate() {
        println!(
            "lookup {ng}-gram: proposes at {:.3}, right {:.3} of proposals",
            lookup_prop[ni] as f64 / total as f64,
            lookup_ok[ni] as f64 / lookup_prop[ni].max(1) as f64
        );
    }
    // timing: cached steps of t tokens after a 100-token prefix
    let prefix: Vec<u32> = prompts[0].iter().cycle().take(100).copied().collect();
    for &t in &[1usize, 2, 3, 5, 9] {
        let mut times = vec![];
        for _ in 0..15 {
            let mut c = model.new_cache(1, 256);
            let ids = Tensor::from_vec(prefix.clone(), (1, 100), &Device::Cpu)?;
            model.forward_cached(&ids, &mut c, &[0])?;
            let step = Tensor::from_vec(prefix[..t].to_vec(), (1, t), &Device::Cpu)?;
            let t0 = Instant::now();
            let h = model.forward_cached(&step, &mut c, &[0])?;
            let t1 = t0.elapsed().as_secs_f64();
            let _l = model.logits(&h)?.to_vec3::<f32>()?;
            times.push((t1, t0.elapsed().as_secs_f64()));
        }
        times.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (a, b) = times[7];
        println!(
            "step of {t} tokens: layers {:.2} ms, with head {:.2} ms",
            a * 1e3,
            b * 1e3
        );
    }
    Ok(())
}
