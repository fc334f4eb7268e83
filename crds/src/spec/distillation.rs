//! Self-data distillation: the unpruned model rewrites the answers of an SFT set.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{
    builtin_uri_message, builtin_uri_rule, DatasetFormat, DatasetRef, FieldMapping,
};

/// What kind of answers a data set holds; decides the answer check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Free-form answers: only the banned phrase and prefix checks apply.
    #[default]
    General,
    /// Math answers: with `answerCheck.mathLastNumber`, a rewrite is kept only if its last number
    /// equals the reference answer's.
    Math,
}

/// One SFT data set: the original answers train the `sft` baseline, their rewrites by the
/// unpruned model train `self-distill`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::uri::cel_scheme_rule("self.uri")).message(format!("spec.distillation.datasets[].uri: only the schemes {} are supported (or builtin:<name>, or a plain path)", crate::uri::schemes_prose().replace(" or ", " and ")).as_str()).field_path(".uri"),
    validation = Rule::new(builtin_uri_rule()).message(builtin_uri_message("spec.distillation.datasets[]")).field_path(".uri"),
    validation = Rule::new("!has(self.fields) || self.format == 'jsonl'").message("spec.distillation.datasets[].fields: a field mapping is only used with format jsonl").field_path(".fields")
)]
pub struct DistillDataset {
    /// Short name, unique within the job; names the distill stage (`distill-<name>`).
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Location: `builtin:<name>`, a path, or a file://, s3://, gs:// or az:// URI.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
    /// Record layout: alpaca, gsm8k or jsonl.
    pub format: DatasetFormat,
    /// Key mapping for `jsonl` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldMapping>,
    /// general or math (math enables the last-number answer check).
    #[serde(default)]
    pub kind: DataKind,
    /// Use at most this many records (after `offset`); unset means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub limit: Option<u32>,
    /// Skip this many records first.
    #[serde(default)]
    #[schemars(range(max = 10000000))]
    pub offset: u32,
}

impl DistillDataset {
    /// The data location and slice, without the name and kind.
    pub fn dataset_ref(&self) -> DatasetRef {
        DatasetRef {
            uri: self.uri.clone(),
            format: self.format,
            fields: self.fields.clone(),
            limit: self.limit,
            offset: self.offset,
        }
    }
}

/// Prompt the unpruned model sees when it rewrites an answer. Every field is optional and
/// overrides the default of the data set's kind: the two templates of the SDFT paper
/// (Yang et al. 2024, arXiv 2402.13669). `general`: system "Below are an instruction that
/// describes a task along with a reference answer. Using the reference answer as a guide, write
/// your own response.", user "### Instruction:\n{instruction}\n\n### Reference Answer:\n{response}\n\n### Response:\n".
/// `math`: system "You are an expert in math. Below are a math question and its reference
/// answer. Refer to the reference answer and write a response that appropriately answers the
/// question.", user "{instruction}\n\n{response}", and the answer starts with "Great! Let's
/// think step by step.".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.user) || (self.user.contains('{instruction}') && self.user.contains('{response}'))").message("spec.distillation.template.user must contain the placeholders {instruction} and {response}").field_path(".user")
)]
pub struct PromptTemplate {
    /// System message of the chat prompt (empty string: none). Default: by data set kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub system: Option<String>,
    /// User message; `{instruction}` is replaced by the instruction (plus input) and `{response}`
    /// by the reference answer. Default: by data set kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub user: Option<String>,
    /// Text the assistant turn starts with; it is not part of the rewritten answer. Default:
    /// "Great! Let's think step by step." for math, none for general.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub response_prefix: Option<String>,
}

/// Which rewrites are kept; a rejected rewrite falls back to the original answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnswerCheck {
    /// Reject a rewrite that contains any of these phrases (case-insensitive).
    #[serde(default = "default_banned_phrases")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub banned_phrases: Vec<String>,
    /// Reject a rewrite that starts with any of these prefixes (case-insensitive, after trimming).
    #[serde(default = "default_banned_prefixes")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub banned_prefixes: Vec<String>,
    /// For `math` data sets: keep a rewrite only if its last number equals the reference's.
    #[serde(default = "default_true")]
    pub math_last_number: bool,
}

fn default_banned_phrases() -> Vec<String> {
    [
        "reference answer",
        "your response",
        "my response",
        "your own response",
        "now it's your turn",
    ]
    .map(String::from)
    .to_vec()
}

fn default_banned_prefixes() -> Vec<String> {
    vec!["Your turn".into()]
}

fn default_true() -> bool {
    true
}

impl Default for AnswerCheck {
    fn default() -> Self {
        AnswerCheck {
            banned_phrases: default_banned_phrases(),
            banned_prefixes: default_banned_prefixes(),
            math_last_number: true,
        }
    }
}

/// Sampling settings of the rewrite generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationSpec {
    /// Maximum new tokens per rewrite.
    #[serde(default = "default_max_new_tokens")]
    #[schemars(range(min = 1, max = 8192))]
    pub max_new_tokens: u32,
    /// Sampling temperature; 0 is greedy decoding.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 2.0))]
    pub temperature: f64,
    /// Nucleus sampling mass (used when temperature > 0).
    #[serde(default = "default_top_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub top_p: f64,
    /// Random seed; each item's sampler is seeded from it and the item index, so results do not
    /// depend on batching or sharding.
    #[serde(default)]
    pub seed: u32,
    /// Prompts generated together.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: u32,
}

fn default_max_new_tokens() -> u32 {
    256
}

fn default_top_p() -> f64 {
    1.0
}

fn default_batch_size() -> u32 {
    8
}

impl Default for GenerationSpec {
    fn default() -> Self {
        GenerationSpec {
            max_new_tokens: default_max_new_tokens(),
            temperature: 0.0,
            top_p: default_top_p(),
            seed: 0,
            batch_size: default_batch_size(),
        }
    }
}

/// Self-data distillation settings; `datasets` is also the training set of `sft`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.generation.topP > 0.0").message("spec.distillation.generation.topP must be greater than 0").field_path(".generation.topP")
)]
pub struct DistillationSpec {
    /// SFT data sets (at most 8, unique names). The unpruned model rewrites their answers for
    /// `self-distill`; `sft` trains on the original answers.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub datasets: Vec<DistillDataset>,
    /// Rewrite prompt.
    #[serde(default)]
    pub template: PromptTemplate,
    /// Filters for rewrites.
    #[serde(default)]
    pub answer_check: AnswerCheck,
    /// Sampling settings for rewrites.
    #[serde(default)]
    pub generation: GenerationSpec,
    /// Pods per distill stage (an Indexed Job); shard i rewrites the records with index % shards
    /// == i.
    #[serde(default = "default_shards")]
    #[schemars(range(min = 1, max = 64))]
    pub shards: u32,
}

fn default_shards() -> u32 {
    1
}

impl Default for DistillationSpec {
    fn default() -> Self {
        DistillationSpec {
            datasets: Vec::new(),
            template: PromptTemplate::default(),
            answer_check: AnswerCheck::default(),
            generation: GenerationSpec::default(),
            shards: default_shards(),
        }
    }
}
