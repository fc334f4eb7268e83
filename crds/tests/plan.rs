//! Properties of the stage plan: ids, topological order, readiness, and which changes move
//! which cache keys.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pruneforge_api::params::StageParams;
use pruneforge_api::plan::{plan, Plan, PlanError, Shape, StageId, StageKind};
use pruneforge_api::spec::{
    DataKind, DatasetFormat, DistillDataset, DraftModel, EvalTask, EvalTaskName, HiddenStatesKd,
    MergeMethod, PruneDistillJobSpec, RecoveryMethod, TeacherCorrectionSpec, WidthSize,
    WidthTargets, WidthVariant,
};

fn gsm8k() -> DistillDataset {
    DistillDataset {
        name: "gsm8k".into(),
        uri: "builtin:gsm8k-train".into(),
        format: DatasetFormat::Gsm8k,
        fields: None,
        kind: DataKind::Math,
        limit: Some(32),
        offset: 0,
    }
}

/// Block sizes 4 and 6; none, sft, self-distill, self-distill+logit-kd; merge; speculate.
fn full_spec() -> PruneDistillJobSpec {
    let mut spec = PruneDistillJobSpec::with_storage("s3://bucket/pf");
    spec.pruning.block_sizes = vec![6, 4];
    spec.distillation.datasets = vec![gsm8k()];
    spec.recovery.methods = vec![
        RecoveryMethod::None,
        RecoveryMethod::Sft,
        RecoveryMethod::SelfDistill,
        RecoveryMethod::SelfDistillLogitKd,
    ];
    spec.merge.enabled = true;
    spec.speculative.enabled = true;
    spec
}

fn keys(p: &Plan) -> BTreeMap<String, String> {
    p.stages()
        .iter()
        .map(|s| (s.id.to_string(), s.key.clone()))
        .collect()
}

/// Ids whose key differs between two plans with the same stages.
fn changed(a: &Plan, b: &Plan) -> BTreeSet<String> {
    let (ka, kb) = (keys(a), keys(b));
    assert_eq!(
        ka.keys().collect::<Vec<_>>(),
        kb.keys().collect::<Vec<_>>(),
        "same stages expected"
    );
    ka.iter()
        .filter(|(id, k)| kb[*id] != **k)
        .map(|(id, _)| id.clone())
        .collect()
}

fn ids(p: &Plan) -> BTreeSet<String> {
    p.stages().iter().map(|s| s.id.to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn stage_ids_and_inputs() {
    let p = plan(&full_spec()).unwrap();
    let expected = [
        "import",
        "score",
        "prune-n4",
        "prune-n6",
        "distill-gsm8k",
        "finetune-n4-sft",
        "finetune-n4-self-distill",
        "finetune-n4-self-distill-logit-kd",
        "finetune-n6-sft",
        "finetune-n6-self-distill",
        "finetune-n6-self-distill-logit-kd",
        "merge-n4",
        "merge-n6",
        "eval-base",
        "eval-n4",
        "eval-n4-sft",
        "eval-n4-self-distill",
        "eval-n4-self-distill-logit-kd",
        "eval-n4-merged",
        "eval-n6",
        "eval-n6-sft",
        "eval-n6-self-distill",
        "eval-n6-self-distill-logit-kd",
        "eval-n6-merged",
        "speculate-n4",
        "speculate-n6",
    ];
    let got: Vec<String> = p
        .topological_order()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, expected);

    let inputs = |id: &str| -> BTreeMap<String, String> {
        p.get(id)
            .unwrap()
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(inputs("import"), m(&[]));
    assert_eq!(inputs("score"), m(&[("model", "import")]));
    assert_eq!(
        inputs("prune-n6"),
        m(&[("model", "import"), ("scores", "score")])
    );
    assert_eq!(inputs("distill-gsm8k"), m(&[("model", "import")]));
    assert_eq!(inputs("finetune-n6-sft"), m(&[("model", "prune-n6")]));
    assert_eq!(
        inputs("finetune-n6-self-distill"),
        m(&[("model", "prune-n6"), ("data-gsm8k", "distill-gsm8k")])
    );
    assert_eq!(
        inputs("finetune-n6-self-distill-logit-kd"),
        m(&[
            ("model", "prune-n6"),
            ("teacher", "import"),
            ("data-gsm8k", "distill-gsm8k")
        ])
    );
    assert_eq!(
        inputs("merge-n6"),
        m(&[
            ("base", "prune-n6"),
            ("model-0", "finetune-n6-sft"),
            ("model-1", "finetune-n6-self-distill")
        ])
    );
    // Drift is on by default: variants also read the unpruned model (the base side of drift
    // comes from eval-base, computed once).
    assert_eq!(inputs("eval-base"), m(&[("model", "import")]));
    assert_eq!(
        inputs("eval-n6"),
        m(&[
            ("model", "prune-n6"),
            ("base-eval", "eval-base"),
            ("base", "import")
        ])
    );
    assert_eq!(
        inputs("eval-n6-merged"),
        m(&[
            ("model", "merge-n6"),
            ("base-eval", "eval-base"),
            ("base", "import")
        ])
    );
    for id in ["eval-base", "eval-n6", "eval-n6-merged"] {
        match &p.get(id).unwrap().params {
            StageParams::Eval(e) => assert!(e.drift.is_some(), "{id}: drift on by default"),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(
        inputs("speculate-n6"),
        m(&[("target", "import"), ("draft", "prune-n6")])
    );

    // Parameters are typed per kind and hold what the stage needs.
    match &p.get("finetune-n6-sft").unwrap().params {
        StageParams::Finetune(f) => {
            assert_eq!(
                f.datasets,
                vec![gsm8k()],
                "sft trains on the original data sets"
            );
            assert_eq!(f.kd_temperature, None);
            assert_eq!(f.recipe.kd_weight, 0.0);
        }
        other => panic!("{other:?}"),
    }
    match &p.get("finetune-n6-self-distill-logit-kd").unwrap().params {
        StageParams::Finetune(f) => {
            assert!(f.datasets.is_empty(), "distilled data comes as inputs");
            assert_eq!(f.recipe.kd_weight, 0.5);
            assert_eq!(f.recipe.cross_entropy_weight, 0.5);
            assert_eq!(f.kd_temperature, Some(1.0));
        }
        other => panic!("{other:?}"),
    }
    for s in p.stages() {
        assert_eq!(s.kind(), s.params.kind());
        assert_eq!(
            s.artifact_uri,
            format!("s3://bucket/pf/{}/{}/", s.kind(), &s.key[..16]),
            "{}",
            s.id
        );
        assert_eq!(s.key.len(), 64);
        assert!(s.key.bytes().all(|c| c.is_ascii_hexdigit()));
    }
    // Distinct work has distinct keys.
    let unique: BTreeSet<&String> = p.stages().iter().map(|s| &s.key).collect();
    assert_eq!(unique.len(), p.len());
}

#[test]
fn order_is_topological_and_ready_drives_a_full_run() {
    let p = plan(&full_spec()).unwrap();
    let position: BTreeMap<&StageId, usize> = p
        .stages()
        .iter()
        .enumerate()
        .map(|(i, s)| (&s.id, i))
        .collect();
    for (i, s) in p.stages().iter().enumerate() {
        for dep in s.dependencies() {
            assert!(position[dep] < i, "{} depends on later {}", s.id, dep);
        }
    }

    let mut finished = BTreeSet::new();
    assert_eq!(p.ready(&finished), vec![StageId::import()]);
    let mut waves = 0;
    while finished.len() < p.len() {
        let ready = p.ready(&finished);
        assert!(!ready.is_empty(), "stuck with {finished:?}");
        for id in &ready {
            let stage = p.get(id.as_str()).unwrap();
            assert!(stage.dependencies().iter().all(|d| finished.contains(*d)));
            assert!(!finished.contains(id));
        }
        finished.extend(ready);
        waves += 1;
    }
    assert!(p.ready(&finished).is_empty());
    // import, score+distill+eval-base, prune, finetune+eval-pruned+speculate, merge+eval, eval-merged
    assert_eq!(waves, 6);

    let after_import: BTreeSet<String> = p
        .ready(&BTreeSet::from([StageId::import()]))
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(after_import, set(&["score", "distill-gsm8k", "eval-base"]));
}

#[test]
fn downstream_of_score_excludes_independent_stages() {
    let p = plan(&full_spec()).unwrap();
    let down: BTreeSet<String> = p
        .downstream(&StageId::score())
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(
        down.contains("prune-n6")
            && down.contains("eval-n6-merged")
            && down.contains("speculate-n4")
    );
    for id in ["import", "score", "distill-gsm8k", "eval-base"] {
        assert!(!down.contains(id), "{id}");
    }
    assert_eq!(
        p.dependents(&StageId::prune(&Shape::depth(6)))
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        set(&[
            "finetune-n6-sft",
            "finetune-n6-self-distill",
            "finetune-n6-self-distill-logit-kd",
            "merge-n6",
            "eval-n6",
            "speculate-n6"
        ])
    );
}

#[test]
fn planning_is_deterministic() {
    assert_eq!(plan(&full_spec()).unwrap(), plan(&full_spec()).unwrap());
    // Block size order in the spec does not matter.
    let mut reordered = full_spec();
    reordered.pruning.block_sizes = vec![4, 6];
    assert_eq!(plan(&full_spec()).unwrap(), plan(&reordered).unwrap());
}

#[test]
fn eval_task_changes_move_only_eval_keys() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.evaluation
        .tasks
        .push(EvalTask::new(EvalTaskName::Gsm8k));
    let b = plan(&spec).unwrap();
    let moved = changed(&a, &b);
    let evals: BTreeSet<String> = ids(&a)
        .into_iter()
        .filter(|i| i.starts_with("eval-"))
        .collect();
    assert_eq!(moved, evals);

    let mut spec = full_spec();
    spec.evaluation.tasks[0].limit = Some(10);
    assert_eq!(changed(&a, &plan(&spec).unwrap()), evals);

    // Task order is not part of the key.
    let mut spec = full_spec();
    spec.evaluation.tasks.reverse();
    assert!(changed(&a, &plan(&spec).unwrap()).is_empty());
}

#[test]
fn calibration_changes_move_score_and_everything_downstream() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.calibration.sequences = 32;
    let b = plan(&spec).unwrap();
    let moved = changed(&a, &b);
    let expected: BTreeSet<String> = std::iter::once("score".to_string())
        .chain(
            a.downstream(&StageId::score())
                .iter()
                .map(|s| s.to_string()),
        )
        .collect();
    assert_eq!(moved, expected);
    for id in ["import", "distill-gsm8k", "eval-base"] {
        assert!(!moved.contains(id), "{id}");
    }
}

#[test]
fn calibration_reader_marker_only_where_the_text_changed() {
    use pruneforge_api::params::CALIBRATION_RECORDS_FIELD;
    let material = |spec: &PruneDistillJobSpec| {
        let p = plan(spec).unwrap();
        p.get("score").unwrap().params.cache_material()
    };
    // The default (a whole Alpaca array, e.g. the quickstart's builtin:alpaca) reads the same
    // as before records were honoured: its key must not move.
    let spec = full_spec();
    assert!(material(&spec).get(CALIBRATION_RECORDS_FIELD).is_none());
    // Offset, limit or another format used to be ignored: new text, so a new key.
    for change in [
        |s: &mut PruneDistillJobSpec| s.calibration.dataset.offset = 3,
        |s: &mut PruneDistillJobSpec| s.calibration.dataset.limit = Some(10),
        |s: &mut PruneDistillJobSpec| {
            s.calibration.dataset.uri = "builtin:gsm8k-train".into();
            s.calibration.dataset.format = DatasetFormat::Gsm8k;
        },
    ] {
        let mut other = full_spec();
        change(&mut other);
        assert_eq!(
            material(&other).get(CALIBRATION_RECORDS_FIELD),
            Some(&serde_json::Value::Bool(true))
        );
    }
}

#[test]
fn execution_settings_move_no_key() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.runner.image = Some("registry.example/pruneforge:dev".into());
    spec.runner.gpu.count = 2;
    // With `compute.dtype: auto`, GPUs mean bf16, which is part of the keys (see
    // compute_dtype_enters_keys_of_model_stages_only_when_not_f32); the device is not.
    spec.compute.dtype = pruneforge_api::spec::ComputeDtype::F32;
    spec.runner.resources = Some(ResourceRequirements {
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("64Gi".into()),
        )])),
        ..Default::default()
    });
    spec.runner.queue_name = Some("gpu".into());
    spec.max_parallel_stages = 8;
    spec.model.name = Some("smol".into());
    spec.distillation.shards = 8;
    spec.recovery.checkpoint_every = 10;
    spec.storage.secret_ref = Some("creds".into());
    let b = plan(&spec).unwrap();
    assert!(changed(&a, &b).is_empty());
    let uris = |p: &Plan| {
        p.stages()
            .iter()
            .map(|s| s.artifact_uri.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(uris(&a), uris(&b));
    assert_eq!(b.get("distill-gsm8k").unwrap().shards, 8);
    assert_eq!(b.max_parallel_stages, 8);
    match &b.get("finetune-n4-sft").unwrap().params {
        StageParams::Finetune(f) => assert_eq!(f.checkpoint_every, 10),
        other => panic!("{other:?}"),
    }

    // Another storage root moves the artifact paths, not the keys.
    let mut spec = full_spec();
    spec.storage.uri = "gs://other/root/".into();
    let c = plan(&spec).unwrap();
    assert!(changed(&a, &c).is_empty());
    assert!(c
        .stages()
        .iter()
        .all(|s| s.artifact_uri.starts_with("gs://other/root/")));
}

#[test]
fn distillation_changes_move_only_distilled_branches() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.distillation.generation.max_new_tokens = 128;
    let moved = changed(&a, &plan(&spec).unwrap());
    let expected = set(&[
        "distill-gsm8k",
        "finetune-n4-self-distill",
        "finetune-n4-self-distill-logit-kd",
        "finetune-n6-self-distill",
        "finetune-n6-self-distill-logit-kd",
        "merge-n4",
        "merge-n6",
        "eval-n4-self-distill",
        "eval-n4-self-distill-logit-kd",
        "eval-n4-merged",
        "eval-n6-self-distill",
        "eval-n6-self-distill-logit-kd",
        "eval-n6-merged",
    ]);
    assert_eq!(moved, expected);

    // kd.ratio only moves the methods with a KD term.
    let mut spec = full_spec();
    spec.recovery.kd.ratio = 0.25;
    assert_eq!(
        changed(&a, &plan(&spec).unwrap()),
        set(&[
            "finetune-n4-self-distill-logit-kd",
            "finetune-n6-self-distill-logit-kd",
            "eval-n4-self-distill-logit-kd",
            "eval-n6-self-distill-logit-kd"
        ])
    );
}

#[test]
fn explicit_start_drops_the_score_dependency() {
    let mut spec = full_spec();
    spec.pruning.start = Some(13);
    let a = plan(&spec).unwrap();
    let prune = a.get("prune-n6").unwrap();
    assert_eq!(prune.dependencies().len(), 1);
    assert!(prune.inputs.contains_key("model"));
    // Then the calibration no longer reaches the pruned models.
    spec.calibration.seq_len = 256;
    let b = plan(&spec).unwrap();
    assert_eq!(changed(&a, &b), set(&["score"]));
}

#[test]
fn equal_work_is_shared_between_jobs() {
    // Two jobs that differ only in their benchmarks share every artifact but the eval ones.
    let a = plan(&full_spec()).unwrap();
    let mut other = full_spec();
    other.evaluation.tasks = vec![EvalTask::new(EvalTaskName::Perplexity)];
    let b = plan(&other).unwrap();
    for s in a.stages().iter().filter(|s| s.kind() != StageKind::Eval) {
        assert_eq!(s.artifact_uri, b.get(s.id.as_str()).unwrap().artifact_uri);
    }
}

#[test]
fn optional_stages_follow_the_spec() {
    let mut spec = PruneDistillJobSpec::with_storage("file://./out");
    spec.recovery.methods = vec![RecoveryMethod::None];
    let p = plan(&spec).unwrap();
    assert_eq!(
        ids(&p),
        set(&["import", "score", "prune-n6", "eval-base", "eval-n6"])
    );

    // sft alone needs no distill stage; logit-kd alone needs the teacher.
    let mut spec = PruneDistillJobSpec::with_storage("file://./out");
    spec.distillation.datasets = vec![gsm8k()];
    spec.recovery.methods = vec![RecoveryMethod::Sft, RecoveryMethod::LogitKd];
    let p = plan(&spec).unwrap();
    assert!(!ids(&p).iter().any(|i| i.starts_with("distill-")));
    assert!(
        !ids(&p).contains("eval-n6"),
        "no `none` method, no pruned-only eval"
    );
    assert!(p
        .get("finetune-n6-logit-kd")
        .unwrap()
        .inputs
        .contains_key("teacher"));

    // Drift adds the base model as an input of every non-base eval.
    let mut spec = full_spec();
    spec.evaluation.drift.enabled = true;
    let p = plan(&spec).unwrap();
    assert!(!p.get("eval-base").unwrap().inputs.contains_key("base"));
    assert_eq!(
        p.get("eval-n6-sft").unwrap().inputs["base"].as_str(),
        "import"
    );

    // A merged draft.
    let mut spec = full_spec();
    spec.speculative.draft = DraftModel::Merged;
    let p = plan(&spec).unwrap();
    assert_eq!(
        p.get("speculate-n4").unwrap().inputs["draft"].as_str(),
        "merge-n4"
    );

    // An 8-bit copy of the base drafts: one stage for the job, no pruned model involved.
    let mut spec = full_spec();
    spec.speculative.draft = DraftModel::Int8;
    let p = plan(&spec).unwrap();
    let speculate: Vec<_> = p
        .stages()
        .iter()
        .filter(|s| s.id.as_str().starts_with("speculate"))
        .collect();
    assert_eq!(speculate.len(), 1, "one int8 speculate stage");
    assert_eq!(speculate[0].id.as_str(), "speculate-int8");
    assert_eq!(speculate[0].inputs["target"].as_str(), "import");
    assert_eq!(speculate[0].inputs["draft"].as_str(), "import");
}

/// A change to the spec, the expected error, the field its message names.
type Case = (
    Box<dyn Fn(&mut PruneDistillJobSpec)>,
    PlanError,
    &'static str,
);

#[test]
fn invalid_specs_are_rejected_with_the_field_named() {
    let cases: Vec<Case> = vec![
        (
            Box::new(|s| s.pruning.block_sizes.clear()),
            PlanError::NoBlockSizes,
            "spec.pruning.blockSizes",
        ),
        (
            Box::new(|s| s.pruning.block_sizes = vec![0]),
            PlanError::ZeroBlockSize,
            "spec.pruning.blockSizes",
        ),
        (
            Box::new(|s| s.pruning.block_sizes = vec![4, 4]),
            PlanError::DuplicateBlockSize(4),
            "spec.pruning.blockSizes",
        ),
        (
            Box::new(|s| s.recovery.methods.clear()),
            PlanError::NoRecoveryMethods,
            "spec.recovery.methods",
        ),
        (
            Box::new(|s| {
                s.distillation.datasets.clear();
                s.merge.enabled = false;
            }),
            PlanError::MissingDatasets(RecoveryMethod::Sft),
            "spec.distillation.datasets",
        ),
        (
            Box::new(|s| s.distillation.datasets.push(gsm8k())),
            PlanError::DuplicateDatasetName("gsm8k".into()),
            "spec.distillation.datasets",
        ),
        (
            Box::new(|s| s.distillation.datasets[0].name = "GSM8K".into()),
            PlanError::InvalidDatasetName("GSM8K".into()),
            "spec.distillation.datasets",
        ),
        (
            Box::new(|s| s.merge.models = vec![RecoveryMethod::Sft]),
            PlanError::TooFewMergeModels(1),
            "spec.merge.models",
        ),
        (
            Box::new(|s| {
                s.merge.models = vec![
                    RecoveryMethod::Sft,
                    RecoveryMethod::SelfDistill,
                    RecoveryMethod::SelfDistillLogitKd,
                ]
            }),
            PlanError::MergeNeedsTwoModels {
                method: MergeMethod::Slerp,
                got: 3,
            },
            "spec.merge.models",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Nuslerp;
                s.merge.models = vec![
                    RecoveryMethod::Sft,
                    RecoveryMethod::SelfDistill,
                    RecoveryMethod::SelfDistillLogitKd,
                ]
            }),
            PlanError::MergeNeedsTwoModels {
                method: MergeMethod::Nuslerp,
                got: 3,
            },
            "spec.merge.models",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::TaskArithmetic;
                s.merge.weights = vec![1.0];
            }),
            PlanError::MergeWeightsCount {
                weights: 1,
                models: 2,
            },
            "spec.merge.weights",
        ),
        (
            Box::new(|s| s.merge.weights = vec![0.5, 0.5]),
            PlanError::MergeSettingNotUsed {
                field: "weights",
                method: MergeMethod::Slerp,
                used_by: "linear, task-arithmetic and ties",
            },
            "spec.merge.weights",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Linear;
                s.merge.normalize = Some(false);
            }),
            PlanError::MergeSettingNotUsed {
                field: "normalize",
                method: MergeMethod::Linear,
                used_by: "linear with weights, task-arithmetic and ties",
            },
            "spec.merge.normalize",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Ties;
                s.merge.weights = vec![1.0, 11.0];
            }),
            PlanError::MergeSettingOutOfRange {
                field: "weights",
                range: "between -10 and 10",
                value: "11".into(),
            },
            "spec.merge.weights",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::TaskArithmetic;
                s.merge.weights = vec![1.0, -1.0];
                s.merge.normalize = Some(true);
            }),
            PlanError::MergeWeightsSumToZero {
                method: MergeMethod::TaskArithmetic,
            },
            "spec.merge.normalize: false",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Linear;
                s.merge.weights = vec![2.0, -2.0];
            }),
            PlanError::MergeWeightsSumToZero {
                method: MergeMethod::Linear,
            },
            "spec.merge.weights",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::TaskArithmetic;
                s.merge.density = 0.5;
            }),
            PlanError::MergeSettingNotUsed {
                field: "density",
                method: MergeMethod::TaskArithmetic,
                used_by: "ties",
            },
            "spec.merge.density",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Ties;
                s.merge.density = 0.0;
            }),
            PlanError::MergeSettingOutOfRange {
                field: "density",
                range: "greater than 0 and at most 1",
                value: "0".into(),
            },
            "spec.merge.density",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Ties;
                s.merge.lambda = 10.5;
            }),
            PlanError::MergeSettingOutOfRange {
                field: "lambda",
                range: "between 0 and 10",
                value: "10.5".into(),
            },
            "spec.merge.lambda",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Nuslerp;
                s.merge.lambda = 2.0;
            }),
            PlanError::MergeSettingNotUsed {
                field: "lambda",
                method: MergeMethod::Nuslerp,
                used_by: "task-arithmetic and ties",
            },
            "spec.merge.lambda",
        ),
        (
            Box::new(|s| s.merge.normalize = Some(false)),
            PlanError::MergeSettingNotUsed {
                field: "normalize",
                method: MergeMethod::Slerp,
                used_by: "linear, task-arithmetic and ties",
            },
            "spec.merge.normalize",
        ),
        (
            Box::new(|s| {
                s.merge.method = MergeMethod::Linear;
                s.merge.models = vec![RecoveryMethod::Sft, RecoveryMethod::LogitKd];
            }),
            PlanError::MergeModelNotTrained(RecoveryMethod::LogitKd),
            "spec.merge.models",
        ),
        (
            Box::new(|s| s.merge.t_gradient = vec![0.0, 1.2]),
            PlanError::MergeFactorOutOfRange {
                field: "tGradient",
                value: "1.2".into(),
            },
            "spec.merge.tGradient",
        ),
        (
            Box::new(|s| {
                s.merge.enabled = false;
                s.speculative.draft = DraftModel::Merged;
            }),
            PlanError::MergedDraftWithoutMerge,
            "spec.speculative.draft",
        ),
        (
            Box::new(|s| s.evaluation.tasks.push(EvalTask::new(EvalTaskName::Piqa))),
            PlanError::DuplicateEvalTask("piqa".into()),
            "spec.evaluation.tasks",
        ),
        (
            Box::new(|s| s.storage.uri = "/tmp/out".into()),
            PlanError::InvalidStorageUri("/tmp/out".into()),
            "spec.storage.uri",
        ),
    ];
    for (mutate, expected, field) in cases {
        let mut spec = full_spec();
        mutate(&mut spec);
        let err = plan(&spec).unwrap_err();
        assert_eq!(err, expected);
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
}

#[test]
fn status_entries_start_pending() {
    use pruneforge_api::status::{LayerScoreStatus, StagePhase, StageStatus};
    let p = plan(&full_spec()).unwrap();
    let entries: Vec<StageStatus> = p.stages().iter().map(StageStatus::pending).collect();
    assert_eq!(entries.len(), p.len());
    assert!(entries
        .iter()
        .all(|e| e.phase == StagePhase::Pending && !e.phase.is_done()));
    assert_eq!(entries[2].id, "prune-n4");
    assert_eq!(entries[2].kind, StageKind::Prune);
    let scores = LayerScoreStatus {
        block_size: 6,
        start: 13,
        end: 18,
        score: 0.2,
        metric: pruneforge_api::spec::ScoreMetric::AngularLastToken,
        scores_uri: None,
    };
    assert_eq!(scores.block_range(), "13-18");
}

#[test]
fn compute_dtype_enters_keys_of_model_stages_only_when_not_f32() {
    use pruneforge_api::contract::{JobRef, StageRequest};
    use pruneforge_api::spec::{ComputeDevice, ComputeDtype};
    let cpu = plan(&full_spec()).unwrap();
    assert_eq!(cpu.compute.device, ComputeDevice::Cpu);
    assert_eq!(cpu.compute.dtype, ComputeDtype::F32);

    // GPUs per pod and `auto`: CUDA in bf16. Every stage but import computes with the model
    // or takes an input that does, so every key but import's moves.
    let mut gpu = full_spec();
    gpu.runner.gpu.count = 1;
    let on_gpu = plan(&gpu).unwrap();
    assert_eq!(on_gpu.compute.device, ComputeDevice::Cuda);
    assert_eq!(on_gpu.compute.dtype, ComputeDtype::Bf16);
    let all_but_import: BTreeSet<String> =
        ids(&cpu).into_iter().filter(|i| i != "import").collect();
    assert_eq!(changed(&cpu, &on_gpu), all_but_import);

    // f32 on the GPU keeps the CPU's keys: the device alone is no part of a key.
    gpu.compute.dtype = ComputeDtype::F32;
    let f32_gpu = plan(&gpu).unwrap();
    assert!(changed(&cpu, &f32_gpu).is_empty());
    assert_eq!(f32_gpu.compute.device, ComputeDevice::Cuda);

    // Requests carry the compute of model stages only.
    let job = JobRef {
        name: "j".into(),
        namespace: None,
    };
    let score = StageRequest::from_plan(&on_gpu, "score", job.clone()).unwrap();
    assert_eq!(score.compute, Some(on_gpu.compute));
    let prune = StageRequest::from_plan(&on_gpu, "prune-n4", job.clone()).unwrap();
    assert_eq!(prune.compute, None);
    let cpu_score = StageRequest::from_plan(&cpu, "score", job).unwrap();
    assert_eq!(
        cpu_score.compute, None,
        "CPU f32 requests stay as they were"
    );
}

#[test]
fn eval_presets_fill_the_shots_tasks_leave_unset() {
    use pruneforge_api::spec::EvalPreset;
    let shots_of = |spec: &PruneDistillJobSpec| -> BTreeMap<String, Option<u32>> {
        match &plan(spec).unwrap().get("eval-base").unwrap().params {
            StageParams::Eval(e) => e
                .tasks
                .iter()
                .map(|t| (t.name.as_str().to_string(), t.shots))
                .collect(),
            other => panic!("{other:?}"),
        }
    };
    let mut spec = full_spec();
    spec.evaluation.tasks = [
        EvalTaskName::ArcChallenge,
        EvalTaskName::Hellaswag,
        EvalTaskName::TruthfulqaMc2,
        EvalTaskName::Mmlu,
        EvalTaskName::Winogrande,
        EvalTaskName::Gsm8k,
        EvalTaskName::ArcEasy,
        EvalTaskName::Perplexity,
    ]
    .map(EvalTask::new)
    .to_vec();
    // An explicit count wins over the preset.
    spec.evaluation.tasks[1].shots = Some(3);
    let none = shots_of(&spec);
    assert!(none.values().filter(|s| s.is_some()).count() == 1);

    spec.evaluation.preset = Some(EvalPreset::OpenLlmLeaderboard);
    let leaderboard = shots_of(&spec);
    let expect = |pairs: &[(&str, Option<u32>)]| -> BTreeMap<String, Option<u32>> {
        pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    };
    assert_eq!(
        leaderboard,
        expect(&[
            ("arc_challenge", Some(25)),
            ("arc_easy", None),
            ("gsm8k", Some(5)),
            ("hellaswag", Some(3)),
            ("mmlu", Some(5)),
            ("perplexity", None),
            ("truthfulqa_mc2", Some(0)),
            ("winogrande", Some(5)),
        ])
    );
    spec.evaluation.preset = Some(EvalPreset::ZeroShot);
    let zero = shots_of(&spec);
    assert_eq!(zero["mmlu"], Some(0));
    assert_eq!(zero["hellaswag"], Some(3));
    assert_eq!(zero["perplexity"], None);
    // The preset changes the eval keys only.
    let mut a = spec.clone();
    a.evaluation.preset = None;
    let moved = changed(&plan(&a).unwrap(), &plan(&spec).unwrap());
    assert!(moved.iter().all(|id| id.starts_with("eval-")), "{moved:?}");
    assert!(!moved.is_empty());
}

#[test]
fn task_vector_merge_settings_enter_the_merge_key_only_when_set() {
    let a = plan(&full_spec()).unwrap();
    // The default request leaves the new settings out, so keys of earlier plans stay.
    let merge_request = |p: &Plan| match &p.get("merge-n6").unwrap().params {
        StageParams::Merge(m) => serde_json::to_value(m).unwrap(),
        other => panic!("{other:?}"),
    };
    let default_request = merge_request(&a);
    for field in ["weights", "density", "lambda", "normalize"] {
        assert!(
            default_request.get(field).is_none(),
            "{field} in {default_request}"
        );
    }
    let merged_downstream = set(&["merge-n4", "merge-n6", "eval-n4-merged", "eval-n6-merged"]);

    let mut ties = full_spec();
    ties.merge.method = MergeMethod::Ties;
    let b = plan(&ties).unwrap();
    assert_eq!(changed(&a, &b), merged_downstream);
    for (field, value) in [
        ("density", serde_json::json!(0.5)),
        ("lambda", serde_json::json!(1.5)),
        ("weights", serde_json::json!([2.0, 1.0])),
    ] {
        let mut spec = ties.clone();
        match field {
            "density" => spec.merge.density = 0.5,
            "lambda" => spec.merge.lambda = 1.5,
            _ => spec.merge.weights = vec![2.0, 1.0],
        }
        let c = plan(&spec).unwrap();
        assert_eq!(changed(&b, &c), merged_downstream, "{field}");
        assert_eq!(merge_request(&c)[field], value);
    }
    // normalize at the method's default is the same work as leaving it unset; the other value
    // is not.
    let mut spec = ties.clone();
    spec.merge.normalize = Some(true);
    assert!(changed(&b, &plan(&spec).unwrap()).is_empty());
    spec.merge.normalize = Some(false);
    let c = plan(&spec).unwrap();
    assert_eq!(changed(&b, &c), merged_downstream);
    assert_eq!(merge_request(&c)["normalize"], serde_json::json!(false));
    let mut spec = full_spec();
    spec.merge.method = MergeMethod::TaskArithmetic;
    spec.merge.normalize = Some(false);
    let ta = plan(&spec).unwrap();
    spec.merge.normalize = None;
    assert!(changed(&ta, &plan(&spec).unwrap()).is_empty());
    // The merge stage of every method reads the pruned model as `base`.
    let inputs: Vec<&str> = b
        .get("merge-n6")
        .unwrap()
        .inputs
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(inputs, ["base", "model-0", "model-1"]);
}

#[test]
fn control_seeds_repeat_the_sft_arm_with_another_seed() {
    let base = full_spec();
    let mut spec = full_spec();
    spec.recovery.control_seeds = vec![7];
    let p = plan(&spec).unwrap();
    let before = plan(&base).unwrap();
    // One more fine-tune and one more eval per block size; nothing else moves.
    let added: BTreeSet<String> = ids(&p).difference(&ids(&before)).cloned().collect();
    assert_eq!(
        added,
        set(&[
            "finetune-n4-sft-seed7",
            "finetune-n6-sft-seed7",
            "eval-n4-sft-seed7",
            "eval-n6-sft-seed7",
        ])
    );
    let kp = keys(&p);
    for (id, key) in keys(&before) {
        assert_eq!(kp[&id], key, "{id} moved");
    }
    let control = p.get("finetune-n6-sft-seed7").unwrap();
    let arm = p.get("finetune-n6-sft").unwrap();
    let (StageParams::Finetune(c), StageParams::Finetune(a)) = (&control.params, &arm.params)
    else {
        panic!("finetune params expected");
    };
    assert_eq!(c.optimizer.seed, 7);
    let mut same = c.clone();
    same.optimizer.seed = a.optimizer.seed;
    assert_eq!(&same, a, "only the seed differs");
    assert_eq!(control.inputs, arm.inputs);
    assert_ne!(control.key, arm.key);
    assert_eq!(
        p.get("eval-n6-sft-seed7").unwrap().inputs["model"].as_str(),
        "finetune-n6-sft-seed7"
    );

    let mut no_sft = full_spec();
    no_sft.recovery.methods = vec![RecoveryMethod::None, RecoveryMethod::SelfDistill];
    no_sft.merge.enabled = false;
    no_sft.recovery.control_seeds = vec![7];
    assert_eq!(plan(&no_sft).unwrap_err(), PlanError::ControlWithoutSft);
    let mut same_seed = full_spec();
    same_seed.recovery.control_seeds = vec![same_seed.recovery.optimizer.seed];
    assert_eq!(
        plan(&same_seed).unwrap_err(),
        PlanError::ControlSeedIsTheArmSeed(same_seed.recovery.optimizer.seed)
    );
}

fn width(name: &str, block_size: Option<u32>, intermediate: &str) -> WidthVariant {
    WidthVariant {
        name: name.into(),
        block_size,
        targets: WidthTargets {
            intermediate_size: Some(
                intermediate
                    .parse::<u32>()
                    .map(WidthSize::Count)
                    .unwrap_or_else(|_| WidthSize::Percent(intermediate.into())),
            ),
            ..WidthTargets::default()
        },
    }
}

#[test]
fn width_variants_join_the_grid_and_leave_depth_keys_alone() {
    let depth_only = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.pruning.widths = vec![width("mlp73", None, "73%"), width("mix", Some(3), "1332")];
    let p = plan(&spec).unwrap();
    let all = ids(&p);
    for id in [
        "prune-w-mlp73",
        "prune-n3-w-mix",
        "finetune-w-mlp73-sft",
        "finetune-n3-w-mix-self-distill",
        "merge-w-mlp73",
        "eval-w-mlp73",
        "eval-n3-w-mix-merged",
        "speculate-n3-w-mix",
    ] {
        assert!(all.contains(id), "{id} missing from {all:?}");
    }
    // The score stage now also scores width (and block size 3): its key and everything
    // downstream of it move; the stages that do not read the scores keep theirs.
    let (a, b) = (keys(&depth_only), keys(&p));
    assert_ne!(a["score"], b["score"]);
    assert_eq!(a["import"], b["import"]);
    assert_eq!(a["distill-gsm8k"], b["distill-gsm8k"]);
    assert_eq!(a["eval-base"], b["eval-base"]);
    let score = p
        .stages()
        .iter()
        .find(|s| s.id.as_str() == "score")
        .unwrap();
    let StageParams::Score(sp) = &score.params else {
        panic!("score params")
    };
    assert_eq!(sp.block_sizes, vec![3, 4, 6]);
    assert!(sp.width.is_some());
    // The width prune stages read the scores and carry their targets; the combined one also
    // removes a block.
    let prune = |id: &str| {
        let s = p.stages().iter().find(|s| s.id.as_str() == id).unwrap();
        assert!(s.inputs.contains_key("scores"), "{id}");
        match &s.params {
            StageParams::Prune(pp) => pp.clone(),
            other => panic!("{other:?}"),
        }
    };
    let w = prune("prune-w-mlp73");
    assert_eq!(
        (w.block_size, w.width_variant.as_deref()),
        (0, Some("mlp73"))
    );
    let m = prune("prune-n3-w-mix");
    assert_eq!(m.block_size, 3);
    assert_eq!(
        m.width.and_then(|t| t.intermediate_size),
        Some(WidthSize::Count(1332))
    );
    // A variant's name is not part of any key: renaming it reuses every artifact.
    let mut renamed = spec.clone();
    renamed.pruning.widths[0].name = "other".into();
    let r = plan(&renamed).unwrap();
    let kr = keys(&r);
    assert_eq!(b["prune-w-mlp73"], kr["prune-w-other"]);
    assert_eq!(b["eval-w-mlp73-sft"], kr["eval-w-other-sft"]);
    // A width-only job needs no block size.
    let mut only = full_spec();
    only.pruning.block_sizes.clear();
    only.pruning.widths = vec![width("mlp73", None, "73%")];
    let o = plan(&only).unwrap();
    assert!(ids(&o)
        .iter()
        .all(|id| !id.contains("-n4") && !id.contains("-n6")));
    let StageParams::Score(sp) = &o.stages()[1].params else {
        panic!("score params")
    };
    assert!(sp.block_sizes.is_empty());
}

#[test]
fn invalid_width_variants_are_rejected_with_the_entry_named() {
    let cases: Vec<(WidthVariant, &str)> = vec![
        (width("Bad_Name", None, "50%"), "name"),
        (width("x", Some(0), "50%"), "blockSize"),
        (width("x", None, "150%"), "intermediateSize"),
        (width("x-merged", None, "50%"), "recovery method"),
        (width("half-sft", None, "50%"), "recovery method"),
        (width("a-logit-kd", None, "50%"), "recovery method"),
        (width("b-sft-seed7", None, "50%"), "recovery method"),
        (
            WidthVariant {
                name: "empty".into(),
                block_size: None,
                targets: WidthTargets::default(),
            },
            "no target width",
        ),
    ];
    for (variant, needle) in cases {
        let mut spec = full_spec();
        spec.pruning.widths = vec![variant];
        let e = plan(&spec).unwrap_err();
        assert!(
            matches!(e, PlanError::InvalidWidthVariant { index: 0, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }
    let mut spec = full_spec();
    spec.pruning.widths = vec![width("a", None, "50%"), width("a", Some(2), "60%")];
    let e = plan(&spec).unwrap_err().to_string();
    assert!(e.contains("widths[1]") && e.contains("twice"), "{e}");
    let mut spec = full_spec();
    spec.pruning.block_sizes.clear();
    assert_eq!(plan(&spec).unwrap_err(), PlanError::NoBlockSizes);
}

#[test]
fn hidden_state_kd_reaches_only_the_kd_fine_tunes_and_their_keys() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.recovery.kd.hidden_states = Some(HiddenStatesKd {
        weight: 0.5,
        layers: vec![3, 11],
    });
    let b = plan(&spec).unwrap();
    // Only the self-distill+logit-kd arms and what they feed move.
    let moved = changed(&a, &b);
    assert!(!moved.is_empty());
    for id in &moved {
        assert!(
            id.contains("self-distill-logit-kd")
                || id.starts_with("merge")
                || id.ends_with("merged"),
            "{id} moved"
        );
    }
    for id in [
        "finetune-n6-self-distill-logit-kd",
        "finetune-n4-self-distill-logit-kd",
    ] {
        assert!(moved.contains(id), "{id} kept its key: {moved:?}");
    }
    let request = |id: &str| match &b.get(id).unwrap().params {
        StageParams::Finetune(f) => serde_json::to_value(f).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        request("finetune-n6-self-distill-logit-kd")["kdHiddenStates"],
        serde_json::json!({"weight": 0.5, "layers": [3, 11]})
    );
    assert!(request("finetune-n6-sft").get("kdHiddenStates").is_none());
}

#[test]
fn teacher_correction_feeds_kd_and_self_distillation() {
    let a = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.recovery.teacher_correction = Some(TeacherCorrectionSpec {
        steps: Some(8),
        learning_rate: None,
    });
    let b = plan(&spec).unwrap();
    let tc = b.get("finetune-teacher").expect("teacher correction stage");
    assert_eq!(tc.inputs["model"].as_str(), "import");
    let StageParams::Finetune(p) = &tc.params else {
        panic!("{:?}", tc.params)
    };
    assert!(p.teacher_correction);
    assert_eq!(p.optimizer.steps, 8);
    assert_eq!(p.datasets, spec.distillation.datasets);
    // The corrected model rewrites the data and teaches KD; sft on the original data and the
    // unpruned arms keep their keys.
    assert_eq!(
        b.get("distill-gsm8k").unwrap().inputs["model"].as_str(),
        "finetune-teacher"
    );
    assert_eq!(
        b.get("finetune-n6-self-distill-logit-kd").unwrap().inputs["teacher"].as_str(),
        "finetune-teacher"
    );
    let moved = changed_common(&a, &b);
    for id in [
        "finetune-n6-sft",
        "prune-n6",
        "eval-n6",
        "eval-base",
        "score",
    ] {
        assert!(!moved.contains(id), "{id} moved");
    }
    for id in [
        "distill-gsm8k",
        "finetune-n6-self-distill",
        "eval-n6-self-distill",
    ] {
        assert!(moved.contains(id), "{id} kept its key");
    }
    // A changed schedule reruns the correction and what learns from it, nothing else.
    let mut longer = spec.clone();
    longer.recovery.teacher_correction = Some(TeacherCorrectionSpec {
        steps: Some(16),
        learning_rate: None,
    });
    let moved = changed_common(&b, &plan(&longer).unwrap());
    for id in [
        "finetune-teacher",
        "distill-gsm8k",
        "finetune-n6-self-distill",
    ] {
        assert!(moved.contains(id), "{id} kept its key");
    }
    for id in ["finetune-n6-sft", "prune-n6", "eval-base"] {
        assert!(!moved.contains(id), "{id} moved");
    }
    // Nothing to use it for, or nothing to train on: refused.
    let mut unused = spec.clone();
    unused.recovery.methods = vec![RecoveryMethod::None, RecoveryMethod::Sft];
    unused.merge.enabled = false;
    assert!(matches!(
        plan(&unused),
        Err(PlanError::TeacherCorrectionUnused)
    ));
    // sft+logit-kd at kd.ratio 0 has no teacher input in the plan: nothing would use it.
    let mut no_kd = spec.clone();
    no_kd.recovery.methods = vec![RecoveryMethod::None, RecoveryMethod::SftLogitKd];
    no_kd.recovery.kd.ratio = 0.0;
    no_kd.merge.enabled = false;
    assert!(matches!(
        plan(&no_kd),
        Err(PlanError::TeacherCorrectionUnused)
    ));
    let mut no_data = spec.clone();
    no_data.distillation.datasets.clear();
    no_data.recovery.methods = vec![RecoveryMethod::None, RecoveryMethod::LogitKd];
    no_data.merge.enabled = false;
    assert!(matches!(
        plan(&no_data),
        Err(PlanError::MissingDatasets(RecoveryMethod::LogitKd))
    ));
}

/// Ids present in both plans whose key differs.
fn changed_common(a: &Plan, b: &Plan) -> BTreeSet<String> {
    let (ka, kb) = (keys(a), keys(b));
    ka.iter()
        .filter(|(id, k)| kb.get(*id).is_some_and(|v| v != *k))
        .map(|(id, _)| id.clone())
        .collect()
}

fn with_preference(spin_iterations: u32) -> PruneDistillJobSpec {
    use pruneforge_api::spec::{
        DpoSpec, PreferenceDataset, PreferenceLoss, PreferenceSpec, SpinSpec,
    };
    let mut spec = full_spec();
    spec.pruning.block_sizes = vec![6];
    spec.recovery.preference = Some(PreferenceSpec {
        after: vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill],
        dpo: Some(DpoSpec {
            dataset: PreferenceDataset {
                uri: "s3://bucket/pairs.jsonl".into(),
                limit: Some(64),
                offset: 0,
            },
            beta: 0.1,
            loss: PreferenceLoss::Sigmoid,
            label_smoothing: 0.0,
        }),
        spin: Some(SpinSpec {
            iterations: spin_iterations,
            beta: 0.1,
            loss: PreferenceLoss::Sigmoid,
            prompts: Some(16),
        }),
        steps: Some(8),
        learning_rate: None,
    });
    spec
}

#[test]
fn preference_stages_follow_their_fine_tunes_and_spin_iterations_chain() {
    let base = plan(&full_spec()).unwrap();
    let p = plan(&with_preference(2)).unwrap();
    for (id, input) in [
        ("prefer-n6-sft-dpo", "finetune-n6-sft"),
        ("prefer-n6-self-distill-dpo", "finetune-n6-self-distill"),
        ("prefer-n6-sft-spin1", "finetune-n6-sft"),
        ("prefer-n6-sft-spin2", "prefer-n6-sft-spin1"),
        (
            "prefer-n6-self-distill-spin2",
            "prefer-n6-self-distill-spin1",
        ),
    ] {
        let s = p.get(id).unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(s.inputs["model"].as_str(), input, "{id}");
        assert_eq!(s.params.kind(), StageKind::Prefer);
        let eval = format!("eval-{}", id.trim_start_matches("prefer-"));
        assert_eq!(p.get(&eval).unwrap().inputs["model"].as_str(), id);
    }
    assert!(p.get("prefer-n6-self-distill-logit-kd-dpo").is_none());
    // Each SPIN iteration generates in a self-play stage, sharded like distill, from the model
    // that iteration starts from; its prefer stage trains on those pairs.
    for (k, model) in [(1, "finetune-n6-sft"), (2, "prefer-n6-sft-spin1")] {
        let gen_id = format!("self-play-n6-sft-spin{k}");
        let g = p.get(&gen_id).unwrap_or_else(|| panic!("{gen_id} missing"));
        assert_eq!(g.params.kind(), StageKind::SelfPlay);
        assert_eq!(g.inputs["model"].as_str(), model);
        assert_eq!(g.shards, with_preference(2).distillation.shards.max(1));
        let StageParams::SelfPlay(sp) = &g.params else {
            panic!()
        };
        assert_eq!((sp.iteration, sp.prompts), (k, Some(16)));
        let t = p.get(&format!("prefer-n6-sft-spin{k}")).unwrap();
        assert_eq!(t.inputs["pairs"].as_str(), gen_id);
    }
    let mut sharded = with_preference(1);
    sharded.distillation.shards = 3;
    assert_eq!(
        plan(&sharded)
            .unwrap()
            .get("self-play-n6-sft-spin1")
            .unwrap()
            .shards,
        3
    );
    assert!(p.get("self-play-n6-sft-dpo").is_none());
    let StageParams::Prefer(pp) = &p.get("prefer-n6-sft-spin2").unwrap().params else {
        panic!()
    };
    assert_eq!(pp.optimizer.steps, 8);
    assert_eq!(pp.suffix(), "spin2");
    // The rest of the plan keeps its keys.
    let moved = changed_common(
        &base,
        &plan(&{
            let mut s = with_preference(2);
            s.pruning.block_sizes = vec![6, 4];
            s
        })
        .unwrap(),
    );
    assert!(moved.is_empty(), "{moved:?}");
    // A longer SPIN run reuses the earlier iterations; another beta reruns them all.
    let longer = plan(&with_preference(3)).unwrap();
    assert!(longer.get("prefer-n6-sft-spin3").is_some());
    assert!(changed_common(&p, &longer).is_empty());
    let mut other = with_preference(2);
    other
        .recovery
        .preference
        .as_mut()
        .unwrap()
        .spin
        .as_mut()
        .unwrap()
        .beta = 0.2;
    let moved = changed_common(&p, &plan(&other).unwrap());
    // Iteration 1's answers come from the fine-tune and stay; iteration 2's come from
    // iteration 1's trained model and move with it.
    assert_eq!(
        moved,
        set(&[
            "self-play-n6-sft-spin2",
            "self-play-n6-self-distill-spin2",
            "prefer-n6-sft-spin1",
            "prefer-n6-sft-spin2",
            "prefer-n6-self-distill-spin1",
            "prefer-n6-self-distill-spin2",
            "eval-n6-sft-spin1",
            "eval-n6-sft-spin2",
            "eval-n6-self-distill-spin1",
            "eval-n6-self-distill-spin2",
        ])
    );
}

#[test]
fn preference_specs_that_cannot_run_are_refused() {
    use pruneforge_api::spec::PreferenceLoss;
    let mut s = with_preference(2);
    s.recovery.preference.as_mut().unwrap().after = vec![RecoveryMethod::SftLogitKd];
    assert!(matches!(
        plan(&s),
        Err(PlanError::PreferenceAfterUntrained(
            RecoveryMethod::SftLogitKd
        ))
    ));
    type Edit = Box<dyn Fn(&mut PruneDistillJobSpec)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|s| {
                let p = s.recovery.preference.as_mut().unwrap();
                p.dpo = None;
                p.spin = None;
            }),
            "set dpo, spin or both",
        ),
        (
            Box::new(|s| {
                s.recovery
                    .preference
                    .as_mut()
                    .unwrap()
                    .dpo
                    .as_mut()
                    .unwrap()
                    .loss = PreferenceLoss::Ipo;
                s.recovery
                    .preference
                    .as_mut()
                    .unwrap()
                    .dpo
                    .as_mut()
                    .unwrap()
                    .label_smoothing = 0.1;
            }),
            "labelSmoothing applies",
        ),
        (
            Box::new(|s| {
                s.recovery
                    .preference
                    .as_mut()
                    .unwrap()
                    .spin
                    .as_mut()
                    .unwrap()
                    .loss = PreferenceLoss::Ipo;
            }),
            "SPIN uses sigmoid or hinge",
        ),
        (
            Box::new(|s| {
                s.recovery
                    .preference
                    .as_mut()
                    .unwrap()
                    .spin
                    .as_mut()
                    .unwrap()
                    .beta = 0.0;
            }),
            "spin.beta",
        ),
    ];
    for (edit, needle) in cases {
        let mut s = with_preference(2);
        edit(&mut s);
        let e = plan(&s).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}

/// `merge.across: datasets`: the paper merges two models self-distilled on different data sets.
#[test]
fn merging_across_data_sets_fine_tunes_one_method_per_data_set() {
    use pruneforge_api::spec::MergeAcross;
    let alpaca = DistillDataset {
        name: "alpaca".into(),
        uri: "builtin:alpaca".into(),
        format: DatasetFormat::Alpaca,
        fields: None,
        kind: DataKind::General,
        limit: Some(16),
        offset: 1000,
    };
    let mut spec = PruneDistillJobSpec::with_storage("s3://bucket/pf");
    spec.pruning.block_sizes = vec![6];
    spec.distillation.datasets = vec![gsm8k(), alpaca];
    spec.recovery.methods = vec![
        RecoveryMethod::None,
        RecoveryMethod::Sft,
        RecoveryMethod::SelfDistill,
    ];
    spec.merge.enabled = true;
    spec.merge.method = MergeMethod::Nuslerp;
    spec.merge.models = vec![RecoveryMethod::SelfDistill];
    spec.merge.across = MergeAcross::Datasets;
    let p = plan(&spec).expect("valid");
    let inputs = |id: &str| -> BTreeMap<String, String> {
        p.get(id)
            .unwrap_or_else(|| panic!("no stage {id}"))
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    };
    let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // Each per-data-set fine-tune reads only its own distilled set; the pooled one reads both.
    assert_eq!(
        inputs("finetune-n6-self-distill-on-gsm8k"),
        m(&[("model", "prune-n6"), ("data-gsm8k", "distill-gsm8k")])
    );
    assert_eq!(
        inputs("finetune-n6-self-distill-on-alpaca"),
        m(&[("model", "prune-n6"), ("data-alpaca", "distill-alpaca")])
    );
    assert_eq!(inputs("finetune-n6-self-distill").len(), 3);
    assert_eq!(
        inputs("merge-n6"),
        m(&[
            ("base", "prune-n6"),
            ("model-0", "finetune-n6-self-distill-on-gsm8k"),
            ("model-1", "finetune-n6-self-distill-on-alpaca")
        ])
    );
    match &p.get("merge-n6").unwrap().params {
        StageParams::Merge(mp) => {
            assert_eq!(mp.datasets, vec!["gsm8k".to_string(), "alpaca".to_string()]);
            assert_eq!(mp.models, vec![RecoveryMethod::SelfDistill; 2]);
        }
        other => panic!("{other:?}"),
    }
    for v in [
        "n6-self-distill-on-gsm8k",
        "n6-self-distill-on-alpaca",
        "n6-merged",
    ] {
        assert!(p.get(&format!("eval-{v}")).is_some(), "eval-{v}");
    }
    // The sft arm trains on the original data sets, one per data set as well when it is merged.
    let mut sft = spec.clone();
    sft.merge.models = vec![RecoveryMethod::Sft];
    let ps = plan(&sft).expect("valid");
    match &ps.get("finetune-n6-sft-on-alpaca").unwrap().params {
        StageParams::Finetune(f) => {
            assert_eq!(f.datasets.len(), 1);
            assert_eq!(f.datasets[0].name, "alpaca");
        }
        other => panic!("{other:?}"),
    }
    // Settings that cannot work are refused with the field named.
    let mut two_methods = spec.clone();
    two_methods.merge.models = vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill];
    assert!(matches!(
        plan(&two_methods),
        Err(PlanError::MergeAcrossDatasets { methods: 2, .. })
    ));
    let mut one_set = spec.clone();
    one_set.distillation.datasets.truncate(1);
    assert!(matches!(
        plan(&one_set),
        Err(PlanError::MergeAcrossDatasets { datasets: 1, .. })
    ));
    // The default (across methods) plans exactly as before: no per-data-set stages.
    let mut methods = spec.clone();
    methods.merge.across = MergeAcross::Methods;
    methods.merge.models = vec![RecoveryMethod::Sft, RecoveryMethod::SelfDistill];
    let pm = plan(&methods).expect("valid");
    assert!(pm.get("finetune-n6-self-distill-on-alpaca").is_none());
}

#[test]
fn a_quantized_lora_base_moves_only_the_fine_tunes_and_what_follows_them() {
    // (full_spec's speculation drafts with the pruned model, so it does not move.)
    let before = plan(&full_spec()).unwrap();
    let mut spec = full_spec();
    spec.recovery.lora.base_quantization = Some(pruneforge_api::spec::BaseQuantization::Nf4);
    let after = plan(&spec).unwrap();
    let moved = changed(&before, &after);
    for id in ids(&before) {
        let downstream_of_training = id.starts_with("finetune-")
            || id.starts_with("merge-")
            // eval-n4 evaluates the pruned model as is; eval-n4-<method> a fine-tune.
            || (id.starts_with("eval-n") && id.matches('-').count() >= 2);
        assert_eq!(moved.contains(&id), downstream_of_training, "{id}");
    }
    // Unset, the field is not serialized: float-base cache keys stay what they were.
    let lora = serde_json::to_value(full_spec().recovery.lora).unwrap();
    assert!(lora.get("baseQuantization").is_none(), "{lora}");
    let lora = serde_json::to_value(&spec.recovery.lora).unwrap();
    assert_eq!(lora["baseQuantization"], "nf4");
    // QLoRA runs on the CPU: a cuda compute spec is refused with what to change.
    spec.compute.device = pruneforge_api::spec::ComputeDevice::Cuda;
    let e = plan(&spec).unwrap_err();
    assert_eq!(
        e,
        PlanError::QuantizedBaseOnGpu(pruneforge_api::spec::BaseQuantization::Nf4)
    );
    assert!(e.to_string().contains("spec.compute.device: cpu"), "{e}");
}

#[test]
fn a_quantized_base_trains_the_fine_tunes_but_not_the_preference_stages() {
    let mut spec = with_preference(2);
    spec.recovery.lora.base_quantization = Some(pruneforge_api::spec::BaseQuantization::Nf4);
    let p = plan(&spec).unwrap();
    let mut fine_tunes = 0;
    let mut preference = 0;
    for s in p.stages() {
        match &s.params {
            StageParams::Finetune(f) => {
                fine_tunes += 1;
                assert_eq!(
                    f.lora.base_quantization,
                    Some(pruneforge_api::spec::BaseQuantization::Nf4),
                    "{}",
                    s.id
                );
            }
            // A preference stage starts from a merged fine-tune: quantizing it again would
            // round away most of that fine-tune's adapter.
            StageParams::Prefer(pp) => {
                preference += 1;
                assert_eq!(pp.lora.base_quantization, None, "{}", s.id);
            }
            _ => {}
        }
    }
    assert!(fine_tunes > 0 && preference > 0);
    // So the preference stages' keys are those of the float-base spec.
    let float = plan(&with_preference(2)).unwrap();
    for s in p
        .stages()
        .iter()
        .filter(|s| matches!(s.params, StageParams::Prefer(_)))
    {
        let f = float.get(s.id.as_ref()).unwrap();
        assert_eq!(s.params, f.params, "{}", s.id);
    }
}
