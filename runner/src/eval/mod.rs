//! Evaluation with lm-evaluation-harness semantics: log-likelihood scoring with shared-prefix
//! KV caching ([`scorer`], [`prefix_cache`]), multiple-choice tasks ([`multiple_choice`]),
//! generation tasks ([`generation`]), perplexity ([`perplexity`]), KL to the base model ([`kl`]) and the `eval.json` report
//! ([`report`]). The stage that ties them together is [`crate::stages::eval`].

pub mod chance;
pub mod generation;
pub mod items;
pub mod kl;
pub mod multiple_choice;
pub mod normalized_recovery;
pub mod perplexity;
pub mod prefix_cache;
pub mod report;
pub mod scorer;

pub use report::{Recovery, TaskRecovery, TaskScore};
pub use scorer::{encode_pair, score, EncodedRequest, LlScore, ScoreStats, ScorerOptions};
