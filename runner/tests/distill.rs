//! Distill stage mechanics (tiny random model) and one real end-to-end case (SmolLM2).

mod common;

use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::data::sft::{SftDataset, SftSchema};
use pruneforge::resolve::Resolver;
use pruneforge::stages::distill::{self, DistillParams};
use pruneforge_api::spec::{
    AnswerCheck, DataKind, DatasetFormat, DistillDataset, GenerationSpec, PromptTemplate,
};
use std::path::Path;

fn params(
    uri: &str,
    format: DatasetFormat,
    kind: DataKind,
    limit: u32,
    max_new: u32,
) -> DistillParams {
    DistillParams {
        dataset: DistillDataset {
            name: "t".into(),
            uri: uri.into(),
            format,
            fields: None,
            kind,
            limit: Some(limit),
            offset: 0,
        },
        template: PromptTemplate::default(),
        answer_check: AnswerCheck::default(),
        generation: GenerationSpec {
            max_new_tokens: max_new,
            batch_size: 3,
            ..Default::default()
        },
    }
}

fn gsm8k_uri() -> String {
    common::shared_dir()
        .join("data/gsm8k/train.jsonl")
        .display()
        .to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn shards_are_disjoint_and_gather_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(&model, &TinySpec::default());
    let p = params(&gsm8k_uri(), DatasetFormat::Gsm8k, DataKind::Math, 7, 12);
    let one = tmp.path().join("one");
    let s1 = distill::run(
        &model,
        &p,
        1,
        &one,
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let three = tmp.path().join("three");
    let s3 = distill::run(
        &model,
        &p,
        3,
        &three,
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(s1.items, 7);
    assert_eq!(s3.items, 7);
    assert_eq!(s3.shards, 3);
    assert_eq!(
        read(&one.join("data.jsonl")),
        read(&three.join("data.jsonl"))
    );
    // Shard sizes 2, 2, 3 (contiguous ranges), together every item once.
    let sizes: Vec<usize> = (0..3)
        .map(|k| {
            read(&three.join(format!("shards/{k:05}/records.jsonl")))
                .lines()
                .count()
        })
        .collect();
    assert_eq!(sizes, vec![2, 2, 3]);
    // The output has the input's schema; a random model's rewrites fail the math check, so
    // every answer falls back to the original.
    let out = SftDataset::load(&one.join("data.jsonl"), SftSchema::Gsm8k).unwrap();
    let orig = SftDataset::load(Path::new(&gsm8k_uri()), SftSchema::Gsm8k).unwrap();
    assert_eq!(out.records.len(), 7);
    for (a, b) in out.records.iter().zip(&orig.records) {
        assert_eq!(a.instruction, b.instruction);
    }
    assert_eq!(s1.kept + s1.fallback, 7);
    assert_eq!(s1.fallback_reasons.values().sum::<usize>(), s1.fallback);
}

#[test]
fn restarted_shard_resumes_and_repairs_a_torn_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(&model, &TinySpec::default());
    let p = params(&gsm8k_uri(), DatasetFormat::Gsm8k, DataKind::General, 6, 10);
    let full = tmp.path().join("full");
    distill::run(
        &model,
        &p,
        1,
        &full,
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    // Crash simulation: keep 4 journal lines plus half of the fifth.
    let journal = read(&full.join("shards/00000/journal.jsonl"));
    let lines: Vec<&str> = journal.lines().collect();
    assert_eq!(lines.len(), 6);
    let resumed = tmp.path().join("resumed");
    std::fs::create_dir_all(resumed.join("shards/00000")).unwrap();
    let torn = format!(
        "{}\n{}",
        lines[..4].join("\n"),
        &lines[4][..lines[4].len() / 2]
    );
    std::fs::write(resumed.join("shards/00000/journal.jsonl"), torn).unwrap();
    let s = distill::run(
        &model,
        &p,
        1,
        &resumed,
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(s.resumed_items, 4);
    assert_eq!(
        read(&full.join("data.jsonl")),
        read(&resumed.join("data.jsonl"))
    );
    assert_eq!(
        read(&resumed.join("shards/00000/journal.jsonl"))
            .lines()
            .count(),
        6
    );
}

#[test]
fn alpaca_arrays_stay_alpaca_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(&model, &TinySpec::default());
    let uri = common::shared_dir()
        .join("data/alpaca/alpaca_5000.json")
        .display()
        .to_string();
    let p = params(&uri, DatasetFormat::Alpaca, DataKind::General, 3, 8);
    let out = tmp.path().join("out");
    distill::run(
        &model,
        &p,
        1,
        &out,
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let ds = SftDataset::load_detected(&out.join("data.json")).unwrap();
    assert_eq!(ds.schema, SftSchema::Alpaca);
    assert_eq!(ds.records.len(), 3);
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(&model, &TinySpec::default());
    let mut p = params(&gsm8k_uri(), DatasetFormat::Gsm8k, DataKind::Math, 3, 8);
    p.dataset.offset = 10_000;
    let e = distill::run(
        &model,
        &p,
        1,
        &tmp.path().join("o"),
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("selects no records"), "{e}");
    let uri = common::shared_dir()
        .join("data/alpaca/alpaca_5000.json")
        .display()
        .to_string();
    let p = params(&uri, DatasetFormat::Alpaca, DataKind::Math, 3, 8);
    let e = distill::run(
        &model,
        &p,
        1,
        &tmp.path().join("o2"),
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no gold answer"), "{e}");
    let e = distill::run_shard(
        &model,
        &p,
        3,
        2,
        &tmp.path().join("o3"),
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("shard 3 of 2"), "{e}");
}

#[test]
fn smollm2_rewrites_gsm8k_with_the_math_template() {
    let tmp = tempfile::tempdir().unwrap();
    let p = params(&gsm8k_uri(), DatasetFormat::Gsm8k, DataKind::Math, 2, 160);
    let s = distill::run(
        &common::embedded_dir(),
        &p,
        1,
        tmp.path(),
        &Resolver::local(),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    assert_eq!(s.items, 2);
    assert!(s.generated_tokens > 0);
    let out = SftDataset::load(&tmp.path().join("data.jsonl"), SftSchema::Gsm8k).unwrap();
    for r in &out.records {
        assert!(
            r.output.contains("####"),
            "GSM8K schema keeps the answer line: {}",
            r.output
        );
        assert!(r.gold.is_some());
    }
    let log = read(&tmp.path().join("records.jsonl"));
    assert_eq!(log.lines().count(), 2);
    assert!(log.contains("\"decision\""));
}
