//! GGUF import: read, dequantize, and convert to an HF model directory.

pub mod convert;
pub mod dequant;
pub mod reader;

pub use reader::{GgufFile, MetaValue};
