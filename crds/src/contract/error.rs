//! Contract errors.

/// A request or result that cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The stage id is not in the plan.
    #[error("stage {0:?} is not in the plan")]
    UnknownStage(String),
    /// A shard index outside the stage's shard count.
    #[error("stage {stage}: shard index {index} is out of range; the stage has {count} shard(s)")]
    ShardOutOfRange {
        /// Stage id.
        stage: String,
        /// Requested index.
        index: u32,
        /// Shard count.
        count: u32,
    },
    /// The request names a contract version this build does not speak.
    #[error("contract version {found} is not supported (this build speaks version {expected})")]
    Version {
        /// Version in the document.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
    /// The document is not valid JSON of the expected shape.
    #[error("invalid {what} JSON: {source}")]
    Json {
        /// `stage request` or `stage result`.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}
