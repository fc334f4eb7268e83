//! Dataset references: where a data set lives and how its records are laid out.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::builtin::BuiltinDataset;

/// CEL rule: `builtin:` URIs must name a bundled data set.
pub(crate) fn builtin_uri_rule() -> String {
    format!(
        "!self.uri.startsWith('builtin:') || self.uri in {}",
        BuiltinDataset::cel_uri_list()
    )
}

pub(crate) fn builtin_uri_message(field: &str) -> kube::core::Message {
    let names: Vec<String> = BuiltinDataset::ALL.iter().map(|d| d.uri()).collect();
    let field = if field.is_empty() {
        "uri".to_string()
    } else {
        format!("{field}.uri")
    };
    kube::core::Message::Message(format!(
        "{field}: unknown builtin dataset; use one of {}",
        names.join(", ")
    ))
}

/// Record layout of a data set file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
// Bounds the string for the apiserver's CEL cost estimate.
#[schemars(extend("maxLength" = 16))]
pub enum DatasetFormat {
    /// Stanford Alpaca: a JSON array (or JSONL) of `{instruction, input, output}` records.
    Alpaca,
    /// GSM8K: JSONL of `{question, answer}`; the gold answer follows `#### `.
    Gsm8k,
    /// Any JSONL file; `fields` names the instruction, input and output keys.
    Jsonl,
}

impl BuiltinDataset {
    /// The record layout of the bundled data sets that hold instruction/answer records (SFT
    /// and prompt sources); `None` for benchmark files, which only their task reads.
    pub fn sft_format(self) -> Option<DatasetFormat> {
        match self {
            BuiltinDataset::Alpaca => Some(DatasetFormat::Alpaca),
            BuiltinDataset::Gsm8kTrain | BuiltinDataset::Gsm8kTest => Some(DatasetFormat::Gsm8k),
            _ => None,
        }
    }
}

/// Which keys of a `jsonl` record hold the instruction, the optional input and the answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldMapping {
    /// Key of the instruction (the prompt).
    #[serde(default = "default_instruction_field")]
    #[schemars(length(min = 1, max = 128))]
    pub instruction: String,
    /// Key of the optional extra input appended to the instruction; unset means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub input: Option<String>,
    /// Key of the reference answer.
    #[serde(default = "default_output_field")]
    #[schemars(length(min = 1, max = 128))]
    pub output: String,
}

fn default_instruction_field() -> String {
    "instruction".into()
}

fn default_output_field() -> String {
    "output".into()
}

impl Default for FieldMapping {
    fn default() -> Self {
        FieldMapping {
            instruction: default_instruction_field(),
            input: None,
            output: default_output_field(),
        }
    }
}

/// A data set: `builtin:<name>`, a path, or a `file://`, `s3://`, `gs://` or `az://` URI, read as
/// `format`, optionally restricted to `limit` records starting at record `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(crate::uri::cel_scheme_rule("self.uri")).message(format!("uri: only the schemes {} are supported (or builtin:<name>, or a plain path)", crate::uri::schemes_prose().replace(" or ", " and ")).as_str()).field_path(".uri"),
    validation = Rule::new(builtin_uri_rule()).message(builtin_uri_message("")).field_path(".uri"),
    validation = Rule::new("!has(self.fields) || self.format == 'jsonl'").message("fields: a field mapping is only used with format jsonl").field_path(".fields")
)]
pub struct DatasetRef {
    /// Location of the data: `builtin:<name>` (a data set shipped with pruneforge, resolved by the
    /// runner; the names are listed in the validation rule), a path relative to the job file or
    /// working directory (local runs), or a `file://`, `s3://`, `gs://` or `az://` URI.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
    /// Record layout: alpaca, gsm8k or jsonl.
    pub format: DatasetFormat,
    /// Key mapping for `jsonl` records (defaults: instruction, output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldMapping>,
    /// Use at most this many records (after `offset`); unset means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub limit: Option<u32>,
    /// Skip this many records first.
    #[serde(default)]
    #[schemars(range(max = 10000000))]
    pub offset: u32,
}

impl DatasetRef {
    /// A reference to a bundled data set.
    pub fn builtin(dataset: BuiltinDataset, format: DatasetFormat) -> Self {
        DatasetRef {
            uri: dataset.uri(),
            format,
            fields: None,
            limit: None,
            offset: 0,
        }
    }

    /// Same reference restricted to `limit` records.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The bundled data set this reference names, if it is a `builtin:` URI.
    pub fn builtin_dataset(
        &self,
    ) -> Option<Result<BuiltinDataset, crate::builtin::UnknownBuiltin>> {
        BuiltinDataset::from_uri(&self.uri)
    }
}
