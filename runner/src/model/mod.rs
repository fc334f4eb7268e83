//! Our Llama-family model on candle: config, weights (safetensors, GGUF), fused CPU kernels,
//! KV cache, LoRA hooks. Loading a model with its tokenizer is [`crate::loader`].

pub mod compare;
pub mod config;
pub mod error;
pub mod gguf;
pub mod kernels;
pub mod kv_buffer;
pub mod kv_cache;
pub mod layer;
pub mod linear;
pub mod llama;
pub mod ops;
pub mod quant;
pub mod random;
pub mod rope;
pub mod safetensors_io;
pub mod train_kernels;

pub use config::ModelConfig;
pub use error::ModelError;
pub use kv_cache::KvCache;
pub use layer::Site;
pub use llama::{ForwardOptions, ForwardOutput, Llama};
