//! The stage request/result contract: JSON shape, round trips, sharding, termination messages.

use std::collections::BTreeMap;

use pruneforge_api::contract::{
    BlockScore, ContractError, DistillSummary, EvalSummary, FinetuneSummary, ImportSummary, JobRef,
    MergeSummary, Outcome, PruneSummary, ScoreSummary, SpeculateSummary, StageRequest, StageResult,
    StageSummary, TaskScore, CONTRACT_VERSION, TERMINATION_MESSAGE_LIMIT,
};
use pruneforge_api::plan::{plan, Plan, StageKind};
use pruneforge_api::spec::{
    DataKind, DatasetFormat, DistillDataset, PruneDistillJobSpec, ScoreMetric,
};
use serde_json::Value;

fn sample_plan() -> Plan {
    let mut spec = PruneDistillJobSpec::with_storage("s3://bucket/pf");
    spec.pruning.block_sizes = vec![4, 6];
    spec.distillation.datasets = vec![DistillDataset {
        name: "gsm8k".into(),
        uri: "builtin:gsm8k-train".into(),
        format: DatasetFormat::Gsm8k,
        fields: None,
        kind: DataKind::Math,
        limit: Some(32),
        offset: 0,
    }];
    spec.distillation.shards = 4;
    spec.merge.enabled = true;
    spec.speculative.enabled = true;
    spec.recovery.preference = Some(pruneforge_api::spec::PreferenceSpec {
        after: vec![pruneforge_api::spec::RecoveryMethod::SelfDistill],
        dpo: None,
        spin: Some(pruneforge_api::spec::SpinSpec {
            iterations: 2,
            beta: 0.1,
            loss: Default::default(),
            prompts: Some(8),
        }),
        steps: Some(4),
        learning_rate: None,
    });
    plan(&spec).unwrap()
}

fn job() -> JobRef {
    JobRef {
        name: "quickstart".into(),
        namespace: Some("ml".into()),
    }
}

#[test]
fn every_stage_request_round_trips() {
    let p = sample_plan();
    let kinds: std::collections::BTreeSet<StageKind> =
        p.stages().iter().map(|s| s.kind()).collect();
    assert_eq!(
        kinds.len(),
        StageKind::ALL.len(),
        "the sample covers every kind"
    );
    for stage in p.stages() {
        let req = StageRequest::from_plan(&p, stage.id.as_str(), job()).unwrap();
        assert_eq!(req.kind(), stage.kind());
        assert_eq!(req.key, stage.key);
        assert_eq!(req.output_uri, stage.artifact_uri);
        for (name, input) in &req.inputs {
            let producer = p.get(stage.inputs[name].as_str()).unwrap();
            assert_eq!(input.stage_id, producer.id);
            assert_eq!(input.key, producer.key);
            assert_eq!(input.uri, producer.artifact_uri);
        }
        let json = req.to_json();
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["kind"], stage.kind().as_str(), "{json}");
        assert!(value["params"].is_object(), "{json}");
        assert_eq!(value["contractVersion"], CONTRACT_VERSION);
        assert_eq!(value["stageId"], stage.id.as_str());
        assert_eq!(StageRequest::from_json(&json).unwrap(), req);
    }
}

#[test]
fn request_json_shape() {
    let p = sample_plan();
    let req = StageRequest::from_plan(&p, "prune-n6", job()).unwrap();
    let value: Value = serde_json::from_str(&req.to_json()).unwrap();
    assert_eq!(value["params"], serde_json::json!({"blockSize": 6}));
    assert_eq!(
        value["job"],
        serde_json::json!({"name": "quickstart", "namespace": "ml"})
    );
    assert_eq!(value["inputs"]["model"]["stageId"], "import");
    assert!(value["inputs"]["scores"]["uri"]
        .as_str()
        .unwrap()
        .starts_with("s3://bucket/pf/score/"));
    assert!(value.get("shard").is_none());
}

#[test]
fn sharded_stages_get_one_request_per_shard() {
    let p = sample_plan();
    let req = StageRequest::from_plan(&p, "distill-gsm8k", job()).unwrap();
    let shard = req.shard.unwrap();
    assert_eq!((shard.index, shard.count), (0, 4));
    let last = req.for_shard(3).unwrap();
    assert_eq!(last.shard.unwrap().index, 3);
    assert_eq!(last.key, req.key, "shards share the stage key");
    let err = req.for_shard(4).unwrap_err();
    assert!(
        err.to_string().contains("shard index 4 is out of range"),
        "{err}"
    );

    let unsharded = StageRequest::from_plan(&p, "score", job()).unwrap();
    assert!(unsharded.shard.is_none());
    assert!(unsharded.for_shard(0).unwrap().shard.is_none());
    assert!(unsharded.for_shard(1).is_err());
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let p = sample_plan();
    assert!(matches!(
        StageRequest::from_plan(&p, "prune-n5", job()),
        Err(ContractError::UnknownStage(id)) if id == "prune-n5"
    ));
    let req = StageRequest::from_plan(&p, "score", job()).unwrap();
    let mut value: Value = serde_json::from_str(&req.to_json()).unwrap();
    value["contractVersion"] = 99.into();
    let err = StageRequest::from_json(&value.to_string()).unwrap_err();
    assert!(err.to_string().contains("contract version 99"), "{err}");
    value["contractVersion"] = CONTRACT_VERSION.into();
    value["kind"] = "prune".into(); // params of score under the prune tag
    assert!(matches!(
        StageRequest::from_json(&value.to_string()),
        Err(ContractError::Json { .. })
    ));
    assert!(StageRequest::from_json("not json").is_err());
}

fn summaries() -> Vec<StageSummary> {
    vec![
        StageSummary::Import(ImportSummary {
            layers: 30,
            parameters: 134_515_008,
        }),
        StageSummary::Score(ScoreSummary {
            metric: ScoreMetric::AngularLastToken,
            layers: 30,
            best: vec![BlockScore {
                block_size: 6,
                start: 13,
                end: 18,
                score: 0.21,
            }],
        }),
        StageSummary::Prune(PruneSummary {
            block_size: 6,
            start: 13,
            end: 18,
            layers_before: 30,
            layers_after: 24,
            parameters_before: 134_515_008,
            parameters_after: 108_000_000,
            width: None,
        }),
        StageSummary::Distill(DistillSummary {
            items: 32,
            kept: 24,
            kept_rate: 0.75,
        }),
        StageSummary::Finetune(FinetuneSummary {
            final_loss: 1.25,
            steps: 16,
            tokens: 12_000,
        }),
        StageSummary::Merge(MergeSummary {
            tensors: 219,
            fallback_count: 3,
        }),
        StageSummary::Eval(EvalSummary {
            tasks: vec![TaskScore {
                task: "arc_easy".into(),
                metric: "acc_norm".into(),
                value: 0.5,
                stderr: Some(0.07),
                items: Some(50),
            }],
            average: Some(0.5),
            recovery: None,
            drift_cosine: None,
        }),
        StageSummary::Speculate(SpeculateSummary {
            acceptance_rate: 0.6,
            mean_accepted_length: 2.4,
            speedup: 1.3,
            draft_tokens: 4,
        }),
    ]
}

#[test]
fn results_round_trip_for_every_kind() {
    let p = sample_plan();
    for summary in summaries() {
        let stage = p
            .stages()
            .iter()
            .find(|s| s.kind() == summary.kind())
            .unwrap();
        let req = StageRequest::from_plan(&p, stage.id.as_str(), job()).unwrap();
        let artifacts = BTreeMap::from([(
            "result".to_string(),
            format!("{}result.json", req.output_uri),
        )]);
        let result = StageResult::succeeded(&req, summary.clone(), artifacts, 12.5);
        assert!(result.is_ok());
        let json = result.to_json();
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["summary"]["kind"], summary.kind().as_str());
        assert_eq!(value["outcome"], "succeeded");
        assert!(value.get("truncated").is_none());
        assert_eq!(StageResult::from_json(&json).unwrap(), result);
        // Small results are their own termination message.
        assert_eq!(result.to_termination_message(), json);
    }
    let req = StageRequest::from_plan(&p, "import", job()).unwrap();
    let failed = StageResult::failed(&req, "model.source: no such file", 0.5);
    assert_eq!(failed.outcome, Outcome::Failed);
    assert!(!failed.is_ok());
    assert_eq!(
        StageResult::from_json(&failed.to_termination_message()).unwrap(),
        failed
    );
}

#[test]
fn termination_message_fits_4096_bytes() {
    let p = sample_plan();
    let req = StageRequest::from_plan(&p, "eval-n6-merged", job()).unwrap();

    // A huge failure message (e.g. a long stack of errors, multi-byte text).
    let long = "ошибка: tensor shape mismatch; ".repeat(400);
    let failed = StageResult::failed(&req, long.clone(), 3.0);
    let msg = failed.to_termination_message();
    assert!(msg.len() <= TERMINATION_MESSAGE_LIMIT, "{}", msg.len());
    let back = StageResult::from_json(&msg).unwrap();
    assert!(back.truncated);
    assert_eq!(back.stage_id, failed.stage_id);
    assert_eq!(back.key, failed.key);
    assert_eq!(back.outcome, Outcome::Failed);
    let kept = back.message.unwrap();
    assert!(kept.ends_with('…') && long.starts_with(kept.trim_end_matches('…')));

    // A big eval summary with many artifacts: detail goes first, the headline stays.
    let tasks: Vec<TaskScore> = (0..40)
        .map(|i| TaskScore {
            task: format!("mmlu_subject_with_a_long_name_{i}"),
            metric: "acc".into(),
            value: 0.25 + i as f64 / 1000.0,
            stderr: Some(0.0123456789),
            items: Some(1000 + i),
        })
        .collect();
    let artifacts: BTreeMap<String, String> = (0..40)
        .map(|i| {
            (
                format!("per-task-{i}"),
                format!("{}tasks/{i}/samples.jsonl", req.output_uri),
            )
        })
        .collect();
    let big = StageResult::succeeded(
        &req,
        StageSummary::Eval(EvalSummary {
            tasks,
            average: Some(0.27),
            recovery: Some(91.2),
            drift_cosine: Some(0.8),
        }),
        artifacts,
        3600.0,
    );
    assert!(big.to_json().len() > TERMINATION_MESSAGE_LIMIT);
    let msg = big.to_termination_message();
    assert!(msg.len() <= TERMINATION_MESSAGE_LIMIT, "{}", msg.len());
    let back = StageResult::from_json(&msg).unwrap();
    assert!(back.truncated);
    assert_eq!(back.duration_seconds, 3600.0);
    match back.summary {
        Some(StageSummary::Eval(e)) => {
            assert_eq!(e.average, Some(0.27));
            assert_eq!(e.tasks.len(), 40);
            assert!(e.tasks.iter().all(|t| t.stderr.is_none()));
        }
        other => panic!("eval summary dropped although it fits: {other:?}"),
    }
}

/// A diverged fine-tune (NaN loss) and an infinite perplexity: JSON has no NaN or infinity,
/// and serde_json's `null` for them did not read back, so the operator could not parse the
/// termination message at all.
#[test]
fn non_finite_numbers_survive_the_termination_message() {
    let p = sample_plan();
    let finetune = p
        .stages()
        .iter()
        .find(|s| s.kind() == StageKind::Finetune)
        .unwrap();
    let req = StageRequest::from_plan(&p, finetune.id.as_str(), job()).unwrap();
    let diverged = StageResult::succeeded(
        &req,
        StageSummary::Finetune(FinetuneSummary {
            final_loss: f64::NAN,
            steps: 16,
            tokens: 12_000,
        }),
        BTreeMap::new(),
        f64::INFINITY,
    );
    let msg = diverged.to_termination_message();
    let back = StageResult::from_json(&msg).unwrap();
    let value: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(value["summary"]["finalLoss"], "NaN", "{msg}");
    assert_eq!(value["durationSeconds"], "inf", "{msg}");
    assert!(back.duration_seconds.is_infinite());
    let summary = back.summary.unwrap();
    assert!(matches!(&summary, StageSummary::Finetune(f) if f.final_loss.is_nan()));
    assert_eq!(
        summary.one_line(),
        "final loss NaN after 16 steps, 12000 tokens"
    );

    let req = StageRequest::from_plan(&p, "eval-n6-merged", job()).unwrap();
    let task = |task: &str, value: f64, stderr: Option<f64>| TaskScore {
        task: task.into(),
        metric: task.into(),
        value,
        stderr,
        items: Some(64),
    };
    let eval = StageResult::succeeded(
        &req,
        StageSummary::Eval(EvalSummary {
            tasks: vec![
                task("arc_easy", 0.25, Some(f64::NAN)),
                task("perplexity", f64::INFINITY, None),
                task("answer_nll", f64::NEG_INFINITY, None),
            ],
            average: Some(0.25),
            recovery: Some(f64::NAN),
            drift_cosine: None,
        }),
        BTreeMap::new(),
        3.0,
    );
    let msg = eval.to_termination_message();
    let back = StageResult::from_json(&msg).unwrap();
    let Some(StageSummary::Eval(e)) = &back.summary else {
        panic!("no eval summary in {msg}");
    };
    assert!(e.tasks[0].stderr.is_some_and(f64::is_nan));
    assert_eq!(e.tasks[1].value, f64::INFINITY);
    assert_eq!(e.tasks[2].value, f64::NEG_INFINITY);
    assert!(e.recovery.is_some_and(f64::is_nan));
    assert_eq!(e.drift_cosine, None);
    assert_eq!(
        back.summary.as_ref().unwrap().one_line(),
        "average 0.2500 over 1 accuracy tasks of 3, recovery NaN%, \
         not finite: perplexity inf, answer_nll -inf"
    );
    // Finite results are unchanged: numbers stay numbers.
    assert!(!msg.contains("null"), "{msg}");
    assert!(msg.contains(r#""value":0.25"#), "{msg}");
}

/// Results written before non-finite numbers became strings had `null` there: they parse,
/// as NaN for a number and as absent for an optional one.
#[test]
fn null_numbers_of_older_runners_read_as_nan() {
    let p = sample_plan();
    let req = StageRequest::from_plan(&p, "eval-n6-merged", job()).unwrap();
    let mut value: Value = serde_json::from_str(
        &StageResult::succeeded(
            &req,
            StageSummary::Finetune(FinetuneSummary {
                final_loss: 1.0,
                steps: 1,
                tokens: 1,
            }),
            BTreeMap::new(),
            1.0,
        )
        .to_json(),
    )
    .unwrap();
    value["summary"]["finalLoss"] = Value::Null;
    value["durationSeconds"] = Value::Null;
    let back = StageResult::from_json(&value.to_string()).unwrap();
    assert!(back.duration_seconds.is_nan());
    assert!(matches!(back.summary, Some(StageSummary::Finetune(f)) if f.final_loss.is_nan()));
    // A number in a string is still an error.
    value["durationSeconds"] = "1.5".into();
    assert!(StageResult::from_json(&value.to_string()).is_err());
}
