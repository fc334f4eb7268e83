//! Time-boxed fuzzing of the stage contract parsers (issue 15): stage requests as a runner pod
//! reads them, and stage results in their full and termination-message forms. Crashes found
//! are kept under `tests/fuzz_corpus/<target>/` and replayed by the `*_corpus` tests.
//! `PRUNEFORGE_FUZZ_SECONDS=120 cargo test --release -p pruneforge-api --test fuzz_contract`
//! runs longer (see `pruneforge_api::fuzz`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pruneforge_api::contract::{
    BlockScore, ComputeReport, DistillSummary, EvalSummary, FinetuneSummary, ImportSummary, JobRef,
    MergeSummary, PruneSummary, ScoreSummary, SpeculateSummary, StageRequest, StageResult,
    StageSummary, TaskScore, TERMINATION_MESSAGE_LIMIT,
};
use pruneforge_api::fuzz::{self, GuardedAlloc, Target, Verdict};
use pruneforge_api::plan::{plan, Plan};
use pruneforge_api::spec::{DataKind, DatasetFormat, DistillDataset, PruneDistillJobSpec};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target)
}

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
    plan(&spec).expect("sample plan")
}

fn requests() -> Vec<StageRequest> {
    let p = sample_plan();
    let job = JobRef {
        name: "quickstart".into(),
        namespace: Some("ml".into()),
    };
    let mut out = Vec::new();
    for stage in p.stages() {
        let req = StageRequest::from_plan(&p, stage.id.as_str(), job.clone()).expect("request");
        if let Some(shard) = req.shard {
            out.push(req.for_shard(shard.count - 1).expect("last shard"));
        }
        out.push(req);
    }
    out
}

/// Every stage request of a plan that has every stage kind.
fn request_seeds() -> Vec<Vec<u8>> {
    requests()
        .iter()
        .map(|r| r.to_json().into_bytes())
        .collect()
}

fn summaries() -> Vec<StageSummary> {
    vec![
        StageSummary::Import(ImportSummary {
            layers: 30,
            parameters: 134_515_008,
        }),
        StageSummary::Score(ScoreSummary {
            metric: pruneforge_api::spec::ScoreMetric::AngularLastToken,
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
            tasks: vec![
                TaskScore {
                    task: "arc_easy".into(),
                    metric: "acc_norm".into(),
                    value: 0.5,
                    stderr: Some(0.07),
                    items: Some(50),
                },
                TaskScore {
                    task: "kl".into(),
                    metric: "kl".into(),
                    value: 0.2,
                    stderr: None,
                    items: None,
                },
            ],
            average: Some(0.5),
            recovery: Some(91.0),
            drift_cosine: Some(0.9),
        }),
        StageSummary::Speculate(SpeculateSummary {
            acceptance_rate: 0.6,
            mean_accepted_length: 2.4,
            speedup: 1.3,
            draft_tokens: 4,
        }),
    ]
}

/// A result of every kind (some with a compute report), a failure, and a truncated one.
fn result_seeds() -> Vec<Vec<u8>> {
    let requests = requests();
    let mut out = Vec::new();
    for summary in summaries() {
        let Some(req) = requests.iter().find(|r| r.kind() == summary.kind()) else {
            continue;
        };
        let artifacts = BTreeMap::from([(
            "result".to_string(),
            format!("{}result.json", req.output_uri),
        )]);
        let mut r = StageResult::succeeded(req, summary, artifacts, 12.5);
        if matches!(
            r.summary,
            Some(StageSummary::Eval(_) | StageSummary::Score(_))
        ) {
            r.compute = Some(ComputeReport {
                device: "cuda:0".into(),
                dtype: "bf16".into(),
                gpu_name: Some("NVIDIA H100".into()),
                peak_device_memory_bytes: Some(1 << 30),
                peak_host_memory_bytes: Some(1 << 29),
            });
        }
        out.push(r.to_termination_message().into_bytes());
    }
    let failed = StageResult::failed(&requests[0], "model.source: no such file ä…", 0.5);
    out.push(failed.to_json().into_bytes());
    let long = StageResult::failed(&requests[1], "ошибка; ".repeat(600), 1.0);
    out.push(long.to_termination_message().into_bytes());
    out
}

/// What a runner does with a request it reads (parse, shard, re-serialize), and what the
/// operator relies on: a parsed request serializes back into one that parses.
fn check_request(input: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(input) else {
        return Verdict::Rejected("not UTF-8".into());
    };
    let req = match StageRequest::from_json(text) {
        Ok(r) => r,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    let _ = req.kind();
    let _ = req.params.cache_material();
    let count = req.shard.map_or(1, |s| s.count);
    for index in [0, 1, count.saturating_sub(1), count, u32::MAX] {
        if let Ok(shard) = req.for_shard(index) {
            if index >= count {
                return Verdict::Violation(format!("shard {index} of {count} was accepted"));
            }
            let _ = shard.to_json();
        }
    }
    let again = req.to_json();
    match StageRequest::from_json(&again) {
        Ok(back) if back.kind() == req.kind() && back.stage_id == req.stage_id => Verdict::Accepted,
        Ok(_) => Verdict::Violation("the request changed through a JSON round trip".into()),
        Err(e) => Verdict::Violation(format!("a parsed request does not parse again: {e}")),
    }
}

/// What the operator does with a termination message, and what the runner guarantees for
/// the messages it writes: whatever parsed compacts into ≤ 4096 bytes that parse again.
fn check_result(input: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(input) else {
        return Verdict::Rejected("not UTF-8".into());
    };
    let result = match StageResult::from_json(text) {
        Ok(r) => r,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    if let Some(s) = &result.summary {
        let _ = s.one_line();
        let _ = s.kind();
    }
    let message = result.to_termination_message();
    if message.len() > TERMINATION_MESSAGE_LIMIT {
        return Verdict::Violation(format!(
            "termination message of {} bytes (limit {TERMINATION_MESSAGE_LIMIT})",
            message.len()
        ));
    }
    match StageResult::from_json(&message) {
        Ok(back) if back.stage_id.as_str().is_empty() == result.stage_id.as_str().is_empty() => {
            Verdict::Accepted
        }
        Ok(_) => Verdict::Violation("the stage id was lost".into()),
        Err(e) => Verdict::Violation(format!("the termination message does not parse: {e}")),
    }
}

#[test]
fn fuzz_stage_request() {
    let target = Target {
        json: true,
        seconds: 4.0,
        ..Target::new("stage_request", request_seeds())
    };
    fuzz::run(&target, check_request).assert_clean();
}

#[test]
fn fuzz_termination_message() {
    let target = Target {
        json: true,
        seconds: 4.0,
        ..Target::new("termination_message", result_seeds())
    };
    fuzz::run(&target, check_result).assert_clean();
}

#[test]
fn stage_request_corpus() {
    fuzz::replay(&corpus("stage_request"), 64 << 20, check_request);
}

#[test]
fn termination_message_corpus() {
    fuzz::replay(&corpus("termination_message"), 64 << 20, check_result);
}

#[test]
fn seeds_are_accepted() {
    for seed in request_seeds() {
        assert_eq!(check_request(&seed), Verdict::Accepted);
    }
    for seed in result_seeds() {
        assert_eq!(check_result(&seed), Verdict::Accepted);
    }
}
