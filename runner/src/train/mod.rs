//! LoRA training on the model: adapters and their PEFT IO ([`lora`]), AdamW ([`optimizer`]),
//! the learning-rate schedule ([`schedule`]), data to batches ([`batching`]), the masked
//! cross-entropy and chunked logit-distillation loss ([`loss`]), one optimizer step
//! ([`trainer`]), resumable checkpoints ([`checkpoint`]), held-out NLL ([`eval`]), the loss
//! plot ([`plot`]) and the training dose: data seen and `‖ΔW‖ / ‖W‖` ([`dose`]). The
//! `finetune` stage ([`crate::stages::finetune`]) drives them.

pub mod batching;
pub mod checkpoint;
pub mod dose;
pub mod error;
pub mod eval;
pub mod hidden;
pub mod lora;
pub mod loss;
pub mod optimizer;
pub mod plot;
pub mod preference;
pub mod schedule;
pub mod tensor_io;
pub mod trainer;

pub use error::{Result, TrainError};
pub use hidden::HiddenKd;
pub use lora::{LoraParams, LoraSet};
pub use loss::KdParams;
pub use optimizer::{AdamW, OptimizerParams};
