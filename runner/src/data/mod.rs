//! Datasets and evaluation-task request builders (pure text: no model, no tokenizer).
//!
//! - [`sft`]: Alpaca JSON arrays, GSM8K JSONL and generic JSONL read into [`SftRecord`]s and
//!   written back in the schema they came in.
//! - [`calibration`]: the reference calibration text stream; [`text_source`]: other text.
//! - [`builtin`]: the data root and the resolution of `builtin:` dataset names.
//! - [`tasks`]: lm-evaluation-harness style documents (log-likelihood requests, generation
//!   prompts, perplexity rows) for ARC, HellaSwag, PIQA, Winogrande, MMLU, TruthfulQA mc2,
//!   GSM8K; [`metrics`]: the metric functions.
//! - [`csv`]: a CSV reader that parses like Python's `csv` module.

pub mod builtin;
pub mod calibration;
pub mod csv;
pub mod error;
pub mod json;
pub mod metrics;
pub mod preference;
pub mod pyrandom;
pub mod pystr;
pub mod selection;
pub mod sft;
pub mod tasks;
pub mod text_source;
pub mod token_ids;

pub use builtin::{BuiltinDataset, DataRoot};
pub use error::{DataError, Location};
pub use selection::Selection;
pub use sft::{FieldMap, SftDataset, SftRecord, SftSchema};
pub use tasks::{TaskConfig, TaskDocs, TaskFiles};
pub use text_source::TextSource;
