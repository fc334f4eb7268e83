//! Evaluation-task request builders with lm-evaluation-harness semantics (pure text: no model,
//! no tokenizer). Contexts and continuations are exactly those of
//! `shared/reference/README.md` (accuracy section) for the zero-shot multiple-choice tasks.

pub mod answers;
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

use std::path::{Path, PathBuf};

use pruneforge_api::spec::EvalTaskName;

pub use doc::{split_trailing_whitespace, Choice, GenDoc, McDoc, TaskDocs, TextRow};

use super::builtin::DataRoot;
use super::error::{DataError, Result};
use super::selection::Selection;
use fewshot::DEFAULT_FEWSHOT_SEED;

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

    /// The task's bundled files under the data root: its public slice and its few-shot pool
    /// (with their label files), as the task table says ([`EvalTaskName::def`]).
    pub fn public(task: EvalTaskName, root: &DataRoot) -> Self {
        let def = task.def();
        TaskFiles {
            docs: root.dataset(def.docs),
            labels: root.labels(def.docs),
            shots: def.fewshot_pool.map(|pool| root.dataset(pool)),
            shot_labels: def.fewshot_pool.and_then(|pool| root.labels(pool)),
        }
    }

    /// The scored documents and their label file.
    pub fn docs_file(&self) -> ItemsFile<'_> {
        ItemsFile {
            items: &self.docs,
            labels: self.labels.as_deref(),
        }
    }

    /// The few-shot pool and its label file, or an error saying it is needed.
    pub fn pool_file(&self, task: EvalTaskName) -> Result<ItemsFile<'_>> {
        let items = self.shots.as_deref().ok_or_else(|| {
            DataError::task(
                task.as_str(),
                "num_fewshot > 0 needs a few-shot pool file (TaskFiles.shots)",
            )
        })?;
        Ok(ItemsFile {
            items,
            labels: self.shot_labels.as_deref(),
        })
    }
}

/// A file of task items and, for data that keeps its labels apart (PIQA), the label file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemsFile<'a> {
    pub items: &'a Path,
    pub labels: Option<&'a Path>,
}

/// Builds the documents of `task`: the one place that maps a task to its builder.
pub fn build(task: EvalTaskName, files: &TaskFiles, config: &TaskConfig) -> Result<TaskDocs> {
    let mc = TaskDocs::MultipleChoice;
    Ok(match task {
        EvalTaskName::ArcEasy | EvalTaskName::ArcChallenge => mc(arc::build(task, files, config)?),
        EvalTaskName::Hellaswag => mc(hellaswag::build(files, config)?),
        EvalTaskName::Piqa => mc(piqa::build(files, config)?),
        EvalTaskName::Winogrande => mc(winogrande::build(files, config)?),
        EvalTaskName::Mmlu => mc(mmlu::build(files, config)?),
        EvalTaskName::TruthfulqaMc2 => mc(truthfulqa::build(files, config)?),
        EvalTaskName::Gsm8k => TaskDocs::Generation(gsm8k::build(files, config)?),
        EvalTaskName::AnswerNll => TaskDocs::Answers(answers::build(files, config)?),
        EvalTaskName::Perplexity | EvalTaskName::Kl => TaskDocs::Perplexity(perplexity::build(
            &perplexity::source_for_path(&files.docs),
            config,
        )?),
    })
}
