//! Every stage of a job through the device-generic path: `spec.compute.dtype: bf16` on the
//! CPU takes the code CUDA takes (candle ops, a non-ragged KV cache, f32 LoRA over a bf16
//! base, the composable loss head), so a whole run here proves the stages' device plumbing
//! without a GPU. Each model-computing stage records its device, dtype and peak memory.

mod common;

use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::exec::local::{load_job, run_job, RunOptions, RunStatus};
use std::path::Path;

fn job_yaml(model: &Path, storage: &Path, dtype: &str) -> String {
    format!(
        r#"apiVersion: pruneforge.dev/v1alpha1
kind: PruneDistillJob
metadata:
  name: tiny-generic
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
        limit: 3
    generation:
      maxNewTokens: 6
      batchSize: 2
  recovery:
    methods: [none, sft, self-distill]
    lora:
      rank: 2
      alpha: 4
    optimizer:
      steps: 2
      warmupSteps: 1
      batchSize: 2
      maxSeqLen: 96
  merge:
    enabled: true
    models: [sft, self-distill]
  evaluation:
    tasks:
      - name: arc_easy
        limit: 3
    drift:
      limit: 2
      maxNewTokens: 4
  speculative:
    enabled: true
    draftTokens: 2
    maxNewTokens: 6
    draft: pruned
    prompts:
      uri: builtin:alpaca
      format: alpaca
      limit: 2
  compute:
    dtype: {dtype}
  storage:
    uri: file://{storage}
"#,
        model = model.display(),
        storage = storage.display(),
    )
}

#[test]
fn every_stage_runs_in_bf16_and_records_where_it_computed() {
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
    let path = tmp.path().join("job.yaml");
    std::fs::write(&path, job_yaml(&model, &storage, "bf16")).unwrap();
    let job = load_job(&path).expect("the job validates");
    let opts = RunOptions {
        device: Some(pruneforge::device::DeviceSpec::Cpu),
        ..RunOptions::default()
    };
    let report = run_job(&job, &opts, |_, _, _, _| {}).expect("run");
    for s in &report.stages {
        assert_eq!(s.status, RunStatus::Ran, "{} {:?}", s.id, s.message);
    }
    for kind in [
        "import",
        "score",
        "prune",
        "distill",
        "finetune",
        "merge",
        "eval",
        "speculate",
    ] {
        let stages: Vec<_> = report.stages.iter().filter(|s| s.kind == kind).collect();
        assert!(!stages.is_empty(), "no {kind} stage");
        for s in stages {
            let dir = Path::new(s.artifact_uri.trim_start_matches("file://"));
            let result: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("result.json")).unwrap()).unwrap();
            let compute = &result["compute"];
            if matches!(kind, "import" | "prune" | "merge") {
                assert!(compute.is_null(), "{}: {compute}", s.id);
                continue;
            }
            assert_eq!(compute["device"], "cpu", "{}: {compute}", s.id);
            assert_eq!(compute["dtype"], "bf16", "{}: {compute}", s.id);
            assert!(
                compute["peakHostMemoryBytes"].as_u64().unwrap_or(0) > 0,
                "{}: {compute}",
                s.id
            );
        }
    }
    // The fine-tune trained f32 LoRA weights over the bf16 base: the adapter is f32.
    let ft = report.stages.iter().find(|s| s.kind == "finetune").unwrap();
    let adapter =
        Path::new(ft.artifact_uri.trim_start_matches("file://")).join("adapter_model.safetensors");
    let bytes = std::fs::read(&adapter).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    }

    // The same job in f32 plans other keys for the model stages (bf16 is part of their key),
    // and the same key for import.
    std::fs::write(&path, job_yaml(&model, &storage, "f32")).unwrap();
    let job32 = load_job(&path).unwrap();
    let plan32 = pruneforge::exec::local::plan_job(&job32, &opts).unwrap();
    let plan16 = pruneforge::exec::local::plan_job(&job, &opts).unwrap();
    assert_eq!(
        plan32.get("import").unwrap().key,
        plan16.get("import").unwrap().key
    );
    assert_ne!(
        plan32.get("score").unwrap().key,
        plan16.get("score").unwrap().key
    );
}
