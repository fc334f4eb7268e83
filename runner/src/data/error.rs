//! Typed errors of the dataset loaders and task builders.
//!
//! Every variant that concerns a file names it, and, where the problem is inside the file, the
//! place (line, record, row) and what is wrong, so the message says what to fix.

use std::fmt;
use std::path::PathBuf;

/// Where inside a file a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    File,
    /// 1-based line number (JSONL, CSV, .lst files).
    Line(usize),
    /// 0-based record index inside a JSON array.
    Record(usize),
    /// 1-based line and column (JSON syntax errors).
    LineColumn(usize, usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => write!(f, "whole file"),
            Location::Line(line) => write!(f, "line {line}"),
            Location::Record(index) => write!(f, "record {index}"),
            Location::LineColumn(line, column) => write!(f, "line {line}, column {column}"),
        }
    }
}

/// Errors of `pruneforge::data`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file (or directory) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file could not be written (or renamed into place).
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// JSON syntax error.
    #[error("{path}, {at}: invalid JSON: {message}")]
    Json {
        path: PathBuf,
        at: Location,
        message: String,
    },

    /// The data is well-formed but does not have the expected content (missing field, wrong
    /// type, unknown answer label, ...).
    #[error("{path}, {at}: {message}")]
    Invalid {
        path: PathBuf,
        at: Location,
        message: String,
    },

    /// CSV syntax error (e.g. a quoted field that never ends).
    #[error("{path}, line {line}: invalid CSV: {message}")]
    Csv {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// No data root directory exists.
    #[error(
        "no data directory found; set PRUNEFORGE_DATA_DIR to the directory holding the datasets \
         (alpaca/, gsm8k/, arc/, ...). Looked in: {}",
        display_paths(.tried)
    )]
    DataRootNotFound { tried: Vec<PathBuf> },

    /// A `builtin:` name that is not known.
    #[error(transparent)]
    UnknownBuiltin(#[from] pruneforge_api::builtin::UnknownBuiltin),

    /// An evaluation task name that is not known.
    #[error(transparent)]
    UnknownTask(#[from] pruneforge_api::spec::UnknownTask),

    /// A task cannot be built with the requested settings (e.g. few-shot without a shot pool).
    #[error("task {task}: {message}")]
    Task { task: String, message: String },

    /// Bad input to a metric function (lengths that do not match, empty lists, ...).
    #[error("metric {metric}: {message}")]
    Metric {
        metric: &'static str,
        message: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl DataError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        at: Location,
        message: impl Into<String>,
    ) -> Self {
        DataError::Invalid {
            path: path.into(),
            at,
            message: message.into(),
        }
    }

    /// A JSON syntax error at `line` of the file (`line_offset` is added to serde_json's line,
    /// for JSONL where each line is parsed alone).
    pub(crate) fn json(
        path: impl Into<PathBuf>,
        line_offset: usize,
        source: &serde_json::Error,
    ) -> Self {
        let text = source.to_string();
        let suffix = format!(" at line {} column {}", source.line(), source.column());
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
        DataError::Json {
            path: path.into(),
            at: Location::LineColumn(source.line() + line_offset, source.column()),
            message,
        }
    }

    pub(crate) fn task(task: impl Into<String>, message: impl Into<String>) -> Self {
        DataError::Task {
            task: task.into(),
            message: message.into(),
        }
    }

    pub(crate) fn metric(metric: &'static str, message: impl Into<String>) -> Self {
        DataError::Metric {
            metric,
            message: message.into(),
        }
    }
}

/// Result alias of this module.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
