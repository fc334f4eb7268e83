//! The calibration text stream of the reference recipe (`shared/reference/README.md`,
//! "Calibration set"): the Alpaca records in file order, each as
//! `instruction + ("\n\n" + input if input != "") + "\n\n" + output` (no stripping), joined
//! with `"\n\n"`. The tokenizer turns the stream into the calibration and held-out windows.

use std::path::Path;

use super::error::Result;
use super::sft::{load_alpaca, SftRecord};

/// One record as calibration text.
pub fn alpaca_text(record: &SftRecord) -> String {
    let mut text = record.instruction.clone();
    if !record.input.is_empty() {
        text.push_str("\n\n");
        text.push_str(&record.input);
    }
    text.push_str("\n\n");
    text.push_str(&record.output);
    text
}

/// All records as one stream, in order, joined with `"\n\n"`.
pub fn calibration_stream(records: &[SftRecord]) -> String {
    records
        .iter()
        .map(alpaca_text)
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The calibration stream of an Alpaca JSON array file.
pub fn alpaca_calibration_stream(path: &Path) -> Result<String> {
    Ok(calibration_stream(&load_alpaca(path)?))
}
