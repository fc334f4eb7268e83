//! The `builtin:` dataset names.
//!
//! A dataset URI `builtin:<name>` names one of the data sets pruneforge ships with. The
//! runner resolves it against its data directory: locally the repository's shared data
//! directory (`../shared/data` relative to the repository root), in the runner image
//! the data directory baked into the image. The relative paths below are the same in
//! both places.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// URI scheme prefix of bundled data sets.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A data set bundled with pruneforge, addressed as `builtin:<name>`.
///
/// This is the one list of bundled data: the scored public slices, the few-shot pools (train
/// and dev splits) and the other splits a task can read. Every name is accepted by the CRD and
/// resolved by the runner; which task reads which set is in the eval task table
/// ([`crate::spec::EvalTaskName::def`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltinDataset {
    /// Stanford Alpaca, a random 5000-record subset (format `alpaca`).
    Alpaca,
    /// GSM8K train split, 7473 items (format `gsm8k`; the GSM8K few-shot pool).
    Gsm8kTrain,
    /// GSM8K test, public slice (items 0..199, format `gsm8k`).
    Gsm8kTest,
    /// ARC-Easy test, public slice.
    ArcEasy,
    /// ARC-Easy train split (the ARC-Easy few-shot pool).
    ArcEasyTrain,
    /// ARC-Challenge test, public slice.
    ArcChallenge,
    /// ARC-Challenge train split (the ARC-Challenge few-shot pool).
    ArcChallengeTrain,
    /// HellaSwag validation, public slice (also its own few-shot pool: there is no train split).
    Hellaswag,
    /// PIQA validation, public slice, labels in a sibling file ([`Self::labels_relative_path`];
    /// also its own few-shot pool: there is no train split).
    Piqa,
    /// Winogrande dev, public slice.
    Winogrande,
    /// Winogrande train_l (the Winogrande few-shot pool; train_xl is not available).
    WinograndeTrain,
    /// MMLU test, public slice (a directory of per-subject CSV files).
    Mmlu,
    /// MMLU dev split, 5 rows per subject (the MMLU few-shot pool).
    MmluDev,
    /// MMLU validation split (1531 rows): a split to tune on without touching test.
    MmluVal,
    /// TruthfulQA multiple choice (v0), public slice.
    TruthfulqaMc2,
}

impl BuiltinDataset {
    /// Every bundled data set.
    pub const ALL: [BuiltinDataset; 15] = [
        BuiltinDataset::Alpaca,
        BuiltinDataset::Gsm8kTrain,
        BuiltinDataset::Gsm8kTest,
        BuiltinDataset::ArcEasy,
        BuiltinDataset::ArcEasyTrain,
        BuiltinDataset::ArcChallenge,
        BuiltinDataset::ArcChallengeTrain,
        BuiltinDataset::Hellaswag,
        BuiltinDataset::Piqa,
        BuiltinDataset::Winogrande,
        BuiltinDataset::WinograndeTrain,
        BuiltinDataset::Mmlu,
        BuiltinDataset::MmluDev,
        BuiltinDataset::MmluVal,
        BuiltinDataset::TruthfulqaMc2,
    ];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinDataset::Alpaca => "alpaca",
            BuiltinDataset::Gsm8kTrain => "gsm8k-train",
            BuiltinDataset::Gsm8kTest => "gsm8k-test",
            BuiltinDataset::ArcEasy => "arc_easy",
            BuiltinDataset::ArcEasyTrain => "arc_easy-train",
            BuiltinDataset::ArcChallenge => "arc_challenge",
            BuiltinDataset::ArcChallengeTrain => "arc_challenge-train",
            BuiltinDataset::Hellaswag => "hellaswag",
            BuiltinDataset::Piqa => "piqa",
            BuiltinDataset::Winogrande => "winogrande",
            BuiltinDataset::WinograndeTrain => "winogrande-train",
            BuiltinDataset::Mmlu => "mmlu",
            BuiltinDataset::MmluDev => "mmlu-dev",
            BuiltinDataset::MmluVal => "mmlu-val",
            BuiltinDataset::TruthfulqaMc2 => "truthfulqa_mc2",
        }
    }

    /// The full URI, `builtin:<name>`.
    pub fn uri(self) -> String {
        format!("{BUILTIN_PREFIX}{}", self.name())
    }

    /// Path of the file (or directory, for the MMLU sets) relative to the data directory.
    pub fn relative_path(self) -> &'static str {
        match self {
            BuiltinDataset::Alpaca => "alpaca/alpaca_5000.json",
            BuiltinDataset::Gsm8kTrain => "gsm8k/train.jsonl",
            BuiltinDataset::Gsm8kTest => "gsm8k/test.public.jsonl",
            BuiltinDataset::ArcEasy => "arc/ARC-Easy-Test.public.jsonl",
            BuiltinDataset::ArcEasyTrain => "arc/ARC-Easy-Train.jsonl",
            BuiltinDataset::ArcChallenge => "arc/ARC-Challenge-Test.public.jsonl",
            BuiltinDataset::ArcChallengeTrain => "arc/ARC-Challenge-Train.jsonl",
            BuiltinDataset::Hellaswag => "hellaswag/hellaswag_val.public.jsonl",
            BuiltinDataset::Piqa => "piqa/valid.public.jsonl",
            BuiltinDataset::Winogrande => "winogrande/dev.public.jsonl",
            BuiltinDataset::WinograndeTrain => "winogrande/train_l.jsonl",
            BuiltinDataset::Mmlu => "mmlu/test.public",
            BuiltinDataset::MmluDev => "mmlu/dev",
            BuiltinDataset::MmluVal => "mmlu/val",
            BuiltinDataset::TruthfulqaMc2 => "truthfulqa/mc_task.v0.public.json",
        }
    }

    /// Path of the label file that goes with the items, relative to the data directory: PIQA
    /// keeps its labels beside the items (`valid.public.jsonl` → `valid-labels.public.lst`).
    pub fn labels_relative_path(self) -> Option<&'static str> {
        match self {
            BuiltinDataset::Piqa => Some("piqa/valid-labels.public.lst"),
            _ => None,
        }
    }

    /// Every path the data set needs, relative to the data directory: the items and, where
    /// there is one, the label file.
    pub fn relative_paths(self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.relative_path()).chain(self.labels_relative_path())
    }

    /// Parses a URI of the form `builtin:<name>`; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Result<Self, UnknownBuiltin>> {
        uri.strip_prefix(BUILTIN_PREFIX).map(str::parse)
    }

    /// The paths below `data_dir` that are missing, for every data set (all of them when
    /// `data_dir` is not a directory).
    pub fn missing_in(data_dir: &Path) -> Vec<PathBuf> {
        Self::ALL
            .iter()
            .flat_map(|d| d.relative_paths())
            .map(|p| data_dir.join(p))
            .filter(|p| !p.exists())
            .collect()
    }

    /// A CEL list literal of every `builtin:` URI, used in the CRD's validation rules.
    pub fn cel_uri_list() -> String {
        let items: Vec<String> = Self::ALL.iter().map(|d| format!("'{}'", d.uri())).collect();
        format!("[{}]", items.join(", "))
    }
}

impl fmt::Display for BuiltinDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `builtin:` name that pruneforge does not ship.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown builtin dataset {name:?}; known: {known}")]
pub struct UnknownBuiltin {
    /// The name that was asked for.
    pub name: String,
    /// Comma-separated list of known names.
    pub known: String,
}

impl FromStr for BuiltinDataset {
    type Err = UnknownBuiltin;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownBuiltin {
                name: s.to_string(),
                known: Self::ALL.map(|d| d.name()).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in BuiltinDataset::ALL {
            assert_eq!(BuiltinDataset::from_uri(&d.uri()), Some(Ok(d)));
        }
        assert!(BuiltinDataset::from_uri("s3://bucket/x").is_none());
        let err = BuiltinDataset::from_uri("builtin:dolly")
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("dolly"));
        assert!(err.to_string().contains("gsm8k-train"));
    }

    #[test]
    fn few_shot_pools_and_splits_are_accepted_names() {
        // The runner reads these; the API used to refuse them (`mmlu-val` was known to nobody).
        for (name, path) in [
            ("arc_easy-train", "arc/ARC-Easy-Train.jsonl"),
            ("arc_challenge-train", "arc/ARC-Challenge-Train.jsonl"),
            ("winogrande-train", "winogrande/train_l.jsonl"),
            ("mmlu-dev", "mmlu/dev"),
            ("mmlu-val", "mmlu/val"),
        ] {
            let d = BuiltinDataset::from_uri(&format!("builtin:{name}"))
                .expect("builtin URI")
                .expect("known name");
            assert_eq!(d.relative_path(), path);
        }
    }

    #[test]
    fn builtin_files_exist_in_shared_data() {
        // The shared data directory sits beside the repository checkout (CI and developer
        // machines; scripts/test.sh refuses to run without it), so its absence is a failure.
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        assert!(
            data.is_dir(),
            "{} not found: the shared data directory must sit beside the repository",
            data.display()
        );
        let missing = BuiltinDataset::missing_in(&data);
        assert!(
            missing.is_empty(),
            "missing in {}: {missing:?}",
            data.display()
        );
    }

    #[test]
    fn a_missing_data_directory_lacks_every_file() {
        let nowhere = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-data-dir");
        let missing = BuiltinDataset::missing_in(&nowhere);
        assert_eq!(missing.len(), BuiltinDataset::ALL.len() + 1, "{missing:?}");
        assert!(missing.contains(&nowhere.join("piqa/valid-labels.public.lst")));
    }
}
