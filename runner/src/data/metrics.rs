//! Metrics over per-choice log-likelihoods and generations, as in lm-evaluation-harness and
//! `shared/reference/scripts/ref_accuracy.py`:
//! - `acc`: argmax of the log-likelihoods (first index on ties);
//! - `acc_norm` (reference, bytes): argmax of ll / UTF-8 bytes of the continuation, leading
//!   space included;
//! - `acc_norm_lmeval` (chars): argmax of ll / characters of the choice without the leading
//!   space (at least 1);
//! - stderr: sample standard deviation (ddof 1) / sqrt(n);
//! - MMLU: micro (over items) and macro (over subjects) averages;
//! - TruthfulQA mc2: normalised probability mass of the true answers;
//! - GSM8K: exact match after lm-eval's normalisation.

use super::error::{DataError, Result};
use super::tasks::doc::{Choice, McDoc};
use super::tasks::gsm8k::normalize_answer;

/// Index of the largest value, the first one on ties; NaN never wins. `None` when empty.
pub fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            _ if v.is_nan() => {}
            None => best = Some(i),
            Some(b) if v > values[b] => best = Some(i),
            Some(_) => {}
        }
    }
    best.or(if values.is_empty() { None } else { Some(0) })
}

/// The predicted choice under the three conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McPrediction {
    pub acc: usize,
    /// Normalised by UTF-8 bytes of the continuation (the reference's `acc_norm`).
    pub acc_norm: usize,
    /// Normalised by characters of the choice (lm-eval's `acc_norm`).
    pub acc_norm_lmeval: usize,
}

/// Predictions for one document from the log-likelihood of each choice.
pub fn predict(choices: &[Choice], lls: &[f64]) -> Result<McPrediction> {
    if choices.len() != lls.len() || lls.is_empty() {
        return Err(DataError::metric(
            "acc",
            format!(
                "{} log-likelihoods for {} choices (need one per choice, at least one)",
                lls.len(),
                choices.len()
            ),
        ));
    }
    let by_bytes: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.len_bytes.max(1) as f64)
        .collect();
    let by_chars: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.len_chars.max(1) as f64)
        .collect();
    Ok(McPrediction {
        acc: argmax(lls).unwrap_or(0),
        acc_norm: argmax(&by_bytes).unwrap_or(0),
        acc_norm_lmeval: argmax(&by_chars).unwrap_or(0),
    })
}

/// Mean of the values (0 for none).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Standard error of the mean: sample standard deviation (ddof 1) / sqrt(n); 0 for n < 2.
pub fn stderr(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(values);
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (n - 1) as f64).sqrt() / (n as f64).sqrt()
}

/// A mean and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStderr {
    pub value: f64,
    pub stderr: f64,
    pub n: usize,
}

impl MeanStderr {
    pub fn of(values: &[f64]) -> Self {
        MeanStderr {
            value: mean(values),
            stderr: stderr(values),
            n: values.len(),
        }
    }
}

/// Micro and macro averages over subjects.
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectAverages {
    /// Mean over all items.
    pub micro: f64,
    /// Mean over subjects of the per-subject means (subjects in order of first appearance).
    pub macro_avg: f64,
    /// `(subject, mean, items)` in order of first appearance.
    pub per_subject: Vec<(String, f64, usize)>,
}

/// Micro/macro averages of `(subject, score)` pairs.
pub fn subject_averages<S: AsRef<str>>(scores: &[(S, f64)]) -> SubjectAverages {
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    for (subject, score) in scores {
        let subject = subject.as_ref();
        match groups.iter_mut().find(|(s, _)| s == subject) {
            Some((_, v)) => v.push(*score),
            None => groups.push((subject.to_string(), vec![*score])),
        }
    }
    let per_subject: Vec<(String, f64, usize)> = groups
        .into_iter()
        .map(|(s, v)| {
            let m = mean(&v);
            (s, m, v.len())
        })
        .collect();
    let macro_avg = if per_subject.is_empty() {
        0.0
    } else {
        per_subject.iter().map(|(_, m, _)| m).sum::<f64>() / per_subject.len() as f64
    };
    let all: Vec<f64> = scores.iter().map(|(_, s)| *s).collect();
    SubjectAverages {
        micro: mean(&all),
        macro_avg,
        per_subject,
    }
}

/// Scores of a multiple-choice task.
#[derive(Debug, Clone, PartialEq)]
pub struct McTaskScores {
    pub acc: MeanStderr,
    /// Reference `acc_norm` (bytes, leading space included).
    pub acc_norm: MeanStderr,
    /// lm-eval `acc_norm` (characters without the leading space).
    pub acc_norm_lmeval: MeanStderr,
    /// For documents with subjects (MMLU): averages of `acc`.
    pub subjects: Option<SubjectAverages>,
    pub predictions: Vec<McPrediction>,
}

/// Scores documents given the log-likelihoods of their choices (`lls[d][c]`).
pub fn score_mc(docs: &[McDoc], lls: &[Vec<f64>]) -> Result<McTaskScores> {
    if docs.len() != lls.len() {
        return Err(DataError::metric(
            "acc",
            format!(
                "{} log-likelihood lists for {} documents",
                lls.len(),
                docs.len()
            ),
        ));
    }
    let mut predictions = Vec::with_capacity(docs.len());
    let (mut acc, mut norm, mut lmeval) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_subject = Vec::new();
    for (doc, ll) in docs.iter().zip(lls) {
        let p = predict(&doc.choices, ll)?;
        let hit = |i: usize| f64::from(u8::from(i == doc.gold));
        acc.push(hit(p.acc));
        norm.push(hit(p.acc_norm));
        lmeval.push(hit(p.acc_norm_lmeval));
        if let Some(subject) = &doc.subject {
            by_subject.push((subject.clone(), hit(p.acc)));
        }
        predictions.push(p);
    }
    Ok(McTaskScores {
        acc: MeanStderr::of(&acc),
        acc_norm: MeanStderr::of(&norm),
        acc_norm_lmeval: MeanStderr::of(&lmeval),
        subjects: (!by_subject.is_empty()).then(|| subject_averages(&by_subject)),
        predictions,
    })
}

/// TruthfulQA mc2 for one question, as lm-eval's `process_results_mc2`: the answers before the
/// first false label are the true ones, and the score is their share of the total probability
/// `sum(exp(ll_true)) / (sum(exp(ll_true)) + sum(exp(ll_false)))`.
pub fn mc2(lls: &[f64], labels: &[bool]) -> Result<f64> {
    if lls.len() != labels.len() {
        return Err(DataError::metric(
            "mc2",
            format!("{} log-likelihoods for {} answers", lls.len(), labels.len()),
        ));
    }
    let split = labels
        .iter()
        .position(|&l| !l)
        .ok_or_else(|| DataError::metric("mc2", "no false answer (label 0) among the answers"))?;
    let p: Vec<f64> = lls.iter().map(|ll| ll.exp()).collect();
    let p_true: f64 = p[..split].iter().sum();
    let p_false: f64 = p[split..].iter().sum();
    let total = p_true + p_false;
    Ok(p[..split].iter().map(|x| x / total).sum())
}

/// mc2 over documents (`lls[d][c]`); every document needs `mc2_labels`.
pub fn score_mc2(docs: &[McDoc], lls: &[Vec<f64>]) -> Result<MeanStderr> {
    if docs.len() != lls.len() {
        return Err(DataError::metric(
            "mc2",
            format!(
                "{} log-likelihood lists for {} documents",
                lls.len(),
                docs.len()
            ),
        ));
    }
    let scores = docs
        .iter()
        .zip(lls)
        .map(|(doc, ll)| {
            let labels = doc.mc2_labels.as_deref().ok_or_else(|| {
                DataError::metric("mc2", format!("document {} has no mc2 labels", doc.idx))
            })?;
            mc2(ll, labels)
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(MeanStderr::of(&scores))
}

/// GSM8K exact match of a filtered answer (from `extract_strict` / `extract_flexible`) against
/// the reference solution, both normalised as lm-eval does.
pub fn gsm8k_exact_match(filtered: &str, reference: &str) -> bool {
    normalize_answer(filtered) == normalize_answer(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax(&[f64::NAN, -1.0]), Some(1));
        assert_eq!(argmax(&[]), None);
    }

    #[test]
    fn stderr_is_sample_std_over_sqrt_n() {
        let v = [1.0, 0.0, 1.0, 1.0];
        // stdev = 0.5, / sqrt(4)
        assert!((stderr(&v) - 0.25).abs() < 1e-15);
        assert_eq!(stderr(&[1.0]), 0.0);
    }

    #[test]
    fn mc2_mass() {
        let lls = [0.5f64.ln(), 0.25f64.ln(), 0.25f64.ln()];
        let got = mc2(&lls, &[true, false, true]).expect("valid");
        // split at the first false: only the first answer counts as true
        assert!((got - 0.5).abs() < 1e-12);
        assert!(mc2(&lls, &[true, true, true]).is_err());
        assert_eq!(mc2(&lls, &[false, true, true]).expect("valid"), 0.0);
    }

    #[test]
    fn macro_and_micro() {
        let s = subject_averages(&[("a", 1.0), ("a", 0.0), ("b", 1.0)]);
        assert!((s.micro - 2.0 / 3.0).abs() < 1e-15);
        assert!((s.macro_avg - 0.75).abs() < 1e-15);
    }

    #[test]
    fn gsm8k_match() {
        assert!(gsm8k_exact_match("1,200", "so\n#### 1200"));
        assert!(!gsm8k_exact_match("[invalid]", "#### 5"));
        assert!(gsm8k_exact_match("$5.", "#### 5"));
    }
}
