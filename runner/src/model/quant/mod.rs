//! Quantized frozen weights for QLoRA: a projection's base weight kept in a block format
//! (GGUF Q8_0, Q4_0, Q4_1, Q4_K through candle's block types; NF4 as bitsandbytes defines it)
//! and dequantized row range by row range when a matmul needs it.

pub mod format;
pub mod nf4;
pub mod weight;

pub use format::FormatFacts;
pub use pruneforge_api::spec::BaseQuantization;
pub use weight::QuantizedWeight;
