//! Benchmarks (lm-eval-harness semantics) and output drift.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{builtin_uri_message, builtin_uri_rule, DatasetFormat, DatasetRef};
use crate::builtin::BuiltinDataset;

/// A benchmark task.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EvalTaskName {
    /// ARC-Easy, acc_norm.
    ArcEasy,
    /// ARC-Challenge, acc_norm.
    ArcChallenge,
    /// HellaSwag, acc_norm.
    Hellaswag,
    /// PIQA, acc_norm.
    Piqa,
    /// Winogrande, acc (partial scoring).
    Winogrande,
    /// MMLU, acc (macro average over subjects).
    Mmlu,
    /// TruthfulQA mc2.
    #[serde(rename = "truthfulqa_mc2")]
    TruthfulqaMc2,
    /// GSM8K, exact match of the final number (generation).
    Gsm8k,
    /// Perplexity on held-out text (lower is better; not part of the average).
    Perplexity,
}

impl EvalTaskName {
    /// The task name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            EvalTaskName::ArcEasy => "arc_easy",
            EvalTaskName::ArcChallenge => "arc_challenge",
            EvalTaskName::Hellaswag => "hellaswag",
            EvalTaskName::Piqa => "piqa",
            EvalTaskName::Winogrande => "winogrande",
            EvalTaskName::Mmlu => "mmlu",
            EvalTaskName::TruthfulqaMc2 => "truthfulqa_mc2",
            EvalTaskName::Gsm8k => "gsm8k",
            EvalTaskName::Perplexity => "perplexity",
        }
    }

    /// The bundled data set the task reads when no `uri` is given.
    pub fn default_dataset(self) -> BuiltinDataset {
        match self {
            EvalTaskName::ArcEasy => BuiltinDataset::ArcEasy,
            EvalTaskName::ArcChallenge => BuiltinDataset::ArcChallenge,
            EvalTaskName::Hellaswag => BuiltinDataset::Hellaswag,
            EvalTaskName::Piqa => BuiltinDataset::Piqa,
            EvalTaskName::Winogrande => BuiltinDataset::Winogrande,
            EvalTaskName::Mmlu => BuiltinDataset::Mmlu,
            EvalTaskName::TruthfulqaMc2 => BuiltinDataset::TruthfulqaMc2,
            EvalTaskName::Gsm8k => BuiltinDataset::Gsm8kTest,
            EvalTaskName::Perplexity => BuiltinDataset::Alpaca,
        }
    }

    /// Whether a higher value is better (false for perplexity).
    pub fn higher_is_better(self) -> bool {
        self != EvalTaskName::Perplexity
    }
}

/// One benchmark run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(format!("!has(self.uri) || {}", crate::uri::cel_scheme_rule("self.uri"))).message(format!("spec.evaluation.tasks[].uri: only the schemes {} are supported (or builtin:<name>, or a plain path)", crate::uri::schemes_prose().replace(" or ", " and ")).as_str()).field_path(".uri"),
    validation = Rule::new(format!("!has(self.uri) || ({})", builtin_uri_rule())).message(builtin_uri_message("spec.evaluation.tasks[]")).field_path(".uri")
)]
pub struct EvalTask {
    /// arc_easy, arc_challenge, hellaswag, piqa, winogrande, mmlu, truthfulqa_mc2, gsm8k or
    /// perplexity.
    pub name: EvalTaskName,
    /// Few-shot examples per prompt (taken from the task's train/dev split). Unset: the task's
    /// standard setting, 5 for mmlu (from dev) and gsm8k (from train), 0 for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 25))]
    pub shots: Option<u32>,
    /// Score at most this many items; unset means the whole file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub limit: Option<u32>,
    /// Read the items from here instead of the task's bundled public slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub uri: Option<String>,
}

impl EvalTask {
    /// A zero-shot task on its bundled public slice.
    pub fn new(name: EvalTaskName) -> Self {
        EvalTask {
            name,
            shots: None,
            limit: None,
            uri: None,
        }
    }
}

/// Output drift (the forgetting measure of the Cerebras paper): for the same prompts, the
/// base model's and the variant's greedy responses are embedded (mean-pooled final hidden
/// state of the base model) and compared by cosine similarity; the mean is reported (higher =
/// closer to the base).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Measure drift for every pruned, fine-tuned and merged model.
    #[serde(default)]
    pub enabled: bool,
    /// Prompt source (instructions are used, answers ignored).
    #[serde(default = "default_drift_prompts")]
    pub prompts: DatasetRef,
    /// Number of prompts.
    #[serde(default = "default_drift_limit")]
    #[schemars(range(min = 1, max = 100000))]
    pub limit: u32,
    /// New tokens generated per prompt.
    #[serde(default = "default_drift_max_new_tokens")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_new_tokens: u32,
}

fn default_drift_prompts() -> DatasetRef {
    DatasetRef::builtin(BuiltinDataset::Alpaca, DatasetFormat::Alpaca)
}

fn default_drift_limit() -> u32 {
    32
}

fn default_drift_max_new_tokens() -> u32 {
    64
}

impl Default for DriftSpec {
    fn default() -> Self {
        DriftSpec {
            enabled: false,
            prompts: default_drift_prompts(),
            limit: default_drift_limit(),
            max_new_tokens: default_drift_max_new_tokens(),
        }
    }
}

/// Evaluation of the base model and every pruned, fine-tuned and merged model.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationSpec {
    /// Benchmarks (at most 16, unique names). Default: the seven zero-shot multiple-choice tasks
    /// on their public slices.
    #[serde(default = "default_tasks")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub tasks: Vec<EvalTask>,
    /// Seed for few-shot sampling and item order.
    #[serde(default = "default_seed")]
    pub seed: u32,
    /// Sequences scored together.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: u32,
    /// Output drift against the unpruned model.
    #[serde(default)]
    pub drift: DriftSpec,
}

fn default_tasks() -> Vec<EvalTask> {
    [
        EvalTaskName::ArcEasy,
        EvalTaskName::ArcChallenge,
        EvalTaskName::Hellaswag,
        EvalTaskName::Piqa,
        EvalTaskName::Winogrande,
        EvalTaskName::Mmlu,
        EvalTaskName::TruthfulqaMc2,
    ]
    .map(EvalTask::new)
    .to_vec()
}

fn default_seed() -> u32 {
    1234
}

fn default_batch_size() -> u32 {
    8
}

impl Default for EvaluationSpec {
    fn default() -> Self {
        EvaluationSpec {
            tasks: default_tasks(),
            seed: default_seed(),
            batch_size: default_batch_size(),
            drift: DriftSpec::default(),
        }
    }
}
