//! Time-boxed fuzzing of the runner's parsers of outside input (issue 15): GGUF files (import,
//! then loading the imported model), safetensors checkpoints and their shard index, model
//! `config.json`, tokenizer files and chat templates, the dataset and task readers, and
//! pre-tokenized id files. Each target starts from small synthetic valid inputs; crashes found
//! are kept under `tests/fuzz_corpus/<target>/` and replayed by the `*_corpus` tests.
//!
//! `PRUNEFORGE_FUZZ_SECONDS=120 cargo test --release -p pruneforge --test fuzz_parsers` runs
//! each target longer (see `pruneforge_api::fuzz` for the other knobs).

mod common;
#[path = "fuzz_parsers/datasets.rs"]
mod datasets;
#[path = "fuzz_parsers/gguf.rs"]
mod gguf;
#[path = "fuzz_parsers/model_files.rs"]
mod model_files;
#[path = "fuzz_parsers/support.rs"]
mod support;
#[path = "fuzz_parsers/tokenizer.rs"]
mod tokenizer;

use pruneforge_api::fuzz::{self, GuardedAlloc, Target};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

/// Largest single allocation any of these inputs (all under a few hundred KiB) may cause.
const MAX_ALLOC: usize = 64 << 20;

#[test]
fn fuzz_gguf() {
    let seeds = gguf::seeds();
    let hot = gguf::header_len();
    let mutate = gguf::structured_mutant;
    let target = Target {
        hot,
        custom: Some(&mutate),
        seconds: 6.0,
        ..Target::new("gguf", seeds)
    };
    fuzz::run(&target, gguf::check).assert_clean();
}

#[test]
fn fuzz_safetensors() {
    let mutate = model_files::safetensors_mutant;
    let target = Target {
        prefix: 1,
        hot: 512,
        json: true,
        custom: Some(&mutate),
        seconds: 5.0,
        ..Target::new("safetensors", model_files::safetensors_seeds())
    };
    fuzz::run(&target, model_files::check_safetensors).assert_clean();
}

#[test]
fn fuzz_model_config() {
    let mutate = model_files::config_mutant;
    let target = Target {
        json: true,
        custom: Some(&mutate),
        seconds: 4.0,
        ..Target::new("model_config", model_files::config_seeds())
    };
    fuzz::run(&target, model_files::check_config).assert_clean();
}

#[test]
fn fuzz_tokenizer() {
    let target = Target {
        prefix: 1,
        json: true,
        seconds: 5.0,
        ..Target::new("tokenizer", tokenizer::seeds())
    };
    fuzz::run(&target, tokenizer::check).assert_clean();
}

#[test]
fn fuzz_datasets() {
    let target = Target {
        prefix: 2,
        json: true,
        seconds: 5.0,
        ..Target::new("datasets", datasets::seeds())
    };
    fuzz::run(&target, datasets::check).assert_clean();
}

#[test]
fn fuzz_token_ids() {
    let mutate = datasets::token_ids_mutant;
    let target = Target {
        hot: 256,
        custom: Some(&mutate),
        seconds: 3.0,
        ..Target::new("token_ids", datasets::token_id_seeds())
    };
    fuzz::run(&target, datasets::check_token_ids).assert_clean();
}

#[test]
fn gguf_corpus() {
    fuzz::replay(&support::corpus("gguf"), MAX_ALLOC, gguf::check);
}

#[test]
fn safetensors_corpus() {
    fuzz::replay(
        &support::corpus("safetensors"),
        MAX_ALLOC,
        model_files::check_safetensors,
    );
}

#[test]
fn model_config_corpus() {
    fuzz::replay(
        &support::corpus("model_config"),
        MAX_ALLOC,
        model_files::check_config,
    );
}

#[test]
fn tokenizer_corpus() {
    fuzz::replay(&support::corpus("tokenizer"), MAX_ALLOC, tokenizer::check);
}

#[test]
fn datasets_corpus() {
    fuzz::replay(&support::corpus("datasets"), MAX_ALLOC, datasets::check);
}

#[test]
fn token_ids_corpus() {
    fuzz::replay(
        &support::corpus("token_ids"),
        MAX_ALLOC,
        datasets::check_token_ids,
    );
}

#[test]
fn seeds_are_accepted() {
    use pruneforge_api::fuzz::Verdict;
    type Check = fn(&[u8]) -> Verdict;
    let all: [(&str, Vec<Vec<u8>>, Check); 6] = [
        ("gguf", gguf::seeds(), gguf::check),
        (
            "safetensors",
            model_files::safetensors_seeds(),
            model_files::check_safetensors,
        ),
        (
            "model_config",
            model_files::config_seeds(),
            model_files::check_config,
        ),
        ("tokenizer", tokenizer::seeds(), tokenizer::check),
        ("datasets", datasets::seeds(), datasets::check),
        (
            "token_ids",
            datasets::token_id_seeds(),
            datasets::check_token_ids,
        ),
    ];
    for (name, seeds, check) in all {
        for (i, seed) in seeds.iter().enumerate() {
            assert_eq!(check(seed), Verdict::Accepted, "{name} seed {i}");
        }
    }
}

/// Hostile GGUF metadata found (or reconstructed from aborts) by the fuzzer: each must be an
/// error, not an abort in a huge allocation or a panic.
#[test]
fn hostile_gguf_metadata_is_an_error() {
    use pruneforge::model::gguf::MetaValue;
    use pruneforge_api::fuzz::Verdict;
    let cases = [
        // `Vec::with_capacity(num_hidden_layers)` of decoder layers.
        ("llama.block_count", MetaValue::U32(u32::MAX)),
        ("llama.block_count", MetaValue::U64(1 << 61)),
        // A rotary table of head_dim / 2 frequencies before the shapes were checked.
        ("llama.attention.key_length", MetaValue::U64(1 << 40)),
        // q/k rows that are not heads × head_dim: the un-permutation indexed past the data.
        ("llama.attention.head_count_kv", MetaValue::U32(4)),
        ("llama.attention.head_count", MetaValue::U32(3)),
        ("llama.attention.key_length", MetaValue::U32(7)),
    ];
    for (key, value) in cases {
        let mut spec = gguf::base_spec("llama");
        spec.meta.retain(|(k, _)| k != key);
        spec.meta.push((key.to_string(), value.clone()));
        let verdict = gguf::check(&spec.encode().0);
        assert!(
            matches!(verdict, Verdict::Rejected(_)),
            "{key} = {value:?}: {verdict:?}"
        );
    }
    // `blk.1.*` and `blk.01.*` are one HF tensor (the safetensors writer panicked on it).
    let mut spec = gguf::base_spec("llama");
    let mut twin = spec.tensors[4].clone();
    twin.name = "blk.00.attn_q.weight".into();
    spec.tensors.push(twin);
    let verdict = gguf::check(&spec.encode().0);
    assert!(matches!(verdict, Verdict::Rejected(_)), "{verdict:?}");
}
