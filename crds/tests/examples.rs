//! Every manifest under `examples/` is valid against the CRD (schema + CEL + types) and plans;
//! invalid manifests are rejected with errors that name the field to fix.

use std::path::PathBuf;

use pruneforge_api::crd::CRD_FILE;
use pruneforge_api::plan::plan;
use pruneforge_api::validate::{load_documents, ErrorOrigin, ManifestValidator, ValidationReport};
use serde_json::{json, Value};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// The validator built from the committed CRD file (what `kubectl apply` installs).
fn committed_validator() -> ManifestValidator {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(CRD_FILE))
        .expect("committed CRD");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
    let schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .expect("openAPIV3Schema")
        .clone();
    ManifestValidator::with_schema(schema)
}

#[test]
fn every_example_validates_and_plans() {
    let files = example_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(names.contains(&"quickstart.yaml".to_string()), "{names:?}");
    assert!(names.contains(&"paper-repro.yaml".to_string()), "{names:?}");
    let validator = committed_validator();
    let mut documents = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // A manifest may carry what the job needs beside it (the cluster quickstart's claim).
        let (ours, theirs): (Vec<Value>, Vec<Value>) = load_documents(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .into_iter()
            .partition(|d| {
                d["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("pruneforge.dev/"))
            });
        for doc in &theirs {
            assert_eq!(doc["kind"], "PersistentVolumeClaim", "{}", file.display());
        }
        let jobs = ours.iter().map(|doc| {
            validator
                .validate(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        });
        for job in jobs {
            let p = plan(&job.spec).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(p.len() > 3, "{}", file.display());
            documents += 1;
        }
    }
    assert!(documents >= 2);
}

#[test]
fn quickstart_plans_the_documented_stages() {
    let text = std::fs::read_to_string(examples_dir().join("quickstart.yaml")).unwrap();
    let jobs = ManifestValidator::new().validate_yaml(&text).unwrap();
    let p = plan(&jobs[0].spec).unwrap();
    let ids: Vec<String> = p
        .topological_order()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "import",
            "score",
            "prune-n6",
            "distill-alpaca",
            "finetune-n6-sft",
            "finetune-n6-self-distill",
            "merge-n6",
            "eval-base",
            "eval-n6",
            "eval-n6-sft",
            "eval-n6-self-distill",
            "eval-n6-merged",
            "speculate-int8",
        ]
    );
    assert!(p.stages()[0]
        .artifact_uri
        .starts_with("file://./pruneforge-out/import/"));
}

#[test]
fn cluster_quickstart_is_the_quickstart_on_a_claim_every_stage_pod_mounts() {
    let text = std::fs::read_to_string(examples_dir().join("cluster-quickstart.yaml")).unwrap();
    let docs = load_documents(&text).unwrap();
    assert_eq!(docs.len(), 2);
    let (claim, mut job) = (docs[0].clone(), docs[1].clone());
    assert_eq!(claim["kind"], "PersistentVolumeClaim");
    let storage = job["spec"]["storage"].clone();
    assert_eq!(storage["pvcName"], claim["metadata"]["name"]);
    assert!(storage["uri"]
        .as_str()
        .is_some_and(|u| u.starts_with("file:///")));
    // One place per fact: the job is the quickstart's but for where it stores.
    let mut local = quickstart();
    local["spec"]["storage"] = Value::Null;
    job["spec"]["storage"] = Value::Null;
    assert_eq!(job, local);
    let p = plan(&ManifestValidator::new().validate(&docs[1]).unwrap().spec).unwrap();
    assert!(p.stages()[0]
        .artifact_uri
        .starts_with("file:///data/pruneforge/import/"));
}

#[test]
fn paper_repro_covers_block_sizes_times_methods() {
    let text = std::fs::read_to_string(examples_dir().join("paper-repro.yaml")).unwrap();
    let jobs = ManifestValidator::new().validate_yaml(&text).unwrap();
    let p = plan(&jobs[0].spec).unwrap();
    for n in [2, 4, 6, 8] {
        for id in [
            format!("prune-n{n}"),
            format!("finetune-n{n}-sft"),
            format!("finetune-n{n}-self-distill"),
            format!("merge-n{n}"),
            format!("eval-n{n}"),
            format!("eval-n{n}-sft"),
            format!("eval-n{n}-self-distill"),
            format!("eval-n{n}-merged"),
            format!("speculate-n{n}"),
            // The paper's merge: self-distilled on each data set alone, then merged.
            format!("finetune-n{n}-self-distill-on-gsm8k"),
            format!("finetune-n{n}-self-distill-on-alpaca"),
            format!("eval-n{n}-self-distill-on-gsm8k"),
            format!("eval-n{n}-self-distill-on-alpaca"),
        ] {
            assert!(p.get(&id).is_some(), "{id} missing");
        }
        let merge = &p.get(&format!("merge-n{n}")).unwrap().inputs;
        assert_eq!(
            merge["model-0"].as_str(),
            format!("finetune-n{n}-self-distill-on-gsm8k")
        );
        assert_eq!(
            merge["model-1"].as_str(),
            format!("finetune-n{n}-self-distill-on-alpaca")
        );
    }
    assert_eq!(p.get("distill-gsm8k").unwrap().shards, 4);
    assert_eq!(
        p.get("speculate-n6").unwrap().inputs["draft"].as_str(),
        "merge-n6"
    );
}

/// Changes to the quickstart (JSON pointer, new value), the error path, a message fragment.
type Case<'a> = (Vec<(&'a str, Value)>, &'a str, &'a str);

fn quickstart() -> Value {
    let text = std::fs::read_to_string(examples_dir().join("quickstart.yaml")).unwrap();
    load_documents(&text).unwrap().remove(0)
}

/// Sets `value` at a JSON pointer, creating objects on the way; `Value::Null` removes the field.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let mut node = doc;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            other => other
                .as_object_mut()
                .unwrap()
                .entry(part.to_string())
                .or_insert_with(|| json!({})),
        };
    }
    let obj = node.as_object_mut().unwrap();
    if value.is_null() {
        obj.remove(last);
    } else {
        obj.insert(last.to_string(), value);
    }
}

fn rejected(changes: &[(&str, Value)]) -> ValidationReport {
    let mut doc = quickstart();
    for (pointer, value) in changes {
        set(&mut doc, pointer, value.clone());
    }
    match ManifestValidator::new().validate(&doc) {
        Ok(_) => panic!("accepted an invalid manifest: {changes:?}"),
        Err(report) => report,
    }
}

fn assert_names(report: &ValidationReport, origin: ErrorOrigin, path: &str, message: &str) {
    let hit = report
        .errors
        .iter()
        .any(|e| e.origin == origin && e.path == path && e.message.contains(message));
    assert!(
        hit,
        "expected a {origin:?} error at {path:?} containing {message:?}; got:\n{report}"
    );
    // The rendered report names the field, whichever check produced it.
    assert!(report.to_string().contains(path), "{report}");
}

#[test]
fn schema_violations_name_the_field() {
    let cases: Vec<Case> = vec![
        (
            vec![("/spec/pruning/blockSizes", json!([0]))],
            "spec.pruning.blockSizes[0]",
            "greater than or equal to 1",
        ),
        (
            vec![("/spec/pruning/blockSizes", json!([4, 4]))],
            "spec.pruning.blockSizes[1]",
            "duplicate value 4",
        ),
        (
            vec![("/spec/pruning/metric", json!("cosine"))],
            "spec.pruning.metric",
            "unsupported value \"cosine\"",
        ),
        (
            vec![("/spec/pruning/blocksizes", json!([6]))],
            "spec.pruning.blocksizes",
            "unknown field \"blocksizes\"",
        ),
        (
            vec![("/spec/recovery/kd/ratio", json!(1.5))],
            "spec.recovery.kd.ratio",
            "less than or equal to 1",
        ),
        (
            vec![("/spec/recovery/methods", json!(["sft", "magic"]))],
            "spec.recovery.methods[1]",
            "unsupported value \"magic\"",
        ),
        (
            vec![("/spec/storage", Value::Null)],
            "spec.storage",
            "Required value",
        ),
        (
            vec![("/spec/calibration/seqLen", json!("long"))],
            "spec.calibration.seqLen",
            "must be of type integer",
        ),
        (
            vec![(
                "/spec/distillation/datasets",
                json!([
            {"name": "a", "uri": "builtin:alpaca", "format": "alpaca"},
            {"name": "a", "uri": "builtin:gsm8k-train", "format": "gsm8k"}]),
            )],
            "spec.distillation.datasets[1]",
            "duplicate entry with key (name)",
        ),
        (
            vec![("/spec/distillation/datasets/0/name", json!("GSM 8k"))],
            "spec.distillation.datasets[0].name",
            "must match the pattern",
        ),
        (
            vec![("/spec/merge/tGradient", json!([0.0, 1.5]))],
            "spec.merge.tGradient[1]",
            "less than or equal to 1",
        ),
        (
            vec![
                ("/spec/merge/method", json!("ties")),
                ("/spec/merge/weights", json!([1.0, 12.0])),
            ],
            "spec.merge.weights[1]",
            "less than or equal to 10",
        ),
        (
            vec![("/spec/merge/method", json!("merge-all"))],
            "spec.merge.method",
            "unsupported value \"merge-all\"",
        ),
        (
            vec![("/spec/runner/resources", json!({"limits": {"memory": [1]}}))],
            "spec.runner.resources.limits.memory",
            "integer or a string",
        ),
    ];
    for (changes, path, message) in cases {
        let report = rejected(&changes);
        assert_names(&report, ErrorOrigin::Schema, path, message);
    }
}

#[test]
fn cel_violations_name_the_field() {
    let cases: Vec<Case> = vec![
        (
            vec![("/spec/pruning/blockSizes", json!([]))],
            "spec.pruning.blockSizes",
            "list at least one block size or width variant",
        ),
        (
            vec![("/spec/merge/models", json!(["sft"]))],
            "spec.merge.models",
            "spec.merge.models: slerp and nuslerp merge exactly 2 models",
        ),
        (
            vec![
                (
                    "/spec/recovery/methods",
                    json!(["none", "sft", "self-distill", "logit-kd"]),
                ),
                ("/spec/merge/method", json!("nuslerp")),
                (
                    "/spec/merge/models",
                    json!(["sft", "self-distill", "logit-kd"]),
                ),
            ],
            "spec.merge.models",
            "slerp and nuslerp merge exactly 2 models",
        ),
        (
            vec![("/spec/merge/weights", json!([1.0, 2.0]))],
            "spec.merge.weights",
            "only linear, task-arithmetic and ties take weights",
        ),
        (
            vec![
                ("/spec/merge/method", json!("task-arithmetic")),
                ("/spec/merge/weights", json!([1.0, 2.0, 3.0])),
            ],
            "spec.merge.weights",
            "one weight per model of spec.merge.models",
        ),
        (
            vec![
                ("/spec/merge/method", json!("task-arithmetic")),
                ("/spec/merge/density", json!(0.5)),
            ],
            "spec.merge.density",
            "only ties sparsifies",
        ),
        (
            vec![("/spec/merge/lambda", json!(2))],
            "spec.merge.lambda",
            "only task-arithmetic and ties scale",
        ),
        (
            vec![
                ("/spec/merge/method", json!("nuslerp")),
                ("/spec/merge/normalize", json!(true)),
            ],
            "spec.merge.normalize",
            "only linear, task-arithmetic and ties normalise",
        ),
        (
            vec![
                ("/spec/merge/method", json!("linear")),
                ("/spec/merge/models", json!(["sft"])),
            ],
            "spec.merge.models",
            "at least 2 recovery methods",
        ),
        (
            vec![("/spec/merge/models", json!(["sft", "logit-kd"]))],
            "spec.merge.models",
            "must also be listed in spec.recovery.methods",
        ),
        (
            vec![("/spec/merge/models", json!(["none", "sft"]))],
            "spec.merge.models",
            "`none` has no fine-tuned model",
        ),
        (
            vec![
                ("/spec/distillation/datasets", json!([])),
                ("/spec/recovery/methods", json!(["none", "self-distill"])),
                ("/spec/merge/enabled", json!(false)),
            ],
            "spec.distillation.datasets",
            "self-distill needs at least one data set",
        ),
        (
            vec![
                ("/spec/distillation/datasets", json!([])),
                ("/spec/recovery/methods", json!(["none", "sft"])),
                ("/spec/merge/enabled", json!(false)),
            ],
            "spec.distillation.datasets",
            "sft and logit-kd train on spec.distillation.datasets",
        ),
        (
            vec![("/spec/storage/uri", json!("http://example.com/out"))],
            "spec.storage.uri",
            "must start with file://, s3://, gs:// or az://",
        ),
        (vec![("/spec/storage/pvcName", json!("data"))], "", ""),
        (
            vec![
                ("/spec/merge/method", json!("ties")),
                ("/spec/merge/weights", json!([1.0, 0.5])),
                ("/spec/merge/density", json!(0.5)),
                ("/spec/merge/lambda", json!(1.2)),
                ("/spec/merge/normalize", json!(false)),
            ],
            "",
            "",
        ),
        (
            vec![("/spec/distillation/datasets/0/uri", json!("builtin:dolly"))],
            "spec.distillation.datasets[0].uri",
            "unknown builtin dataset",
        ),
        (
            vec![("/spec/calibration/dataset/uri", json!("ftp://host/x.json"))],
            "spec.calibration.dataset.uri",
            "only the schemes",
        ),
        (
            vec![(
                "/spec/distillation/template/user",
                json!("Rewrite: {instruction}"),
            )],
            "spec.distillation.template.user",
            "{response}",
        ),
        (
            vec![
                ("/spec/speculative/draft", json!("merged")),
                ("/spec/merge/enabled", json!(false)),
            ],
            "spec.speculative.draft",
            "merged needs spec.merge.enabled",
        ),
        (
            vec![
                ("/spec/recovery/optimizer/warmupSteps", json!(100)),
                ("/spec/recovery/optimizer/steps", json!(10)),
            ],
            "spec.recovery.optimizer.warmupSteps",
            "must not exceed steps",
        ),
        (
            vec![("/spec/merge/tGradient", json!([0.3]))],
            "spec.merge.tGradient",
            "at least 2 anchors",
        ),
        (
            vec![("/spec/model/source", json!("hf://SmolLM2"))],
            "spec.model.source",
            "use `embedded`, a path",
        ),
        (
            vec![(
                "/spec/distillation/datasets/0/fields",
                json!({"instruction": "q"}),
            )],
            "spec.distillation.datasets[0].fields",
            "only used with format jsonl",
        ),
    ];
    for (changes, path, message) in cases {
        if path.is_empty() {
            // Valid changes: pvcName with a file:// uri (the quickstart stores under file://),
            // ties with all its settings.
            let mut doc = quickstart();
            for (p, v) in &changes {
                set(&mut doc, p, v.clone());
            }
            ManifestValidator::new().validate(&doc).unwrap();
            continue;
        }
        let report = rejected(&changes);
        assert_names(&report, ErrorOrigin::Cel, path, message);
    }
}

#[test]
fn cel_rules_catch_what_the_schema_would_too() {
    // kd.ratio and merge.t are bounded twice: by the schema and by a CEL rule with a message
    // naming the field. Evaluate the CEL rules directly on a schema-invalid value.
    let schema = pruneforge_api::crd::open_api_v3_schema();
    let mut doc = quickstart();
    set(&mut doc, "/spec/recovery/kd/ratio", json!(1.5));
    set(&mut doc, "/spec/merge/t", json!(-0.5));
    set(&mut doc, "/spec/merge/method", json!("ties"));
    set(&mut doc, "/spec/merge/weights", json!([1.0, -11.0]));
    set(&mut doc, "/spec/merge/density", json!(0.0));
    set(&mut doc, "/spec/merge/lambda", json!(-1.0));
    set(&mut doc, "/spec/pruning/blockSizes", json!([6, 0]));
    let errors = kube::core::cel::Validator::new()
        .validate(&schema, &doc, None)
        .expect_err("CEL rules reject the values");
    let text = errors.to_string();
    for needle in [
        "spec.recovery.kd.ratio must be between 0 and 1",
        "spec.merge.t must be between 0 and 1",
        "spec.merge.weights: every weight must be between -10 and 10",
        "spec.merge.density must be greater than 0 and at most 1",
        "spec.merge.lambda must be between 0 and 10",
        "spec.pruning.blockSizes: every block size must be at least 1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

#[test]
fn document_level_errors() {
    let report = rejected(&[("/apiVersion", json!("pruneforge.dev/v1"))]);
    assert_names(
        &report,
        ErrorOrigin::Document,
        "apiVersion",
        "pruneforge.dev/v1alpha1",
    );
    let report = rejected(&[("/metadata/name", json!("Quick_Start"))]);
    assert_names(
        &report,
        ErrorOrigin::Document,
        "metadata.name",
        "DNS subdomain",
    );
}

#[test]
fn null_means_default() {
    let mut doc = quickstart();
    set(&mut doc, "/spec/pruning", json!({"metric": null}));
    let job = ManifestValidator::new().validate(&doc).unwrap();
    assert_eq!(job.spec.pruning.block_sizes, vec![6]);
}

#[test]
fn bad_yaml_is_reported_with_its_document_index() {
    let err = ManifestValidator::new()
        .validate_yaml("apiVersion: x\n---\nkey: [unclosed\n")
        .unwrap_err();
    assert!(err.to_string().starts_with("document"), "{err}");
}
