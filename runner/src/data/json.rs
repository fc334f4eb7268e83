//! Reading text, JSON and JSONL files, and typed access to the fields of a JSON record with
//! errors that name the file, the place and the field.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::{DataError, Location, Result};

/// Reads a UTF-8 text file; a leading byte-order mark is dropped. Invalid UTF-8 is reported
/// with the line it is on.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::read(path, e))?;
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.drain(..'\u{feff}'.len_utf8());
            }
            Ok(text)
        }
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(DataError::invalid(
                path,
                Location::Line(line),
                format!("not valid UTF-8 (byte offset {valid})"),
            ))
        }
    }
}

/// Parses a whole file as one JSON document.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = read_text(path)?;
    serde_json::from_str(&text).map_err(|e| DataError::json(path, 0, &e))
}

/// One non-blank line of a JSONL file.
#[derive(Debug, Clone)]
pub struct JsonlLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub value: Value,
}

/// Parses a JSONL file: one JSON value per line; blank lines are skipped.
pub fn read_jsonl(path: &Path) -> Result<Vec<JsonlLine>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(raw).map_err(|e| DataError::json(path, i, &e))?;
        out.push(JsonlLine { line: i + 1, value });
    }
    Ok(out)
}

/// A JSON object together with where it came from, for field access with good errors.
pub struct Record<'a> {
    path: &'a Path,
    at: Location,
    object: &'a Map<String, Value>,
}

impl<'a> Record<'a> {
    /// Fails unless `value` is a JSON object.
    pub fn new(path: &'a Path, at: Location, value: &'a Value) -> Result<Self> {
        match value {
            Value::Object(object) => Ok(Record { path, at, object }),
            other => Err(DataError::invalid(
                path,
                at,
                format!("expected a JSON object, found {}", kind(other)),
            )),
        }
    }

    pub fn object(&self) -> &'a Map<String, Value> {
        self.object
    }

    pub fn at(&self) -> Location {
        self.at
    }

    /// An error about this record.
    pub fn error(&self, message: impl Into<String>) -> DataError {
        DataError::invalid(self.path, self.at, message)
    }

    /// A required field of any type.
    pub fn value(&self, key: &str) -> Result<&'a Value> {
        self.object
            .get(key)
            .ok_or_else(|| self.error(format!("missing field `{key}`")))
    }

    /// A required string field.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.error(format!(
                "field `{key}` must be a string, found {}",
                kind(other)
            ))),
        }
    }

    /// An optional string field (absent or null gives `None`).
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(format!(
                "field `{key}` must be a string, found {}",
                kind(other)
            ))),
        }
    }

    /// A required non-negative integer field.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let value = self.value(key)?;
        value
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                self.error(format!(
                    "field `{key}` must be a non-negative integer, found {value}"
                ))
            })
    }

    /// A required array field.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>> {
        match self.value(key)? {
            Value::Array(items) => Ok(items),
            other => Err(self.error(format!(
                "field `{key}` must be an array, found {}",
                kind(other)
            ))),
        }
    }

    /// A required object field, as a record at the same place.
    pub fn record(&self, key: &str) -> Result<Record<'a>> {
        let value = self.value(key)?;
        Record::new(self.path, self.at, value).map_err(|_| {
            self.error(format!(
                "field `{key}` must be an object, found {}",
                kind(value)
            ))
        })
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&'a str>> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    self.error(format!("`{key}[{i}]` must be a string, found {}", kind(v)))
                })
            })
            .collect()
    }
}

/// The JSON type of a value, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
