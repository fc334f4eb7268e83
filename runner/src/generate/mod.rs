//! Text generation: batched greedy/sampled decoding with a KV cache, continuous refilling of
//! finished rows, stop strings and end-of-sequence tokens.

pub mod engine;
pub mod probe;
pub mod sampler;
pub mod stop;

pub use crate::util::rng::SplitMix64;
pub use engine::{
    generate, generate_all, generate_with_streams, Completion, GenerateParams, GenerationStats,
};
pub use sampler::SamplingParams;
pub use stop::FinishReason;
