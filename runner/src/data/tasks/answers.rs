//! `answer_nll` task: held-out instruction/answer records (any SFT layout: Alpaca, GSM8K or
//! JSONL with the default fields), each scored as fine-tuning scores it — the answer's tokens
//! given the chat-templated instruction. `idx` is the record's position in the file.

use pruneforge_api::spec::EvalTaskName;

use super::fewshot::require_zero_shot;
use super::Result;
use super::{TaskConfig, TaskFiles};
use crate::data::sft::{SftDataset, SftRecord};

/// One held-out record.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerDoc {
    pub idx: usize,
    pub record: SftRecord,
}

pub fn build(files: &TaskFiles, config: &TaskConfig) -> Result<Vec<AnswerDoc>> {
    require_zero_shot(
        EvalTaskName::AnswerNll.as_str(),
        config.num_fewshot,
        "answer_nll scores answers given their own instruction only",
    )?;
    let records = SftDataset::load_detected(&files.docs)?.records;
    Ok(config
        .selection
        .apply(records.into_iter().enumerate().collect())
        .into_iter()
        .map(|(idx, record)| AnswerDoc { idx, record })
        .collect())
}
