//! Supervised fine-tuning sets: Alpaca JSON arrays, GSM8K JSONL and generic JSONL with a field
//! mapping, all read into [`SftRecord`]s and written back in the schema they came in (the
//! distill stage outputs its rewritten set in the input's schema).

use std::path::Path;

use serde_json::{Map, Value};

use super::error::{DataError, Location, Result};
use super::json::{read_json, read_jsonl, read_text, Record};
use super::pystr::py_strip;
use super::selection::Selection;

/// One instruction/answer pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SftRecord {
    /// The id field when the schema has one, else the 0-based position in the file.
    pub id: String,
    pub instruction: String,
    /// Extra input (Alpaca `input`); empty when there is none.
    pub input: String,
    pub output: String,
    /// Reference final answer where the schema defines one (GSM8K: the number after `#### `,
    /// commas stripped).
    pub gold: Option<String>,
    /// The record as read, so that writing keeps unmapped fields and the key order. Empty for
    /// records built in code.
    pub original: Map<String, Value>,
}

/// Field names of a generic JSONL SFT file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMap {
    pub instruction: String,
    /// `None`: the schema has no input field.
    pub input: Option<String>,
    pub output: String,
    pub id: Option<String>,
    pub gold: Option<String>,
}

impl FieldMap {
    /// `instruction` / `input` / `output`.
    pub fn alpaca() -> Self {
        FieldMap {
            instruction: "instruction".into(),
            input: Some("input".into()),
            output: "output".into(),
            id: None,
            gold: None,
        }
    }
}

/// The on-disk schema of an SFT set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SftSchema {
    /// A JSON array of `{instruction, input, output}` objects.
    Alpaca,
    /// JSONL of `{question, answer}`; the answer ends with `#### <number>`.
    Gsm8k,
    /// JSONL with the given field names.
    Jsonl(FieldMap),
}

impl SftSchema {
    /// Guesses the schema: a file starting with `[` is Alpaca; a JSONL file whose first record
    /// has `question` and `answer` is GSM8K; one with `instruction` and `output` is JSONL with
    /// the Alpaca field names.
    pub fn detect(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            return Ok(SftSchema::Alpaca);
        }
        let (index, first) = text
            .lines()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty())
            .ok_or_else(|| DataError::invalid(path, Location::File, "the file is empty"))?;
        let value: Value =
            serde_json::from_str(first).map_err(|e| DataError::json(path, index, &e))?;
        let record = Record::new(path, Location::Line(index + 1), &value)?;
        let has = |k: &str| record.object().contains_key(k);
        if has("question") && has("answer") {
            Ok(SftSchema::Gsm8k)
        } else if has("instruction") && has("output") {
            let mut map = FieldMap::alpaca();
            if !has("input") {
                map.input = None;
            }
            Ok(SftSchema::Jsonl(map))
        } else {
            Err(record.error(
                "cannot tell the SFT schema: expected `question`/`answer` (GSM8K) or \
                 `instruction`/`output` (Alpaca-style) fields; give a field mapping",
            ))
        }
    }
}

/// An SFT set and the schema it is stored in.
#[derive(Debug, Clone, PartialEq)]
pub struct SftDataset {
    pub schema: SftSchema,
    pub records: Vec<SftRecord>,
}

impl SftDataset {
    /// Reads `path` in the given schema.
    pub fn load(path: &Path, schema: SftSchema) -> Result<Self> {
        let records = match &schema {
            SftSchema::Alpaca => load_alpaca(path)?,
            SftSchema::Gsm8k => load_gsm8k(path)?,
            SftSchema::Jsonl(map) => load_jsonl(path, map)?,
        };
        Ok(SftDataset { schema, records })
    }

    /// Reads `path` in the schema [`SftSchema::detect`] finds.
    pub fn load_detected(path: &Path) -> Result<Self> {
        Self::load(path, SftSchema::detect(path)?)
    }

    /// Keeps the selected records.
    pub fn select(mut self, selection: Selection) -> Self {
        self.records = selection.apply(self.records);
        self
    }

    /// The records as JSON objects of this dataset's schema.
    pub fn to_values(&self) -> Vec<Value> {
        self.records
            .iter()
            .map(|r| Value::Object(to_object(r, &self.schema)))
            .collect()
    }

    /// The file contents in this dataset's schema: a JSON array with one record per line for
    /// Alpaca, one JSON object per line otherwise.
    pub fn to_file_string(&self) -> String {
        let lines: Vec<String> = self.to_values().iter().map(Value::to_string).collect();
        match self.schema {
            SftSchema::Alpaca if lines.is_empty() => "[]\n".to_string(),
            SftSchema::Alpaca => format!("[\n{}\n]\n", lines.join(",\n")),
            SftSchema::Gsm8k | SftSchema::Jsonl(_) => {
                lines.iter().map(|l| format!("{l}\n")).collect()
            }
        }
    }

    /// Writes the set to `path` in its schema (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::util::fs::write_atomic(path, self.to_file_string().as_bytes()).map_err(|source| {
            DataError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// GSM8K's final answer: the text after the last `#### `, trimmed, commas removed.
pub fn gsm8k_gold(answer: &str) -> Option<String> {
    let (_, tail) = answer.rsplit_once("#### ")?;
    Some(py_strip(tail).replace(',', ""))
}

/// Reads an Alpaca JSON array (`instruction`, optional `input`, `output`).
pub fn load_alpaca(path: &Path) -> Result<Vec<SftRecord>> {
    let value = read_json(path)?;
    let items = value.as_array().ok_or_else(|| {
        DataError::invalid(
            path,
            Location::File,
            "expected a JSON array of {instruction, input, output} objects",
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let record = Record::new(path, Location::Record(i), v)?;
            from_record(&record, i, &FieldMap::alpaca())
        })
        .collect()
}

/// Reads GSM8K JSONL (`question`, `answer` with a final `#### <number>` line).
pub fn load_gsm8k(path: &Path) -> Result<Vec<SftRecord>> {
    read_jsonl(path)?
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            let question = record.str("question")?;
            let answer = record.str("answer")?;
            let gold = gsm8k_gold(answer)
                .ok_or_else(|| record.error("field `answer` has no final `#### <number>` line"))?;
            Ok(SftRecord {
                id: i.to_string(),
                instruction: question.to_string(),
                input: String::new(),
                output: answer.to_string(),
                gold: Some(gold),
                original: record.object().clone(),
            })
        })
        .collect()
}

/// Reads JSONL with the given field names.
pub fn load_jsonl(path: &Path, map: &FieldMap) -> Result<Vec<SftRecord>> {
    read_jsonl(path)?
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let record = Record::new(path, Location::Line(line.line), &line.value)?;
            from_record(&record, i, map)
        })
        .collect()
}

fn from_record(record: &Record<'_>, index: usize, map: &FieldMap) -> Result<SftRecord> {
    let input = match &map.input {
        Some(key) => record.opt_str(key)?.unwrap_or_default().to_string(),
        None => String::new(),
    };
    let id = match &map.id {
        Some(key) => match record.value(key)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(record.error(format!("field `{key}` must be a string or a number"))),
        },
        None => index.to_string(),
    };
    let gold = match &map.gold {
        Some(key) => match record.value(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => return Err(record.error(format!("field `{key}` must be a string or a number"))),
        },
        None => None,
    };
    Ok(SftRecord {
        id,
        instruction: record.str(&map.instruction)?.to_string(),
        input,
        output: record.str(&map.output)?.to_string(),
        gold,
        original: record.object().clone(),
    })
}

/// A record as a JSON object of `schema`. Fields of the original record that the schema does
/// not map are kept, in their order. When the schema has no input field, a non-empty input is
/// appended to the instruction after a blank line so that nothing is lost.
fn to_object(record: &SftRecord, schema: &SftSchema) -> Map<String, Value> {
    let mut object = record.original.clone();
    let joined = || {
        if record.input.is_empty() {
            record.instruction.clone()
        } else {
            format!("{}\n\n{}", record.instruction, record.input)
        }
    };
    match schema {
        SftSchema::Gsm8k => {
            object.insert("question".into(), Value::String(joined()));
            object.insert("answer".into(), Value::String(record.output.clone()));
        }
        SftSchema::Alpaca => {
            object.insert(
                "instruction".into(),
                Value::String(record.instruction.clone()),
            );
            object.insert("input".into(), Value::String(record.input.clone()));
            object.insert("output".into(), Value::String(record.output.clone()));
        }
        SftSchema::Jsonl(map) => {
            match &map.input {
                Some(key) => {
                    object.insert(
                        map.instruction.clone(),
                        Value::String(record.instruction.clone()),
                    );
                    if !record.input.is_empty() || object.contains_key(key) {
                        object.insert(key.clone(), Value::String(record.input.clone()));
                    }
                }
                None => {
                    object.insert(map.instruction.clone(), Value::String(joined()));
                }
            }
            object.insert(map.output.clone(), Value::String(record.output.clone()));
            if let (Some(key), Some(gold)) = (&map.gold, &record.gold) {
                if !matches!(object.get(key), Some(Value::Number(n)) if n.to_string() == *gold) {
                    object.insert(key.clone(), Value::String(gold.clone()));
                }
            }
            if let Some(key) = &map.id {
                if !matches!(object.get(key), Some(Value::Number(n)) if n.to_string() == record.id)
                {
                    object.insert(key.clone(), Value::String(record.id.clone()));
                }
            }
        }
    }
    object
}
