//! Calibration text used to score layer importance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{DatasetFormat, DatasetRef};
use crate::builtin::BuiltinDataset;

/// Calibration data: `sequences` windows of `seqLen` tokens cut from the tokenized text stream
/// of `dataset`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CalibrationSpec {
    /// Text source; records are rendered as text and concatenated into one token stream.
    #[serde(default = "default_dataset")]
    pub dataset: DatasetRef,
    /// Number of calibration sequences.
    #[serde(default = "default_sequences")]
    #[schemars(range(min = 1, max = 4096))]
    pub sequences: u32,
    /// Tokens per calibration sequence.
    #[serde(default = "default_seq_len")]
    #[schemars(range(min = 8, max = 8192))]
    pub seq_len: u32,
}

fn default_dataset() -> DatasetRef {
    DatasetRef::builtin(BuiltinDataset::Alpaca, DatasetFormat::Alpaca)
}

fn default_sequences() -> u32 {
    64
}

fn default_seq_len() -> u32 {
    128
}

impl Default for CalibrationSpec {
    fn default() -> Self {
        CalibrationSpec {
            dataset: default_dataset(),
            sequences: default_sequences(),
            seq_len: default_seq_len(),
        }
    }
}
