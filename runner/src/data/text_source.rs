//! Generic text sources (for perplexity and calibration on other text): a plain text file, one
//! document per line, a string field of a JSONL file, or the Alpaca calibration stream.

use std::path::PathBuf;

use super::calibration::alpaca_calibration_stream;
use super::error::{Location, Result};
use super::json::{read_jsonl, read_text, Record};

/// Where text documents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// The whole file is one document.
    PlainFile(PathBuf),
    /// Every non-empty line of the file is one document (without its line break).
    Lines(PathBuf),
    /// The string field `field` of every record of a JSONL file.
    JsonlField { path: PathBuf, field: String },
    /// The Alpaca calibration stream of an Alpaca JSON array file, as one document.
    AlpacaStream(PathBuf),
}

impl TextSource {
    /// The documents, in file order.
    pub fn load(&self) -> Result<Vec<String>> {
        match self {
            TextSource::PlainFile(path) => Ok(vec![read_text(path)?]),
            TextSource::Lines(path) => Ok(read_text(path)?
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            TextSource::JsonlField { path, field } => read_jsonl(path)?
                .iter()
                .map(|line| {
                    Record::new(path, Location::Line(line.line), &line.value)?
                        .str(field)
                        .map(str::to_string)
                })
                .collect(),
            TextSource::AlpacaStream(path) => Ok(vec![alpaca_calibration_stream(path)?]),
        }
    }
}
