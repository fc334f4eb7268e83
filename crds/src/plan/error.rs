//! Why a spec cannot be planned.

use crate::spec::{MergeMethod, RecoveryMethod};

/// A spec the planner rejects. Each message names the field to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `pruning.blockSizes` and `pruning.widths` are both empty.
    #[error("spec.pruning.blockSizes is empty and there are no spec.pruning.widths; list at least one block size, e.g. [6], or a width variant")]
    NoBlockSizes,
    /// A width variant the planner cannot use.
    #[error("spec.pruning.widths[{index}]: {reason}")]
    InvalidWidthVariant {
        /// Position in `pruning.widths`.
        index: usize,
        /// What to fix.
        reason: String,
    },
    /// A block size of 0.
    #[error(
        "spec.pruning.blockSizes: block size 0 is not allowed; every block size must be at least 1"
    )]
    ZeroBlockSize,
    /// A block size listed twice.
    #[error("spec.pruning.blockSizes lists {0} twice")]
    DuplicateBlockSize(u32),
    /// `recovery.methods` is empty.
    #[error("spec.recovery.methods is empty; list at least one method (e.g. none)")]
    NoRecoveryMethods,
    /// A recovery method listed twice.
    #[error("spec.recovery.methods lists {0} twice")]
    DuplicateRecoveryMethod(RecoveryMethod),
    /// A training method without data sets.
    #[error("spec.distillation.datasets is empty, but spec.recovery.methods has {0}, which trains on those data sets; add at least one data set")]
    MissingDatasets(RecoveryMethod),
    /// A data set name that is not a lowercase DNS label of at most 32 characters.
    #[error("spec.distillation.datasets: name {0:?} must be 1-32 lowercase letters, digits or '-', starting and ending with a letter or digit")]
    InvalidDatasetName(String),
    /// Two data sets with the same name.
    #[error("spec.distillation.datasets: name {0:?} is used twice")]
    DuplicateDatasetName(String),
    /// `distillation.shards` is 0.
    #[error("spec.distillation.shards must be at least 1")]
    ZeroShards,
    /// Merge enabled with fewer than two models.
    #[error("spec.merge.models: merging needs at least 2 models, got {0}")]
    TooFewMergeModels(usize),
    /// slerp or nuslerp with other than two models.
    #[error("spec.merge.models: {method} merges exactly 2 models, got {got}; use linear, task-arithmetic or ties for more")]
    MergeNeedsTwoModels {
        /// slerp or nuslerp.
        method: MergeMethod,
        /// The number of models listed.
        got: usize,
    },
    /// A merged model whose method is not run or has no fine-tuned model.
    #[error("spec.merge.models: {0} is not a fine-tuned model of this job; list it in spec.recovery.methods (none cannot be merged)")]
    MergeModelNotTrained(RecoveryMethod),
    /// `merge.across: datasets` with other than one method, or fewer than two data sets.
    #[error("spec.merge.across: datasets merges the per-data-set fine-tunes of ONE method: spec.merge.models names {methods} and spec.distillation.datasets has {datasets} (needs 1 and at least 2)")]
    MergeAcrossDatasets {
        /// Methods listed in `merge.models`.
        methods: usize,
        /// Distillation data sets.
        datasets: usize,
    },
    /// A model merged twice.
    #[error("spec.merge.models lists {0} twice")]
    DuplicateMergeModel(RecoveryMethod),
    /// An interpolation factor outside [0, 1].
    #[error("spec.merge.{field} must be between 0 and 1, got {value}")]
    MergeFactorOutOfRange {
        /// `t` or `tGradient`.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A merge setting outside its range.
    #[error("spec.merge.{field} must be {range}, got {value}")]
    MergeSettingOutOfRange {
        /// `weights`, `density` or `lambda`.
        field: &'static str,
        /// The allowed range, in words.
        range: &'static str,
        /// The offending value.
        value: String,
    },
    /// A merge setting the chosen method does not use.
    #[error("spec.merge.{field} is not used by method {method}; only {used_by} use it: remove {field} or change spec.merge.method")]
    MergeSettingNotUsed {
        /// `weights`, `density`, `lambda` or `normalize`.
        field: &'static str,
        /// The method chosen.
        method: MergeMethod,
        /// The methods that use the setting.
        used_by: &'static str,
    },
    /// A number of weights other than the number of models.
    #[error("spec.merge.weights has {weights} values for {models} models; give one weight per model of spec.merge.models, in the same order")]
    MergeWeightsCount {
        /// Weights given.
        weights: usize,
        /// Models merged.
        models: usize,
    },
    /// Weights summing to 0 where the merge divides by their sum.
    #[error("spec.merge.weights sum to 0, but {method} with normalize divides by their sum; change the weights or set spec.merge.normalize: false")]
    MergeWeightsSumToZero {
        /// linear or task-arithmetic.
        method: MergeMethod,
    },
    /// A quantized LoRA base on a GPU (QLoRA runs on the CPU in this version).
    #[error("spec.recovery.lora.baseQuantization ({0}) runs on the CPU in this version, but spec.compute.device is cuda; set spec.compute.device: cpu for QLoRA, or remove baseQuantization to train over the float base on the GPU")]
    QuantizedBaseOnGpu(crate::spec::BaseQuantization),
    /// Control seeds without the `sft` arm they control.
    #[error("spec.recovery.controlSeeds: the control repeats the sft arm with another seed; add sft to spec.recovery.methods")]
    ControlWithoutSft,
    /// A control seed equal to the arm's own seed.
    #[error("spec.recovery.controlSeeds: seed {0} is spec.recovery.optimizer.seed, the sft arm's own; pick another seed")]
    ControlSeedIsTheArmSeed(u32),
    /// Teacher correction that nothing would use.
    #[error("spec.recovery.teacherCorrection is set, but no method in spec.recovery.methods uses a teacher (logit-kd) or distilled data (self-distill); add one or remove teacherCorrection")]
    TeacherCorrectionUnused,

    #[error("spec.recovery.preference.after: {0} is not a fine-tuned model of this job; list it in spec.recovery.methods (none has no fine-tune to continue)")]
    PreferenceAfterUntrained(crate::spec::RecoveryMethod),

    #[error("spec.recovery.preference: {0}")]
    InvalidPreference(String),
    /// The merged draft without merging.
    #[error("spec.speculative.draft is merged, but spec.merge.enabled is false")]
    MergedDraftWithoutMerge,
    /// A task listed twice.
    #[error("spec.evaluation.tasks lists {0} twice")]
    DuplicateEvalTask(String),
    /// Storage URI with an unsupported scheme.
    #[error("spec.storage.uri {0:?} must start with file://, s3://, gs:// or az://")]
    InvalidStorageUri(String),
}
