//! The API and the runner cannot drift apart: every `builtin:` name the API accepts resolves to
//! files of ../shared/data and loads in the runner (SFT sets through the SFT loader, benchmark
//! files through the eval stage of the task that reads them), and every eval task the API
//! accepts runs end to end in the eval stage on a tiny random model. The loops run over the
//! API's `ALL` lists, so a new data set or task is covered without touching this file.

mod common;

use std::path::Path;

use common::shared_dir;
use common::tiny::{write_tiny_model, TinySpec};
use pruneforge::data::tasks::{self, TaskConfig, TaskDocs, TaskFiles};
use pruneforge::data::{DataRoot, Selection};
use pruneforge::resolve::Resolver;
use pruneforge::stages::eval::{piqa_labels_path, run, EvalParams, TaskSpec, EVAL_JSON};
use pruneforge::stages::inputs::load_sft;
use pruneforge_api::builtin::BuiltinDataset;
use pruneforge_api::spec::{DatasetRef, EvalTaskName, OutputType};
use serde_json::Value;

/// The runner's one resolver over `root` (None: the discovered data root).
fn resolver(root: Option<&DataRoot>) -> pruneforge::resolve::Resolver {
    pruneforge::resolve::Resolver::new(root.cloned(), std::env::temp_dir().join("pf-test-resolve"))
}

fn root() -> DataRoot {
    DataRoot::new(shared_dir().join("data"))
}

/// Eval settings for the tiny model: short generations, small batches, the shared data.
fn params(tasks: Vec<TaskSpec>) -> EvalParams {
    EvalParams {
        tasks,
        batch_size: 4,
        max_gen_tokens: 4,
        data_dir: Some(shared_dir().join("data")),
        ..EvalParams::default()
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json")
}

#[test]
fn every_builtin_data_set_resolves_and_loads() {
    let root = root();
    for d in BuiltinDataset::ALL {
        let path = resolver(Some(&root))
            .resolve(&d.uri())
            .unwrap_or_else(|e| panic!("the runner does not resolve {}: {e}", d.uri()));
        for relative in d.relative_paths() {
            let p = root.join(relative);
            assert!(p.exists(), "{} needs {}", d.uri(), p.display());
        }
        // A label file is where the eval stage looks for it when the set is a task's `uri`.
        if let Some(labels) = root.labels(d) {
            assert_eq!(piqa_labels_path(&path), Some(labels), "{}", d.uri());
        }
        if let Some(format) = d.sft_format() {
            let sft = load_sft(&DatasetRef::builtin(d, format), &resolver(Some(&root)))
                .unwrap_or_else(|e| panic!("{} as SFT data: {e}", d.uri()));
            assert!(!sft.records.is_empty(), "{}: no SFT records", d.uri());
        }
        // Every set is read by a task; it builds as that task's documents.
        let task = EvalTaskName::reading(d).unwrap_or_else(|| panic!("no task reads {d}"));
        let files = TaskFiles {
            docs: path.clone(),
            labels: root.labels(d),
            ..TaskFiles::public(task, &root)
        };
        let config = TaskConfig {
            selection: Selection::new(0, Some(2)),
            ..TaskConfig::default()
        };
        let docs = tasks::build(task, &files, &config)
            .unwrap_or_else(|e| panic!("{} as {task} documents: {e}", d.uri()));
        assert!(!docs.is_empty(), "{} as {task} documents: none", d.uri());
    }
}

#[test]
fn every_builtin_data_set_runs_as_its_tasks_uri() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    write_tiny_model(&model, &TinySpec::default());
    for d in BuiltinDataset::ALL {
        let task = EvalTaskName::reading(d).unwrap_or_else(|| panic!("no task reads {d}"));
        let spec: TaskSpec = format!("{task}:0:2@{}", d.uri())
            .parse()
            .expect("task spec");
        let out = tmp.path().join(d.name());
        let summary = run(
            &model,
            None,
            &params(vec![spec]),
            &Resolver::local(),
            &out,
            &pruneforge::device::Compute::cpu(),
        )
        .unwrap_or_else(|e| panic!("{task}@{}: {e}", d.uri()));
        assert_eq!(summary.tasks.len(), 1, "{}", d.uri());
        let doc = read_json(&out.join(EVAL_JSON));
        assert_eq!(
            doc["n-samples"][task.as_str()]["effective"],
            2,
            "{}",
            d.uri()
        );
    }
}

#[test]
fn every_eval_task_runs_end_to_end_on_a_tiny_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model");
    write_tiny_model(&model, &TinySpec::default());
    // One shot from the pool where the task has one, so every pool is read too.
    let specs: Vec<TaskSpec> = EvalTaskName::ALL
        .iter()
        .map(|t| {
            let shots = usize::from(t.def().fewshot_pool.is_some());
            format!("{t}:{shots}:2").parse().expect("task spec")
        })
        .collect();
    let out = tmp.path().join("eval");
    let summary = run(
        &model,
        None,
        &params(specs),
        &Resolver::local(),
        &out,
        &pruneforge::device::Compute::cpu(),
    )
    .expect("eval stage");
    let doc = read_json(&out.join(EVAL_JSON));
    assert_eq!(summary.tasks.len(), EvalTaskName::ALL.len());
    for (task, score) in EvalTaskName::ALL.iter().zip(&summary.tasks) {
        let def = task.def();
        assert_eq!(score.task, task.as_str());
        assert_eq!(score.metric, def.metric.name(), "{task}");
        assert_eq!(score.higher_is_better, task.higher_is_better(), "{task}");
        assert!(score.value.is_finite(), "{task}: {}", score.value);
        let results = &doc["results"][task.as_str()];
        assert!(
            results[def.metric.results_key()].is_number(),
            "{task}: no {} in {results}",
            def.metric.results_key()
        );
        let config = &doc["configs"][task.as_str()];
        assert_eq!(config["output_type"], def.output_type.as_str(), "{task}");
    }
}

#[test]
fn default_shots_and_chance_levels_follow_the_table() {
    // Unset shots take the table's default (mmlu and gsm8k: 5).
    for task in EvalTaskName::ALL {
        assert_eq!(
            pruneforge::stages::eval::default_shots(task),
            task.def().default_shots as usize,
            "{task}"
        );
    }
    // Each multiple-choice task's chance level is what guessing scores on its public slice:
    // the mean of 1 ÷ the number of choices (mc2: of the share of true answers), within the
    // rounding of the constant.
    let root = root();
    for task in EvalTaskName::ALL {
        let def = task.def();
        if def.output_type != OutputType::MultipleChoice {
            continue;
        }
        let chance = def
            .chance
            .unwrap_or_else(|| panic!("{task}: no chance level"));
        let TaskDocs::MultipleChoice(docs) = tasks::build(
            task,
            &TaskFiles::public(task, &root),
            &TaskConfig::default(),
        )
        .expect("docs") else {
            panic!("{task}: not multiple choice");
        };
        let guess: f64 = docs
            .iter()
            .map(|d| match &d.mc2_labels {
                Some(labels) => labels.iter().filter(|&&t| t).count() as f64 / labels.len() as f64,
                None => 1.0 / d.choices.len() as f64,
            })
            .sum::<f64>()
            / docs.len() as f64;
        assert!(
            (guess - chance).abs() < 0.005,
            "{task}: chance {chance}, guessing scores {guess}"
        );
    }
}
