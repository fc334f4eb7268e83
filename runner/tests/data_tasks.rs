//! Task builders against the reference: every item of
//! `shared/reference/accuracy_items.jsonl` (contexts, continuations, gold, lengths) and the
//! accuracies of `accuracy.json` recomputed from the stored log-likelihoods; few-shot prompts
//! against lm-eval's sampler (indices from CPython's `random.Random(seed).sample`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use pruneforge::data::metrics::{score_mc, McTaskScores};
use pruneforge::data::tasks::{
    self, arc, gsm8k, hellaswag, mmlu, winogrande, McDoc, TaskConfig, TaskDocs, TaskFiles,
};
use pruneforge::data::{DataRoot, Selection};
use pruneforge_api::spec::EvalTaskName;
use serde_json::Value;

fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
}

fn root() -> DataRoot {
    DataRoot::new(shared().join("data"))
}

fn reference_items() -> Vec<Value> {
    let path = shared().join("reference/accuracy_items.jsonl");
    let text = std::fs::read_to_string(&path).expect("reference items are readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("reference items are JSON"))
        .collect()
}

fn reference_accuracy() -> Value {
    let path = shared().join("reference/accuracy.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("accuracy.json is readable"))
        .expect("accuracy.json is JSON")
}

fn mc_docs(task: EvalTaskName, config: &TaskConfig) -> Vec<McDoc> {
    match tasks::build(task, &TaskFiles::public(task, &root()), config) {
        Ok(TaskDocs::MultipleChoice(docs)) => docs,
        Ok(other) => panic!("{task}: not multiple choice: {} docs", other.len()),
        Err(e) => panic!("{task}: {e}"),
    }
}

const REFERENCE_TASKS: [EvalTaskName; 6] = [
    EvalTaskName::ArcEasy,
    EvalTaskName::ArcChallenge,
    EvalTaskName::Hellaswag,
    EvalTaskName::Piqa,
    EvalTaskName::Winogrande,
    EvalTaskName::Mmlu,
];

fn as_usize(v: &Value) -> usize {
    v.as_u64().expect("non-negative integer") as usize
}

fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn builders_reproduce_every_reference_item() {
    let items = reference_items();
    assert_eq!(items.len(), 1228);
    let mut by_task: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for item in &items {
        by_task
            .entry(item["task"].as_str().expect("task").to_string())
            .or_default()
            .push(item);
    }
    let mut checked_items = 0;
    let mut checked_requests = 0;
    for task in REFERENCE_TASKS {
        let docs = mc_docs(task, &TaskConfig::default());
        let refs = &by_task[task.as_str()];
        assert_eq!(docs.len(), refs.len(), "{task}: number of items");
        for (doc, r) in docs.iter().zip(refs.iter()) {
            let at = format!("{task} idx {}", doc.idx);
            assert_eq!(doc.task, task);
            assert_eq!(doc.idx, as_usize(&r["idx"]), "{at}: idx");
            assert_eq!(doc.gold, as_usize(&r["gold"]), "{at}: gold");
            assert_eq!(doc.id, r.get("id").map(id_string), "{at}: id");
            assert_eq!(
                doc.subject.as_deref(),
                r.get("subject").and_then(Value::as_str),
                "{at}: subject"
            );
            let choices = r["choices"].as_array().expect("choices");
            assert_eq!(doc.choices.len(), choices.len(), "{at}: choices");
            assert_eq!(
                doc.choices.len(),
                as_usize(&r["n_choices"]),
                "{at}: n_choices"
            );
            for (c, rc) in doc.choices.iter().zip(choices) {
                assert_eq!(c.ctx, rc["ctx"].as_str().expect("ctx"), "{at}: ctx");
                assert_eq!(c.cont, rc["cont"].as_str().expect("cont"), "{at}: cont");
                assert_eq!(c.len_bytes, as_usize(&rc["len_bytes"]), "{at}: len_bytes");
                assert_eq!(
                    c.len_chars,
                    as_usize(&rc["len_chars_lmeval"]),
                    "{at}: len_chars_lmeval"
                );
                checked_requests += 1;
            }
            checked_items += 1;
        }
    }
    assert_eq!(checked_items, 1228);
    println!("checked {checked_items} items, {checked_requests} requests");
}

fn lls(refs: &[&Value], key: &str) -> Vec<Vec<f64>> {
    refs.iter()
        .map(|r| {
            r["choices"]
                .as_array()
                .expect("choices")
                .iter()
                .map(|c| c[key].as_f64().expect("ll"))
                .collect()
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

#[test]
fn metrics_reproduce_reference_accuracies() {
    let items = reference_items();
    let accuracy = reference_accuracy();
    for task in REFERENCE_TASKS {
        let docs = mc_docs(task, &TaskConfig::default());
        let refs: Vec<&Value> = items
            .iter()
            .filter(|i| i["task"] == task.as_str())
            .collect();
        for tag in ["full", "pruned"] {
            let scores: McTaskScores =
                score_mc(&docs, &lls(&refs, &format!("ll_{tag}"))).expect("scores");
            let want = &accuracy["tasks"][task.as_str()][tag];
            let num = |k: &str| {
                want[k]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{task} {tag} {k}"))
            };
            println!(
                "{task:14} {tag:6} acc={:.4} acc_norm={:.4} acc_norm_lmeval={:.4}",
                scores.acc.value, scores.acc_norm.value, scores.acc_norm_lmeval.value
            );
            assert_eq!(scores.acc.value, num("acc"), "{task} {tag} acc");
            assert_eq!(
                scores.acc_norm.value,
                num("acc_norm"),
                "{task} {tag} acc_norm"
            );
            assert_eq!(
                scores.acc_norm_lmeval.value,
                num("acc_norm_lmeval"),
                "{task} {tag} acc_norm_lmeval"
            );
            assert!(
                close(scores.acc.stderr, num("acc_stderr")),
                "{task} {tag} acc_stderr"
            );
            assert!(close(scores.acc_norm.stderr, num("acc_norm_stderr")));
            assert!(close(
                scores.acc_norm_lmeval.stderr,
                num("acc_norm_lmeval_stderr")
            ));
            for (p, r) in scores.predictions.iter().zip(&refs) {
                let pred = &r[format!("pred_{tag}").as_str()];
                assert_eq!(p.acc, as_usize(&pred["acc"]));
                assert_eq!(p.acc_norm, as_usize(&pred["acc_norm"]));
                assert_eq!(p.acc_norm_lmeval, as_usize(&pred["acc_norm_lmeval"]));
            }
            if task == EvalTaskName::Mmlu {
                let subjects = scores.subjects.as_ref().expect("MMLU has subjects");
                assert_eq!(subjects.per_subject.len(), as_usize(&want["n_subjects"]));
                assert_eq!(subjects.macro_avg, num("acc_macro_over_subjects"));
                assert_eq!(subjects.micro, num("acc"));
            } else {
                assert!(scores.subjects.is_none());
            }
        }
    }
}

#[test]
fn selection_keeps_indices_and_requests() {
    let all = mc_docs(EvalTaskName::Mmlu, &TaskConfig::default());
    let config = TaskConfig {
        selection: Selection::new(10, Some(5)),
        ..TaskConfig::default()
    };
    let some = mc_docs(EvalTaskName::Mmlu, &config);
    assert_eq!(some.len(), 5);
    assert_eq!(some[..], all[10..15]);
    let past_end = TaskConfig {
        selection: Selection::new(10_000, None),
        ..TaskConfig::default()
    };
    assert!(mc_docs(EvalTaskName::ArcEasy, &past_end).is_empty());
}

fn fewshot(task: EvalTaskName, k: usize, seed: i64, selection: Selection) -> Vec<McDoc> {
    mc_docs(
        task,
        &TaskConfig {
            num_fewshot: k,
            seed,
            selection,
        },
    )
}

#[test]
fn arc_fewshot_matches_lm_eval_sampler() {
    let train = arc::load(&root().join("arc/ARC-Easy-Train.jsonl")).expect("train");
    let by_id = |id: &str| train.iter().find(|t| t.id == id).expect("train id");
    // random.Random(1234): doc 0 -> train [1805, 478], doc 1 -> [30, 371]
    let docs = fewshot(EvalTaskName::ArcEasy, 2, 1234, Selection::new(0, Some(2)));
    let zero = mc_docs(EvalTaskName::ArcEasy, &TaskConfig::default());
    for (doc, ids) in docs.iter().zip([
        ["TAKS_2009_8_40", "Mercury_405167"],
        ["MCAS_1999_4_29", "NYSEDREGENTS_2016_4_26"],
    ]) {
        let expected = format!(
            "{}\n\n{}\n\n{}",
            arc::shot(by_id(ids[0])),
            arc::shot(by_id(ids[1])),
            zero[doc.idx].choices[0].ctx
        );
        for (c, z) in doc.choices.iter().zip(&zero[doc.idx].choices) {
            assert_eq!(c.ctx, expected);
            assert_eq!(c.cont, z.cont);
        }
    }
    assert!(docs[0].choices[0].ctx.starts_with("Question: "));
    // A document's shots do not depend on the selection.
    let only_second = fewshot(EvalTaskName::ArcEasy, 2, 1234, Selection::new(1, Some(1)));
    assert_eq!(only_second[0], docs[1]);
    // Another seed gives other shots.
    let other = fewshot(EvalTaskName::ArcEasy, 2, 1, Selection::new(0, Some(1)));
    assert_ne!(other[0].choices[0].ctx, docs[0].choices[0].ctx);
}

#[test]
fn hellaswag_fewshot_excludes_the_scored_item() {
    let pool = hellaswag::load(&root().join("hellaswag/hellaswag_val.public.jsonl")).expect("pool");
    // random.Random(1234).sample(pool, 4): doc 0 -> [199, 112, 29, 1], ..., doc 4 -> [4, 88, 165, 159]
    let docs = fewshot(EvalTaskName::Hellaswag, 3, 1234, Selection::new(0, Some(5)));
    for (doc, shots) in [(&docs[0], [199, 112, 29]), (&docs[4], [88, 165, 159])] {
        let expected = format!(
            "{}\n\n{}\n\n{}\n\n{}",
            hellaswag::shot(&pool[shots[0]]),
            hellaswag::shot(&pool[shots[1]]),
            hellaswag::shot(&pool[shots[2]]),
            pool[doc.idx].query
        );
        assert_eq!(doc.choices[0].ctx, expected);
    }
}

#[test]
fn winogrande_fewshot_fills_in_the_right_option() {
    let train = winogrande::load(&root().join("winogrande/train_l.jsonl")).expect("train");
    let by_id = |id: &str| train.iter().find(|t| t.qid == id).expect("train id");
    // random.Random(7): the third draw of 3 from train_l
    let docs = fewshot(EvalTaskName::Winogrande, 3, 7, Selection::new(2, Some(1)));
    let zero = mc_docs(EvalTaskName::Winogrande, &TaskConfig::default());
    let prefix = [
        "3RZS0FBRWMO8T318WTVWK7ZUSGIPCY-2",
        "3WKGUBL7SZK0DPAOROK7SUQE73Y4LD-1",
        "3JGHED38EDPHWBZ6C174PECK7JD7YB-1",
    ]
    .map(|id| winogrande::shot(by_id(id)) + "\n\n")
    .concat();
    for (c, z) in docs[0].choices.iter().zip(&zero[2].choices) {
        assert_eq!(c.ctx, format!("{prefix}{}", z.ctx));
        assert_eq!(c.cont, z.cont);
    }
    let first = by_id("3RZS0FBRWMO8T318WTVWK7ZUSGIPCY-2");
    let filled = &first.contexts()[first.answer];
    assert!(winogrande::shot(first).starts_with(filled.as_str()));
}

#[test]
fn mmlu_fewshot_uses_the_first_dev_rows_after_the_description() {
    let docs = fewshot(EvalTaskName::Mmlu, 5, 1234, Selection::new(0, Some(1)));
    let dev = mmlu::load_file(
        &root().join("mmlu/dev/abstract_algebra_dev.csv"),
        "abstract_algebra",
    )
    .expect("dev");
    let test = mmlu::load_dir(&root().join("mmlu/test.public")).expect("test");
    let expected = format!(
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n{}{}",
        dev.iter().map(|d| mmlu::shot(d) + "\n\n").collect::<String>(),
        mmlu::question_text(&test[0])
    );
    assert_eq!(docs[0].choices[3].ctx, expected);
    assert_eq!(docs[0].choices[3].cont, " D");
    assert!(expected.contains("\nAnswer: B\n\n"));
    let err = tasks::build(
        EvalTaskName::Mmlu,
        &TaskFiles::public(EvalTaskName::Mmlu, &root()),
        &TaskConfig {
            num_fewshot: 6,
            ..TaskConfig::default()
        },
    )
    .expect_err("dev has 5 rows per subject");
    assert!(err.to_string().contains("6-shot"), "{err}");
}

#[test]
fn piqa_and_truthfulqa_fewshot_rules() {
    let piqa = fewshot(EvalTaskName::Piqa, 2, 1234, Selection::new(0, Some(3)));
    assert_eq!(piqa.len(), 3);
    assert_eq!(piqa[0].choices[0].ctx.matches("\nAnswer: ").count(), 2);
    let err = tasks::build(
        EvalTaskName::TruthfulqaMc2,
        &TaskFiles::public(EvalTaskName::TruthfulqaMc2, &root()),
        &TaskConfig {
            num_fewshot: 1,
            ..TaskConfig::default()
        },
    )
    .expect_err("no few-shot split");
    assert!(err.to_string().contains("num_fewshot = 1"), "{err}");
}

#[test]
fn truthfulqa_mc2_documents() {
    let docs = mc_docs(EvalTaskName::TruthfulqaMc2, &TaskConfig::default());
    assert_eq!(docs.len(), 200);
    let first = &docs[0];
    let ctx = &first.choices[0].ctx;
    assert!(ctx.starts_with("Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States is 78 years.\n\nQ: Who was president"));
    assert!(ctx.ends_with(
        "A: The 1992 Olympics were held in Barcelona, Spain.\n\nQ: What is the smallest country in the world that is at least one square mile in area?\nA:"
    ));
    assert_eq!(
        first.choices[0].cont,
        " Nauru is the smallest country in the world that is at least one square mile in area."
    );
    assert_eq!(first.gold, 0);
    // Key order of mc2_targets is kept (item 25 has a true answer after a false one).
    let labels = docs[25].mc2_labels.as_ref().expect("labels");
    assert_eq!(
        labels,
        &[true, true, true, false, true, false, false, false, false]
    );
    let total: usize = docs.iter().map(|d| d.choices.len()).sum();
    assert_eq!(total, 1476);
}

#[test]
fn gsm8k_generation_documents() {
    let files = TaskFiles::public(EvalTaskName::Gsm8k, &root());
    let config = TaskConfig {
        num_fewshot: 5,
        selection: Selection::new(1, Some(1)),
        ..TaskConfig::default()
    };
    let TaskDocs::Generation(docs) =
        tasks::build(EvalTaskName::Gsm8k, &files, &config).expect("gsm8k")
    else {
        panic!("gsm8k is a generation task");
    };
    let train =
        pruneforge::data::sft::load_gsm8k(&root().join("gsm8k/train.jsonl")).expect("train");
    let test =
        pruneforge::data::sft::load_gsm8k(&root().join("gsm8k/test.public.jsonl")).expect("test");
    // random.Random(1234): doc 0 -> [6374, 3610, 957, 61, 742], doc 1 -> [7462, 6610, 4769, 286, 5501]
    let expected = [7462, 6610, 4769, 286, 5501]
        .map(|j| gsm8k::shot(&train[j]) + "\n\n")
        .concat()
        + &format!("Question: {}\nAnswer:", test[1].instruction);
    let doc = &docs[0];
    assert_eq!(doc.idx, 1);
    assert_eq!(doc.prompt, expected);
    assert_eq!(doc.stop, ["Question:", "</s>", "<|im_end|>", "\n\n"]);
    assert_eq!(doc.reference, test[1].output);
    assert_eq!(Some(doc.gold.clone()), test[1].gold);
    // The reference's own final line passes both filters.
    let answer_line = format!("The answer follows.\n#### {}", doc.gold);
    assert!(pruneforge::data::metrics::gsm8k_exact_match(
        &gsm8k::extract_strict(&answer_line),
        &doc.reference
    ));
    assert!(pruneforge::data::metrics::gsm8k_exact_match(
        &gsm8k::extract_flexible(&answer_line),
        &doc.reference
    ));
    // Every public test item has a numeric gold.
    assert_eq!(test.len(), 200);
    assert!(test
        .iter()
        .all(|t| t.gold.as_deref().is_some_and(|g| g.parse::<f64>().is_ok())));
}

#[test]
fn perplexity_rows() {
    let files = TaskFiles::public(EvalTaskName::Perplexity, &root());
    let TaskDocs::Perplexity(rows) =
        tasks::build(EvalTaskName::Perplexity, &files, &TaskConfig::default()).expect("perplexity")
    else {
        panic!("perplexity rows");
    };
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text.chars().count(), 1_813_422);
}
