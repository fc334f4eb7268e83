//! The `builtin:` dataset names.
//!
//! A dataset URI `builtin:<name>` names one of the data sets pruneforge ships with. The
//! runner resolves it against its data directory: locally the repository's shared data
//! directory (`../shared/data` relative to the repository root), in the runner image
//! the data directory baked into the image. The relative paths below are the same in
//! both places.

use std::fmt;
use std::str::FromStr;

/// URI scheme prefix of bundled data sets.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// A data set bundled with pruneforge, addressed as `builtin:<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltinDataset {
    /// Stanford Alpaca, a random 5000-record subset (format `alpaca`).
    Alpaca,
    /// GSM8K train split, 7473 items (format `gsm8k`).
    Gsm8kTrain,
    /// GSM8K test, public slice (items 0..199, format `gsm8k`).
    Gsm8kTest,
    /// ARC-Easy test, public slice.
    ArcEasy,
    /// ARC-Challenge test, public slice.
    ArcChallenge,
    /// HellaSwag validation, public slice.
    Hellaswag,
    /// PIQA validation, public slice (labels in a sibling file).
    Piqa,
    /// Winogrande dev, public slice.
    Winogrande,
    /// MMLU test, public slice (a directory of per-subject CSV files).
    Mmlu,
    /// TruthfulQA multiple choice (v0), public slice.
    TruthfulqaMc2,
}

impl BuiltinDataset {
    /// Every bundled data set.
    pub const ALL: [BuiltinDataset; 10] = [
        BuiltinDataset::Alpaca,
        BuiltinDataset::Gsm8kTrain,
        BuiltinDataset::Gsm8kTest,
        BuiltinDataset::ArcEasy,
        BuiltinDataset::ArcChallenge,
        BuiltinDataset::Hellaswag,
        BuiltinDataset::Piqa,
        BuiltinDataset::Winogrande,
        BuiltinDataset::Mmlu,
        BuiltinDataset::TruthfulqaMc2,
    ];

    /// The name after `builtin:`.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinDataset::Alpaca => "alpaca",
            BuiltinDataset::Gsm8kTrain => "gsm8k-train",
            BuiltinDataset::Gsm8kTest => "gsm8k-test",
            BuiltinDataset::ArcEasy => "arc_easy",
            BuiltinDataset::ArcChallenge => "arc_challenge",
            BuiltinDataset::Hellaswag => "hellaswag",
            BuiltinDataset::Piqa => "piqa",
            BuiltinDataset::Winogrande => "winogrande",
            BuiltinDataset::Mmlu => "mmlu",
            BuiltinDataset::TruthfulqaMc2 => "truthfulqa_mc2",
        }
    }

    /// The full URI, `builtin:<name>`.
    pub fn uri(self) -> String {
        format!("{BUILTIN_PREFIX}{}", self.name())
    }

    /// Path of the file (or directory, for MMLU) relative to the data directory.
    pub fn relative_path(self) -> &'static str {
        match self {
            BuiltinDataset::Alpaca => "alpaca/alpaca_5000.json",
            BuiltinDataset::Gsm8kTrain => "gsm8k/train.jsonl",
            BuiltinDataset::Gsm8kTest => "gsm8k/test.public.jsonl",
            BuiltinDataset::ArcEasy => "arc/ARC-Easy-Test.public.jsonl",
            BuiltinDataset::ArcChallenge => "arc/ARC-Challenge-Test.public.jsonl",
            BuiltinDataset::Hellaswag => "hellaswag/hellaswag_val.public.jsonl",
            BuiltinDataset::Piqa => "piqa/valid.public.jsonl",
            BuiltinDataset::Winogrande => "winogrande/dev.public.jsonl",
            BuiltinDataset::Mmlu => "mmlu/test.public",
            BuiltinDataset::TruthfulqaMc2 => "truthfulqa/mc_task.v0.public.json",
        }
    }

    /// Parses a URI of the form `builtin:<name>`; `None` for any other URI.
    pub fn from_uri(uri: &str) -> Option<Result<Self, UnknownBuiltin>> {
        uri.strip_prefix(BUILTIN_PREFIX).map(str::parse)
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
    fn builtin_files_exist_in_shared_data() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data");
        if !data.is_dir() {
            // The shared data directory sits beside the repository checkout (CI and
            // developer machines); say so instead of passing silently.
            eprintln!("skipped: {} not found", data.display());
            return;
        }
        for d in BuiltinDataset::ALL {
            let p = data.join(d.relative_path());
            assert!(p.exists(), "{} -> {} missing", d.uri(), p.display());
        }
    }
}
