//! The data root (where the shipped datasets live) and `builtin:` dataset names.
//!
//! The data root is, in order: `$PRUNEFORGE_DATA_DIR`; `../shared/data` relative to the
//! current directory; `../shared/data` relative to the repository root (the nearest ancestor of
//! the current directory holding `.git`); `/usr/share/pruneforge/data` (the runner image).

use std::path::{Path, PathBuf};

use super::error::{DataError, Result};

/// Environment variable naming the data root.
pub const DATA_DIR_ENV: &str = "PRUNEFORGE_DATA_DIR";
/// Data root inside the runner image.
pub const IMAGE_DATA_DIR: &str = "/usr/share/pruneforge/data";
/// Prefix of builtin dataset names.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A directory holding the datasets in the layout of `shared/data` (alpaca/, gsm8k/, arc/, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    dir: PathBuf,
}

impl DataRoot {
    /// Uses `dir` as the data root (not checked).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DataRoot { dir: dir.into() }
    }

    /// Finds the data root (see the module docs). When `PRUNEFORGE_DATA_DIR` is set it must
    /// name an existing directory; the other places are only used when it is not set.
    pub fn discover() -> Result<Self> {
        let tried = Self::candidates();
        match tried.iter().find(|dir| dir.is_dir()) {
            Some(dir) => Ok(DataRoot::new(dir.clone())),
            None => Err(DataError::DataRootNotFound { tried }),
        }
    }

    /// The places `discover` looks at, in order.
    pub fn candidates() -> Vec<PathBuf> {
        if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
            return vec![PathBuf::from(dir)];
        }
        let mut out = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            out.push(cwd.join("../shared/data"));
            if let Some(repo) = cwd.ancestors().find(|dir| dir.join(".git").exists()) {
                out.push(repo.join("../shared/data"));
            }
        }
        out.push(PathBuf::from(IMAGE_DATA_DIR));
        let mut unique: Vec<PathBuf> = Vec::new();
        for dir in out {
            if !unique.contains(&dir) {
                unique.push(dir);
            }
        }
        unique
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path below the data root.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.dir.join(relative)
    }
}

/// The datasets that ship with pruneforge, by their `builtin:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `alpaca/alpaca_5000.json` (SFT, alpaca JSON array).
    Alpaca,
    /// `gsm8k/train.jsonl` (SFT and few-shot pool).
    Gsm8kTrain,
    /// `gsm8k/test.public.jsonl`.
    Gsm8kTest,
    /// `arc/ARC-Easy-Test.public.jsonl`.
    ArcEasy,
    /// `arc/ARC-Easy-Train.jsonl`.
    ArcEasyTrain,
    /// `arc/ARC-Challenge-Test.public.jsonl`.
    ArcChallenge,
    /// `arc/ARC-Challenge-Train.jsonl`.
    ArcChallengeTrain,
    /// `hellaswag/hellaswag_val.public.jsonl`.
    Hellaswag,
    /// `piqa/valid.public.jsonl` (labels in `piqa/valid-labels.public.lst`).
    Piqa,
    /// `winogrande/dev.public.jsonl`.
    Winogrande,
    /// `winogrande/train_l.jsonl`.
    WinograndeTrain,
    /// `mmlu/test.public/` (one CSV per subject).
    Mmlu,
    /// `mmlu/dev/` (5 rows per subject; the few-shot pool).
    MmluDev,
    /// `mmlu/val/`.
    MmluVal,
    /// `truthfulqa/mc_task.v0.public.json`.
    Truthfulqa,
}

impl Builtin {
    pub const ALL: [Builtin; 15] = [
        Builtin::Alpaca,
        Builtin::Gsm8kTrain,
        Builtin::Gsm8kTest,
        Builtin::ArcEasy,
        Builtin::ArcEasyTrain,
        Builtin::ArcChallenge,
        Builtin::ArcChallengeTrain,
        Builtin::Hellaswag,
        Builtin::Piqa,
        Builtin::Winogrande,
        Builtin::WinograndeTrain,
        Builtin::Mmlu,
        Builtin::MmluDev,
        Builtin::MmluVal,
        Builtin::Truthfulqa,
    ];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Alpaca => "alpaca",
            Builtin::Gsm8kTrain => "gsm8k-train",
            Builtin::Gsm8kTest => "gsm8k-test",
            Builtin::ArcEasy => "arc_easy",
            Builtin::ArcEasyTrain => "arc_easy-train",
            Builtin::ArcChallenge => "arc_challenge",
            Builtin::ArcChallengeTrain => "arc_challenge-train",
            Builtin::Hellaswag => "hellaswag",
            Builtin::Piqa => "piqa",
            Builtin::Winogrande => "winogrande",
            Builtin::WinograndeTrain => "winogrande-train",
            Builtin::Mmlu => "mmlu",
            Builtin::MmluDev => "mmlu-dev",
            Builtin::MmluVal => "mmlu-val",
            Builtin::Truthfulqa => "truthfulqa",
        }
    }

    /// Path relative to the data root (a directory for the MMLU entries).
    pub fn relative_path(self) -> &'static str {
        match self {
            Builtin::Alpaca => "alpaca/alpaca_5000.json",
            Builtin::Gsm8kTrain => "gsm8k/train.jsonl",
            Builtin::Gsm8kTest => "gsm8k/test.public.jsonl",
            Builtin::ArcEasy => "arc/ARC-Easy-Test.public.jsonl",
            Builtin::ArcEasyTrain => "arc/ARC-Easy-Train.jsonl",
            Builtin::ArcChallenge => "arc/ARC-Challenge-Test.public.jsonl",
            Builtin::ArcChallengeTrain => "arc/ARC-Challenge-Train.jsonl",
            Builtin::Hellaswag => "hellaswag/hellaswag_val.public.jsonl",
            Builtin::Piqa => "piqa/valid.public.jsonl",
            Builtin::Winogrande => "winogrande/dev.public.jsonl",
            Builtin::WinograndeTrain => "winogrande/train_l.jsonl",
            Builtin::Mmlu => "mmlu/test.public",
            Builtin::MmluDev => "mmlu/dev",
            Builtin::MmluVal => "mmlu/val",
            Builtin::Truthfulqa => "truthfulqa/mc_task.v0.public.json",
        }
    }

    /// Parses a name, with or without the `builtin:` prefix.
    pub fn parse(name: &str) -> Result<Self> {
        let bare = name.strip_prefix(BUILTIN_PREFIX).unwrap_or(name);
        Builtin::ALL
            .into_iter()
            .find(|b| b.name() == bare)
            .ok_or_else(|| DataError::UnknownBuiltin {
                name: name.to_string(),
                known: Builtin::ALL
                    .iter()
                    .map(|b| format!("{BUILTIN_PREFIX}{}", b.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The file (or directory) under `root`.
    pub fn path(self, root: &DataRoot) -> PathBuf {
        root.join(self.relative_path())
    }
}

/// Resolves a dataset reference: `builtin:NAME` becomes a path under the data root (found with
/// [`DataRoot::discover`] when `root` is `None`); anything else is taken as a path.
pub fn resolve_dataset(spec: &str, root: Option<&DataRoot>) -> Result<PathBuf> {
    if !spec.starts_with(BUILTIN_PREFIX) {
        return Ok(PathBuf::from(spec));
    }
    let builtin = Builtin::parse(spec)?;
    match root {
        Some(root) => Ok(builtin.path(root)),
        None => Ok(builtin.path(&DataRoot::discover()?)),
    }
}

/// PIQA's label file, next to the PIQA items of the data root.
pub const PIQA_LABELS: &str = "piqa/valid-labels.public.lst";
