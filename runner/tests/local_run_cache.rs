//! `pruneforge run` caching: a whole job on a tiny random-weight model, run again (everything
//! cached), then with one field changed (exactly the dependent stages rerun).

mod common;

use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::exec::local::{load_job, run_job, RunOptions, RunReport, RunStatus};
use std::collections::BTreeMap;
use std::path::Path;

fn job_yaml(model: &Path, storage: &Path, steps: u32, arc_limit: u32) -> String {
    format!(
        r#"apiVersion: pruneforge.dev/v1alpha1
kind: PruneDistillJob
metadata:
  name: tiny-cache
spec:
  model:
    source: {model}
    format: hf
  calibration:
    dataset:
      uri: builtin:alpaca
      format: alpaca
    sequences: 4
    seqLen: 16
  pruning:
    blockSizes: [1]
  distillation:
    datasets:
      - name: gsm8k
        uri: builtin:gsm8k-train
        format: gsm8k
        kind: math
        limit: 4
    generation:
      maxNewTokens: 8
      batchSize: 4
  recovery:
    methods: [none, sft, self-distill]
    lora:
      rank: 2
      alpha: 4
    optimizer:
      steps: {steps}
      warmupSteps: 1
      batchSize: 2
      maxSeqLen: 96
  merge:
    enabled: true
    models: [sft, self-distill]
  evaluation:
    tasks:
      - name: arc_easy
        limit: {arc_limit}
    drift:
      limit: 2
      maxNewTokens: 4
  storage:
    uri: file://{storage}
"#,
        model = model.display(),
        storage = storage.display(),
    )
}

fn run(dir: &Path, yaml: &str) -> RunReport {
    let path = dir.join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    let job = load_job(&path).expect("the job validates");
    let report = run_job(&job, &RunOptions::default(), |_, _, _, _| {}).expect("run");
    for s in &report.stages {
        assert!(
            matches!(s.status, RunStatus::Ran | RunStatus::Cached),
            "stage {} {:?}: {:?}",
            s.id,
            s.status,
            s.message
        );
    }
    report
}

fn statuses(r: &RunReport) -> BTreeMap<String, RunStatus> {
    r.stages.iter().map(|s| (s.id.clone(), s.status)).collect()
}

fn ran(r: &RunReport) -> Vec<String> {
    r.stages
        .iter()
        .filter(|s| s.status == RunStatus::Ran)
        .map(|s| s.id.clone())
        .collect()
}

#[test]
fn unchanged_job_is_cached_and_a_changed_field_reruns_exactly_its_dependants() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(
        &model,
        &TinySpec {
            layers: 4,
            ..TinySpec::default()
        },
    );
    let storage = tmp.path().join("out");

    // First run: every stage runs.
    let first = run(tmp.path(), &job_yaml(&model, &storage, 2, 4));
    let all: Vec<String> = first.stages.iter().map(|s| s.id.clone()).collect();
    assert_eq!(ran(&first), all, "{:?}", statuses(&first));
    for kind in [
        "import", "score", "prune", "distill", "finetune", "merge", "eval",
    ] {
        assert!(
            first.stages.iter().any(|s| s.kind == kind),
            "no {kind} stage in {all:?}"
        );
    }

    // The report reads every eval's items.jsonl from its artifact: paired comparisons of the
    // recovered variants against the pruned model, self-distill against SFT, and the merged
    // model against its inputs.
    let data = pruneforge::report::gather(first.clone());
    let pairs: Vec<(&str, &str)> = data
        .comparisons
        .iter()
        .map(|c| (c.variant.as_str(), c.reference.as_str()))
        .collect();
    for want in [
        ("n1-sft", "n1"),
        ("n1-self-distill", "n1-sft"),
        ("n1-merged", "n1-self-distill"),
    ] {
        assert!(pairs.contains(&want), "{want:?} not in {pairs:?}");
    }
    assert!(data
        .comparisons
        .iter()
        .all(|c| c.tasks.len() == 1 && c.tasks[0].n == 4));
    assert_eq!(data.recoveries.len(), 4, "every variant's recovery");
    assert!(pruneforge::report::markdown(&data, None).contains("## Paired comparisons"));

    // Same file again: nothing runs.
    let again = run(tmp.path(), &job_yaml(&model, &storage, 2, 4));
    assert!(ran(&again).is_empty(), "{:?}", statuses(&again));

    // Only an eval field changed: only the eval stages rerun.
    let eval_changed = run(tmp.path(), &job_yaml(&model, &storage, 2, 5));
    let rerun = ran(&eval_changed);
    let evals: Vec<String> = first
        .stages
        .iter()
        .filter(|s| s.kind == "eval")
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(rerun, evals);

    // An optimizer field changed: the finetunes, the merge and the evals of their models
    // rerun; import, score, prune, distill and the base and pruned-only evals stay cached.
    let steps_changed = run(tmp.path(), &job_yaml(&model, &storage, 3, 5));
    let rerun = ran(&steps_changed);
    let expected: Vec<String> = first
        .stages
        .iter()
        .filter(|s| match s.kind.as_str() {
            "finetune" | "merge" => true,
            "eval" => {
                s.id.contains("-sft") || s.id.contains("self-distill") || s.id.contains("merge")
            }
            _ => false,
        })
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(rerun, expected, "{:?}", statuses(&steps_changed));
    assert!(rerun.iter().all(|id| id != "eval-base"));
    // And the finetune's checkpoints are not part of its artifact.
    let ft = steps_changed
        .stages
        .iter()
        .find(|s| s.kind == "finetune")
        .unwrap();
    let local = ft.artifact_uri.trim_start_matches("file://");
    assert!(Path::new(local).join("adapter_model.safetensors").exists());
    assert!(!Path::new(local).join("checkpoints").exists());

    // QLoRA through the resource: a quantized base reruns exactly the same stages, and each
    // fine-tune ran over it.
    let yaml = job_yaml(&model, &storage, 3, 5).replace(
        "      alpha: 4\n",
        "      alpha: 4\n      baseQuantization: q8_0\n",
    );
    assert!(yaml.contains("baseQuantization"));
    let qlora = run(tmp.path(), &yaml);
    assert_eq!(ran(&qlora), expected, "{:?}", statuses(&qlora));
    for ft in qlora.stages.iter().filter(|s| s.kind == "finetune") {
        let local = ft.artifact_uri.trim_start_matches("file://");
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(local).join("finetune.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            report["params"]["lora"]["base_quantization"], "q8_0",
            "{}",
            ft.id
        );
    }
}

/// Minitron's recipe end to end on a tiny model: width importance, a depth and a width
/// variant, teacher correction, logit and hidden-state distillation from the corrected
/// teacher (the pairing travels in each pruned model's pruning.json through storage), and the
/// report's table of pruned models.
#[test]
fn width_variants_distill_from_a_corrected_teacher_with_hidden_states() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(
        &model,
        &TinySpec {
            layers: 4,
            ..TinySpec::default()
        },
    );
    let storage = tmp.path().join("out");
    let yaml = format!(
        r#"apiVersion: pruneforge.dev/v1alpha1
kind: PruneDistillJob
metadata:
  name: tiny-minitron
spec:
  model:
    source: {model}
    format: hf
  calibration:
    dataset:
      uri: builtin:alpaca
      format: alpaca
    sequences: 4
    seqLen: 16
  pruning:
    blockSizes: [1]
    widths:
      - name: half
        intermediateSize: "50%"
        hiddenSize: 48
  distillation:
    datasets:
      - name: alpaca
        uri: builtin:alpaca
        format: alpaca
        kind: general
        limit: 8
  recovery:
    methods: [none, logit-kd]
    lora:
      rank: 2
      alpha: 4
    optimizer:
      steps: 2
      warmupSteps: 1
      batchSize: 2
      maxSeqLen: 96
    kd:
      hiddenStates:
        weight: 1.0
    teacherCorrection:
      steps: 2
  evaluation:
    tasks:
      - name: arc_easy
        limit: 4
    drift:
      limit: 2
      maxNewTokens: 4
  storage:
    uri: file://{storage}
"#,
        model = model.display(),
        storage = storage.display(),
    );
    let report = run(tmp.path(), &yaml);
    let ids: Vec<&str> = report.stages.iter().map(|s| s.id.as_str()).collect();
    for id in [
        "finetune-teacher",
        "prune-w-half",
        "finetune-n1-logit-kd",
        "finetune-w-half-logit-kd",
        "eval-w-half-logit-kd",
    ] {
        assert!(ids.contains(&id), "{id} not in {ids:?}");
    }
    let corrected = report
        .stages
        .iter()
        .find(|s| s.id == "finetune-teacher")
        .map(|s| s.artifact_uri.clone())
        .unwrap();
    for id in ["finetune-n1-logit-kd", "finetune-w-half-logit-kd"] {
        let s = report.stages.iter().find(|s| s.id == id).unwrap();
        let dir = Path::new(s.artifact_uri.trim_start_matches("file://"));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("finetune.json")).unwrap()).unwrap();
        let hidden = doc["history"][0]["hidden"].as_f64();
        assert!(hidden.is_some_and(|h| h > 0.0), "{id}: {hidden:?}");
        // The teacher is the corrected model's merged directory.
        let teacher = doc["teacher"].as_str().unwrap_or_default();
        assert_eq!(
            Path::new(teacher),
            Path::new(corrected.trim_start_matches("file://")).join("merged"),
            "{id}"
        );
    }
    let md = pruneforge::report::markdown(&pruneforge::report::gather(report), None);
    assert!(md.contains("## Pruned models"), "{md}");
    assert!(md.contains("| w-half | 4 |"), "{md}");
    // Every model's eval measured its decode speed (the probe), shown in the last column.
    let table = md.split("## Pruned models").nth(1).unwrap_or_default();
    let table = table.split("\n## ").next().unwrap_or_default();
    for model in ["base", "n1", "w-half"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {model} |")))
            .unwrap_or_else(|| panic!("no {model} row in {table}"));
        let decode = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        assert!(
            decode.trim().parse::<f64>().is_ok_and(|v| v > 0.0),
            "{model}: {row}"
        );
    }
}

#[test]
fn two_concurrent_runs_of_one_job_compute_each_stage_once() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    write_tiny_model(
        &model,
        &TinySpec {
            layers: 4,
            ..TinySpec::default()
        },
    );
    let storage = tmp.path().join("out");
    let yaml = job_yaml(&model, &storage, 2, 4);
    let runs: Vec<RunReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let dir = tmp.path().join(format!("run-{i}"));
                std::fs::create_dir_all(&dir).unwrap();
                let yaml = yaml.clone();
                scope.spawn(move || run(&dir, &yaml))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Both runs share the storage (and so every artifact key): the writer lease lets one run
    // compute each stage while the other waits and reuses what it committed.
    for stage in &runs[0].stages {
        let other = runs[1]
            .stages
            .iter()
            .find(|s| s.id == stage.id)
            .expect("same plan");
        let ran = [stage.status, other.status]
            .iter()
            .filter(|s| **s == RunStatus::Ran)
            .count();
        assert_eq!(
            ran, 1,
            "stage {} ran {ran} times: {:?} / {:?}",
            stage.id, stage.status, other.status
        );
    }
}
