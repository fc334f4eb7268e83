//! Opening a model from what a user points at: an HF directory (config, safetensors,
//! tokenizer), a `.gguf` file (imported once into an HF directory in the cache), or the
//! embedded default. Above both [`crate::model`] and [`crate::tokenizer`]: a loaded model is
//! the network and its tokenizer together.

pub mod embedded;
pub mod gguf_import;
pub mod hf_dir;
pub mod open;

pub use hf_dir::{load_hf_dir, save_hf_dir, HfModel, MAX_SHARD_BYTES};
pub use open::{open_model, open_model_on, open_model_with_base, resolve_hf_dir};
