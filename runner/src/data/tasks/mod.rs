//! Evaluation-task request builders with lm-evaluation-harness semantics (pure text: no model,
//! no tokenizer). Contexts and continuations are exactly those of
//! `shared/reference/README.md` (accuracy section) for the zero-shot multiple-choice tasks.

pub mod arc;
pub mod doc;
pub mod fewshot;
pub mod gsm8k;
pub mod hellaswag;
pub mod mmlu;
pub mod perplexity;
pub mod piqa;
pub mod truthfulqa;
pub mod winogrande;

use std::fmt;
use std::path::PathBuf;

pub use doc::{split_trailing_whitespace, Choice, GenDoc, McDoc, TaskDocs, TextRow};

use super::builtin::{Builtin, DataRoot, PIQA_LABELS};
use super::error::{DataError, Result};
use super::selection::Selection;
use fewshot::DEFAULT_FEWSHOT_SEED;

/// The evaluation tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskName {
    ArcEasy,
    ArcChallenge,
    Hellaswag,
    Piqa,
    Winogrande,
    Mmlu,
    TruthfulqaMc2,
    Gsm8k,
    Perplexity,
}

impl TaskName {
    pub const ALL: [TaskName; 9] = [
        TaskName::ArcEasy,
        TaskName::ArcChallenge,
        TaskName::Hellaswag,
        TaskName::Piqa,
        TaskName::Winogrande,
        TaskName::Mmlu,
        TaskName::TruthfulqaMc2,
        TaskName::Gsm8k,
        TaskName::Perplexity,
    ];

    /// lm-eval's task name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskName::ArcEasy => "arc_easy",
            TaskName::ArcChallenge => "arc_challenge",
            TaskName::Hellaswag => "hellaswag",
            TaskName::Piqa => "piqa",
            TaskName::Winogrande => "winogrande",
            TaskName::Mmlu => "mmlu",
            TaskName::TruthfulqaMc2 => "truthfulqa_mc2",
            TaskName::Gsm8k => "gsm8k",
            TaskName::Perplexity => "perplexity",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        TaskName::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| DataError::UnknownTask {
                name: name.to_string(),
                known: TaskName::ALL.map(TaskName::as_str).join(", "),
            })
    }
}

impl fmt::Display for TaskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How to build a task's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskConfig {
    /// Few-shot examples before each document.
    pub num_fewshot: usize,
    /// Seed of the few-shot sampler (lm-eval's default: 1234).
    pub seed: i64,
    /// Which documents to keep. Indices (`idx`) stay those of the full list.
    pub selection: Selection,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            num_fewshot: 0,
            seed: DEFAULT_FEWSHOT_SEED,
            selection: Selection::ALL,
        }
    }
}

/// The files a task reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFiles {
    /// The scored documents (MMLU: a directory of `<subject>_<split>.csv`; perplexity: a text
    /// source, see [`perplexity::source_for_path`]).
    pub docs: PathBuf,
    /// PIQA: the label file of `docs`.
    pub labels: Option<PathBuf>,
    /// The few-shot pool (MMLU: the dev directory).
    pub shots: Option<PathBuf>,
    /// PIQA: the label file of `shots`.
    pub shot_labels: Option<PathBuf>,
}

impl TaskFiles {
    /// Only the documents.
    pub fn docs(docs: impl Into<PathBuf>) -> Self {
        TaskFiles {
            docs: docs.into(),
            labels: None,
            shots: None,
            shot_labels: None,
        }
    }

    /// The public slices of the data root, with the few-shot pools of
    /// `shared/data/README.md` (ARC train, MMLU dev, Winogrande train_l, GSM8K train, the
    /// HellaSwag and PIQA public slices). Perplexity: the Alpaca file (calibration stream).
    pub fn public(task: TaskName, root: &DataRoot) -> Self {
        let path = |b: Builtin| Some(b.path(root));
        let (docs, labels, shots, shot_labels) = match task {
            TaskName::ArcEasy => (Builtin::ArcEasy, None, path(Builtin::ArcEasyTrain), None),
            TaskName::ArcChallenge => (
                Builtin::ArcChallenge,
                None,
                path(Builtin::ArcChallengeTrain),
                None,
            ),
            TaskName::Hellaswag => (Builtin::Hellaswag, None, path(Builtin::Hellaswag), None),
            TaskName::Piqa => (
                Builtin::Piqa,
                Some(root.join(PIQA_LABELS)),
                path(Builtin::Piqa),
                Some(root.join(PIQA_LABELS)),
            ),
            TaskName::Winogrande => (
                Builtin::Winogrande,
                None,
                path(Builtin::WinograndeTrain),
                None,
            ),
            TaskName::Mmlu => (Builtin::Mmlu, None, path(Builtin::MmluDev), None),
            TaskName::TruthfulqaMc2 => (Builtin::Truthfulqa, None, None, None),
            TaskName::Gsm8k => (Builtin::Gsm8kTest, None, path(Builtin::Gsm8kTrain), None),
            TaskName::Perplexity => (Builtin::Alpaca, None, None, None),
        };
        TaskFiles {
            docs: docs.path(root),
            labels,
            shots,
            shot_labels,
        }
    }
}

/// Builds the documents of `task`.
pub fn build(task: TaskName, files: &TaskFiles, config: &TaskConfig) -> Result<TaskDocs> {
    let mc = TaskDocs::MultipleChoice;
    Ok(match task {
        TaskName::ArcEasy | TaskName::ArcChallenge => mc(arc::build(task, files, config)?),
        TaskName::Hellaswag => mc(hellaswag::build(files, config)?),
        TaskName::Piqa => mc(piqa::build(files, config)?),
        TaskName::Winogrande => mc(winogrande::build(files, config)?),
        TaskName::Mmlu => mc(mmlu::build(files, config)?),
        TaskName::TruthfulqaMc2 => mc(truthfulqa::build(files, config)?),
        TaskName::Gsm8k => TaskDocs::Generation(gsm8k::build(files, config)?),
        TaskName::Perplexity => TaskDocs::Perplexity(perplexity::build(
            &perplexity::source_for_path(&files.docs),
            config,
        )?),
    })
}

/// The few-shot pool file, or an error saying it is needed.
pub(crate) fn shot_file(task: TaskName, files: &TaskFiles) -> Result<&std::path::Path> {
    files.shots.as_deref().ok_or_else(|| {
        DataError::task(
            task.as_str(),
            "num_fewshot > 0 needs a few-shot pool file (TaskFiles.shots)",
        )
    })
}
