//! Multiple-choice tasks (ARC, HellaSwag, PIQA, Winogrande, MMLU, TruthfulQA mc2): one
//! log-likelihood request per choice, scored together, then lm-eval's metrics.
//!
//! Results keys: `acc` (argmax of ll), `acc_norm` (lm-eval: ll ÷ characters of the choice
//! without the leading space), `acc_norm_bytes` (the reference's: ll ÷ UTF-8 bytes of the
//! continuation with the leading space), each with its stderr; MMLU adds `acc_macro` (mean of
//! the subject accuracies) and one `mmlu_<subject>` entry per subject; TruthfulQA reports only
//! `mc2` (also under lm-eval's name `acc`).

use pruneforge_api::spec::{EvalTaskName, MainMetric};
use serde_json::{json, Value};

use super::items::{log_prob_gold, log_prob_true};
use super::report::TaskOutcome;
use super::scorer::{encode_pair, score, EncodedRequest, LlScore, ScoreStats, ScorerOptions};
use crate::data::metrics::{self, MeanStderr};
use crate::data::tasks::McDoc;
use crate::error::Result;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// Log-likelihoods of every choice of every document (`[doc][choice]`).
pub struct McScores {
    pub requests: Vec<Vec<EncodedRequest>>,
    pub scores: Vec<Vec<LlScore>>,
}

/// Encodes and scores the choices of `docs`.
pub fn score_docs(
    model: &Llama,
    tokenizer: &Tokenizer,
    docs: &[McDoc],
    opts: &ScorerOptions,
    stats: &mut ScoreStats,
) -> Result<McScores> {
    let eot = tokenizer.eos_ids.first().copied().unwrap_or(0);
    let requests: Vec<Vec<EncodedRequest>> = docs
        .iter()
        .map(|d| {
            d.choices
                .iter()
                .map(|c| encode_pair(tokenizer, &c.ctx, &c.cont, eot))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let flat: Vec<EncodedRequest> = requests.iter().flatten().cloned().collect();
    let mut all = score(model, &flat, opts, stats)?.into_iter();
    let scores = requests
        .iter()
        .map(|r| all.by_ref().take(r.len()).collect())
        .collect();
    Ok(McScores { requests, scores })
}

fn push(metrics: &mut Vec<(String, f64)>, name: &str, m: &MeanStderr) {
    metrics.push((format!("{name},none"), m.value));
    metrics.push((format!("{name}_stderr,none"), m.stderr));
}

/// Metrics and per-document items of a scored task.
pub fn outcome(task: EvalTaskName, docs: &[McDoc], scored: &McScores) -> Result<TaskOutcome> {
    let lls: Vec<Vec<f64>> = scored
        .scores
        .iter()
        .map(|s| s.iter().map(|x| x.ll).collect())
        .collect();
    let mut out = TaskOutcome::default();
    let mc2_values: Option<Vec<f64>> = if task.def().metric == MainMetric::Mc2 {
        let values = docs
            .iter()
            .zip(&lls)
            .map(|(d, ll)| {
                let labels = d.mc2_labels.as_deref().unwrap_or_default();
                metrics::mc2(ll, labels)
            })
            .collect::<std::result::Result<Vec<f64>, _>>()?;
        let m = MeanStderr::of(&values);
        push(&mut out.metrics, "acc", &m);
        push(&mut out.metrics, "mc2", &m);
        Some(values)
    } else {
        None
    };
    let scores = metrics::score_mc(docs, &lls)?;
    if mc2_values.is_none() {
        push(&mut out.metrics, "acc", &scores.acc);
        push(&mut out.metrics, "acc_norm", &scores.acc_norm_lmeval);
        push(&mut out.metrics, "acc_norm_bytes", &scores.acc_norm);
        if let Some(subjects) = &scores.subjects {
            out.metrics
                .push(("acc_macro,none".into(), subjects.macro_avg));
            for (subject, _, _) in &subjects.per_subject {
                let hits: Vec<f64> = docs
                    .iter()
                    .zip(&scores.predictions)
                    .filter(|(d, _)| d.subject.as_deref() == Some(subject.as_str()))
                    .map(|(d, p)| f64::from(u8::from(p.acc == d.gold)))
                    .collect();
                let mut m = Vec::new();
                push(&mut m, "acc", &MeanStderr::of(&hits));
                out.subtasks.push((format!("{task}_{subject}"), m));
            }
        }
    }
    for (i, doc) in docs.iter().enumerate() {
        let p = &scores.predictions[i];
        let s = &scored.scores[i];
        let mut item = json!({
            "task": task.as_str(),
            "idx": doc.idx,
            "gold": doc.gold,
            "lls": s.iter().map(|x| x.ll).collect::<Vec<_>>(),
            "is_greedy": s.iter().map(|x| x.is_greedy).collect::<Vec<_>>(),
            "cont_tokens": s.iter().map(|x| x.tokens).collect::<Vec<_>>(),
        });
        let obj = item.as_object_mut().expect("json! object");
        if let Some(id) = &doc.id {
            obj.insert("id".into(), json!(id));
        }
        if let Some(subject) = &doc.subject {
            obj.insert("subject".into(), json!(subject));
        }
        match &mc2_values {
            Some(values) => {
                obj.insert("mc2".into(), json!(values[i]));
                obj.insert("mc2_labels".into(), json!(doc.mc2_labels));
            }
            None => {
                obj.insert(
                    "pred".into(),
                    json!({"acc": p.acc, "acc_norm": p.acc_norm_lmeval, "acc_norm_bytes": p.acc_norm}),
                );
            }
        }
        let values = item_values(task, doc, p, &lls[i], mc2_values.as_ref().map(|v| v[i]));
        obj.insert("correct".into(), json!(values.correct));
        obj.insert("score".into(), json!(values.score));
        if let Some(logp) = values.logp_gold {
            obj.insert("logp_gold".into(), json!(logp));
        }
        let not_prefix: Vec<usize> = scored.requests[i]
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.context_is_prefix)
            .map(|(c, _)| c)
            .collect();
        if !not_prefix.is_empty() {
            obj.insert("context_not_prefix".into(), json!(not_prefix));
        }
        out.items.push(item);
    }
    Ok(out)
}

/// What one document contributes to the paired statistics (see [`super::items`]).
struct McItemValues {
    correct: bool,
    score: f64,
    logp_gold: Option<f64>,
}

fn item_values(
    task: EvalTaskName,
    doc: &McDoc,
    pred: &metrics::McPrediction,
    lls: &[f64],
    mc2: Option<f64>,
) -> McItemValues {
    match (task.def().metric, mc2) {
        (MainMetric::Mc2, Some(mc2)) => {
            let labels = doc.mc2_labels.as_deref().unwrap_or_default();
            let n_true = labels.iter().position(|l| !l).unwrap_or(labels.len());
            McItemValues {
                correct: pred.acc < n_true,
                score: mc2,
                logp_gold: log_prob_true(lls, n_true),
            }
        }
        (metric, _) => {
            let predicted = if metric == MainMetric::AccNorm {
                pred.acc_norm_lmeval
            } else {
                pred.acc
            };
            let correct = predicted == doc.gold;
            McItemValues {
                correct,
                score: f64::from(u8::from(correct)),
                logp_gold: log_prob_gold(lls, doc.gold),
            }
        }
    }
}

/// Reads the metrics back as `Value` for logging.
pub fn summary_line(out: &TaskOutcome) -> Value {
    Value::Object(
        out.metrics
            .iter()
            .filter(|(k, _)| !k.contains("_stderr"))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
    )
}
