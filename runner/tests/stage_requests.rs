//! Stages reached through the stage contract (`run_request`), on a tiny random model: what
//! the API's parameters mean to each stage (calibration records, drift), not only what the
//! stage functions do with the runner's own parameters.

mod common;

use common::tiny::Tiny;
use pruneforge::loader::open_model;
use pruneforge::resolve::Resolver;
use pruneforge::stages::score::{self, calibration, CalibrationData, Packing, ScoresFile};
use pruneforge::stages::{eval, ShardRun, StageContext};
use pruneforge_api::contract::StageSummary;
use pruneforge_api::params;
use pruneforge_api::spec::{
    CalibrationSpec, DatasetFormat, DatasetRef, DriftSpec, EvalTask, EvalTaskName, ScoreMetric,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Six Alpaca records, as a JSON array file.
fn alpaca_file(dir: &Path, records: std::ops::Range<usize>) -> PathBuf {
    let items: Vec<serde_json::Value> = records
        .map(|i| {
            serde_json::json!({
                "instruction": format!("instruction number {i} asks something"),
                "input": if i % 2 == 0 { String::new() } else { format!("input {i}") },
                "output": format!("the answer to {i} is a sentence of some length"),
            })
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("alpaca-{}.json", items.len()));
    std::fs::write(&path, serde_json::to_string(&items).unwrap()).unwrap();
    path
}

fn dataset(uri: &Path, format: DatasetFormat, offset: u32, limit: Option<u32>) -> DatasetRef {
    DatasetRef {
        uri: uri.display().to_string(),
        format,
        fields: None,
        limit,
        offset,
    }
}

fn context<'a>(
    inputs: &'a BTreeMap<String, PathBuf>,
    dir: &'a Path,
    resolver: &'a Resolver,
) -> StageContext<'a> {
    StageContext {
        inputs,
        work: dir,
        out: dir,
        resolver,
        shards: ShardRun::All { count: 1 },
        compute: &CPU,
        resume: None,
    }
}

static CPU: std::sync::LazyLock<pruneforge::device::Compute> =
    std::sync::LazyLock::new(pruneforge::device::Compute::cpu);

#[test]
fn calibration_reads_records_with_format_offset_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Tiny::default().write(&tmp.path().join("model"));
    let tok = open_model(&model).unwrap().tokenizer;
    let resolver = Resolver::local();
    let all = alpaca_file(tmp.path(), 0..6);
    let rows = |data: &CalibrationData| calibration::build(data, &tok, 4, 16, &resolver).unwrap();
    let text = |path: &Path| CalibrationData::Text {
        dataset: path.display().to_string(),
        field: None,
        packing: Packing::Stream,
    };
    let records = |d: DatasetRef| CalibrationData::Dataset { dataset: d };

    // The whole array: exactly the reference recipe on the file.
    let whole = rows(&records(dataset(&all, DatasetFormat::Alpaca, 0, None)));
    assert_eq!(whole, rows(&text(&all)));
    // Offset and limit select records 2..5.
    let part = alpaca_file(&tmp.path().join("part"), 2..5);
    let sliced = rows(&records(dataset(&all, DatasetFormat::Alpaca, 2, Some(3))));
    assert_eq!(sliced, rows(&text(&part)));
    assert_ne!(sliced, whole);
    // GSM8K records are rendered question + answer, not read as a JSONL `text` field.
    let gsm = tmp.path().join("gsm.jsonl");
    std::fs::write(
        &gsm,
        "{\"question\": \"How many apples are there today?\", \"answer\": \"There are 3.\\n#### 3\"}\n\
         {\"question\": \"How many pears are there now?\", \"answer\": \"There are 4.\\n#### 4\"}\n",
    )
    .unwrap();
    let plain = tmp.path().join("gsm.txt");
    std::fs::write(
        &plain,
        "How many apples are there today?\n\nThere are 3.\n#### 3\n\n\
         How many pears are there now?\n\nThere are 4.\n#### 4",
    )
    .unwrap();
    let gsm_rows = calibration::build(
        &records(dataset(&gsm, DatasetFormat::Gsm8k, 0, None)),
        &tok,
        2,
        16,
        &resolver,
    )
    .unwrap();
    let plain_rows = calibration::build(&text(&plain), &tok, 2, 16, &resolver).unwrap();
    assert_eq!(gsm_rows, plain_rows);
}

#[test]
fn score_request_honours_calibration_offset_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Tiny::default().write(&tmp.path().join("model"));
    let all = alpaca_file(tmp.path(), 0..6);
    let part = alpaca_file(&tmp.path().join("part"), 1..4);
    let resolver = Resolver::local();
    let inputs = BTreeMap::from([("model".to_string(), model.clone())]);
    let request = params::ScoreParams {
        calibration: CalibrationSpec {
            dataset: dataset(&all, DatasetFormat::Alpaca, 1, Some(3)),
            sequences: 4,
            seq_len: 16,
        },
        metric: ScoreMetric::AngularLastToken,
        block_sizes: vec![1],
        exclude_first_layer: true,
        exclude_last_layer: true,
        width: None,
    };
    let out = tmp.path().join("request");
    std::fs::create_dir_all(&out).unwrap();
    let outcome = score::run_request(&request, &context(&inputs, &out, &resolver)).unwrap();
    assert!(matches!(outcome.summary, StageSummary::Score(_)));
    let by_request = ScoresFile::read(&out.join("scores.json")).unwrap();

    let direct = score::ScoreParams {
        calibration: CalibrationData::Text {
            dataset: part.display().to_string(),
            field: None,
            packing: Packing::Stream,
        },
        num_sequences: 4,
        sequence_length: 16,
        block_sizes: Some(vec![1]),
        ..score::ScoreParams::default()
    };
    score::run(
        &model,
        &direct,
        &resolver,
        &tmp.path().join("direct"),
        &pruneforge::device::Compute::cpu(),
    )
    .unwrap();
    let by_hand = ScoresFile::read(&tmp.path().join("direct/scores.json")).unwrap();
    assert_eq!(by_request.data.sha256, by_hand.data.sha256);
}

#[test]
fn eval_request_with_drift_lists_drift_json() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Tiny::default().write(&tmp.path().join("model"));
    // Drift prompts go through the chat template.
    std::fs::write(
        model.join("chat_template.jinja"),
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
         {% if add_generation_prompt %}assistant: {% endif %}",
    )
    .unwrap();
    let prompts = alpaca_file(tmp.path(), 0..3);
    let text = tmp.path().join("heldout.txt");
    std::fs::write(&text, "some held-out text to score for perplexity").unwrap();
    let resolver = Resolver::local();
    let inputs = BTreeMap::from([
        ("model".to_string(), model.clone()),
        ("base".to_string(), model.clone()),
    ]);
    let request = params::EvalParams {
        tasks: vec![EvalTask {
            uri: Some(text.display().to_string()),
            ..EvalTask::new(EvalTaskName::Perplexity)
        }],
        seed: 1234,
        batch_size: 2,
        drift: Some(DriftSpec {
            enabled: true,
            prompts: dataset(&prompts, DatasetFormat::Alpaca, 0, None),
            limit: 2,
            max_new_tokens: 3,
        }),
    };
    let out = tmp.path().join("eval");
    std::fs::create_dir_all(&out).unwrap();
    let outcome = eval::run_request(&request, &context(&inputs, &out, &resolver)).unwrap();
    assert!(
        outcome.files.iter().any(|f| f == "drift.json"),
        "{:?}",
        outcome.files
    );
    for f in &outcome.files {
        assert!(out.join(f).is_file(), "{f} listed but not written");
    }
    match outcome.summary {
        StageSummary::Eval(s) => {
            // The same model on both sides: its answers match the base exactly.
            let c = s.drift_cosine.expect("drift measured");
            assert!((c - 1.0).abs() < 1e-6, "{c}");
        }
        other => panic!("not an eval summary: {other:?}"),
    }
}

#[test]
fn the_base_eval_computes_drift_responses_once_for_every_variant() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Tiny::default().write(&tmp.path().join("model"));
    std::fs::write(
        model.join("chat_template.jinja"),
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
         {% if add_generation_prompt %}assistant: {% endif %}",
    )
    .unwrap();
    let prompts = alpaca_file(tmp.path(), 0..3);
    let text = tmp.path().join("heldout.txt");
    std::fs::write(&text, "some held-out text to score for perplexity").unwrap();
    let resolver = Resolver::local();
    let drift = DriftSpec {
        enabled: true,
        prompts: dataset(&prompts, DatasetFormat::Alpaca, 0, None),
        limit: 2,
        max_new_tokens: 3,
    };
    let request = params::EvalParams {
        tasks: vec![EvalTask {
            uri: Some(text.display().to_string()),
            ..EvalTask::new(EvalTaskName::Perplexity)
        }],
        seed: 1234,
        batch_size: 2,
        drift: Some(drift.clone()),
    };

    // The base model's eval: writes the base side, measures no drift of its own.
    let base_inputs = BTreeMap::from([("model".to_string(), model.clone())]);
    let base_out = tmp.path().join("eval-base");
    std::fs::create_dir_all(&base_out).unwrap();
    let outcome =
        eval::run_request(&request, &context(&base_inputs, &base_out, &resolver)).unwrap();
    assert!(
        outcome.files.iter().any(|f| f == "drift_base.json"),
        "{:?}",
        outcome.files
    );
    let StageSummary::Eval(s) = outcome.summary else {
        panic!("not an eval summary");
    };
    assert_eq!(s.drift_cosine, None);
    let path = base_out.join("drift_base.json");
    let mut stored: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["responses"].as_array().unwrap().len(), 2);
    // Mark the stored responses: a variant that reuses them reports the marked text.
    stored["responses"][0] = serde_json::json!("stored base response");
    std::fs::write(&path, stored.to_string()).unwrap();

    let variant_inputs = BTreeMap::from([
        ("model".to_string(), model.clone()),
        ("base".to_string(), model.clone()),
        ("base-eval".to_string(), base_out.clone()),
    ]);
    let out = tmp.path().join("eval-variant");
    std::fs::create_dir_all(&out).unwrap();
    eval::run_request(&request, &context(&variant_inputs, &out, &resolver)).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("drift.json")).unwrap()).unwrap();
    assert_eq!(report["items"][0]["base"], "stored base response");

    // Other drift settings than the stored ones: the variant computes the base side itself.
    let other = params::EvalParams {
        drift: Some(DriftSpec {
            max_new_tokens: 2,
            ..drift
        }),
        ..request
    };
    let out = tmp.path().join("eval-variant-2");
    std::fs::create_dir_all(&out).unwrap();
    eval::run_request(&other, &context(&variant_inputs, &out, &resolver)).unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("drift.json")).unwrap()).unwrap();
    assert_ne!(report["items"][0]["base"], "stored base response");
}

/// SPIN's generation, sharded like distill: three shard requests (as three pods of an Indexed
/// Job) gather to the pairs of one unsharded run, sampled answers included (one row at a time,
/// so only the sampling streams could differ: a shard numbering its prompts from 0 fails);
/// a missing shard is refused with which one.
#[test]
fn self_play_shards_gather_to_the_pairs_of_one_run() {
    use pruneforge::stages::self_play;
    use pruneforge_api::spec::{DataKind, DistillDataset, RecoveryMethod};
    let tmp = tempfile::tempdir().unwrap();
    let data = alpaca_file(&tmp.path().join("data"), 0..6);
    let resolver = Resolver::local();
    // The embedded model: the tiny random one samples tokens that decode to nothing.
    let inputs = BTreeMap::from([("model".to_string(), common::embedded_dir())]);
    let p = params::SelfPlayParams {
        block_size: 6,
        width_variant: None,
        after: RecoveryMethod::Sft,
        iteration: 2,
        datasets: vec![DistillDataset {
            name: "alpaca".into(),
            uri: data.display().to_string(),
            format: DatasetFormat::Alpaca,
            fields: None,
            kind: DataKind::General,
            limit: None,
            offset: 0,
        }],
        generation: serde_json::from_value(serde_json::json!({
            "maxNewTokens": 6, "batchSize": 1, "temperature": 1.0, "seed": 5
        }))
        .unwrap(),
        prompts: Some(5),
    };
    let one = tmp.path().join("one");
    let outcome = self_play::run_request(&p, &context(&inputs, &one, &resolver)).unwrap();
    assert!(!outcome.sharded);
    let three = tmp.path().join("three");
    let mut pairs_per_shard = 0;
    for index in 0..3 {
        let ctx = StageContext {
            shards: ShardRun::One { index, count: 3 },
            ..context(&inputs, &three, &resolver)
        };
        let o = self_play::run_request(&p, &ctx).unwrap();
        assert!(o.sharded);
        let StageSummary::SelfPlay(s) = o.summary else {
            panic!("{:?}", o.summary)
        };
        // Shards of 5 prompts: 1, 2, 2.
        assert_eq!(s.prompts, [1, 2, 2][index]);
        pairs_per_shard += s.pairs;
    }
    let (a, ra) = self_play::gather(&one).unwrap();
    let (b, rb) = self_play::gather(&three).unwrap();
    assert_eq!(ra.prompts, 5);
    assert!(!a.is_empty(), "{ra:?}");
    assert_eq!(a, b, "sharded pairs differ from one run's");
    assert_eq!(pairs_per_shard as usize, b.len());
    assert_eq!(
        (
            ra.iteration,
            ra.prompts,
            ra.identical,
            ra.empty,
            ra.generated_tokens
        ),
        (
            rb.iteration,
            rb.prompts,
            rb.identical,
            rb.empty,
            rb.generated_tokens
        )
    );
    // The iteration's prefer stage trains on the gathered pairs (input `pairs`), and refuses
    // another iteration's.
    let mut prefer_inputs = inputs.clone();
    prefer_inputs.insert("pairs".to_string(), three.clone());
    let prefer = |iteration: u32, out: &Path| {
        let p = params::PreferParams {
            block_size: 6,
            width_variant: None,
            after: RecoveryMethod::Sft,
            pairs: params::PreferencePairs::SelfPlay { iteration },
            beta: 0.1,
            loss: pruneforge_api::spec::PreferenceLoss::Sigmoid,
            label_smoothing: 0.0,
            lora: serde_json::from_value(serde_json::json!({"rank": 2, "alpha": 4})).unwrap(),
            optimizer: serde_json::from_value(serde_json::json!({
                "steps": 1, "warmupSteps": 0, "batchSize": 2, "maxSeqLen": 96
            }))
            .unwrap(),
            checkpoint_every: 0,
        };
        pruneforge::stages::prefer::run_request(&p, &context(&prefer_inputs, out, &resolver))
    };
    let trained = tmp.path().join("prefer");
    let o = prefer(2, &trained).unwrap();
    let StageSummary::Prefer(s) = o.summary else {
        panic!("{:?}", o.summary)
    };
    assert_eq!(s.pairs as usize, b.len());
    assert_eq!(
        pruneforge::data::preference::load_preferences(&trained.join("pairs.jsonl")).unwrap(),
        b
    );
    let e = prefer(3, &tmp.path().join("wrong"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("iteration 2") && e.contains("iteration 3"),
        "{e}"
    );
    // A shard that did not finish: its pairs are not used.
    std::fs::remove_dir_all(three.join("shards/00001")).unwrap();
    let e = self_play::gather(&three).unwrap_err().to_string();
    assert!(e.contains("shard 1 of 3"), "{e}");
}
