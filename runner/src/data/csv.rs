//! A small CSV reader that parses like Python's `csv.reader` with the default `excel` dialect
//! (delimiter `,`, quote `"`, doubled quotes, `strict=False`), on a file opened with
//! `newline=""`.
//!
//! It matters for MMLU: one row of `val/college_medicine_val.csv` has a stray `"` inside an
//! unquoted field; Python keeps it as a literal character and still finds 6 fields, and so does
//! this reader. Rules (those of CPython's `_csv.c` state machine):
//! - a quote opens a quoted field only as the first character of a field;
//! - inside a quoted field, `""` is a literal quote and line breaks are kept;
//! - after the closing quote, any character other than `,`, `"` or a line break is appended
//!   literally and the field continues unquoted;
//! - records end at `\n`, `\r\n` or a lone `\r`; an empty line is a record with no fields.
//!
//! One deliberate difference: a quoted field still open at the end of the file is an error
//! here (Python silently returns what it has read).

use std::path::Path;

use super::error::{DataError, Result};
use super::json::read_text;

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// 1-based line on which the record starts.
    pub line: usize,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StartRecord,
    StartField,
    InField,
    InQuotedField,
    QuoteInQuotedField,
}

/// Reads and parses a CSV file (UTF-8; a leading byte-order mark is dropped).
pub fn read_csv(path: &Path) -> Result<Vec<CsvRow>> {
    let text = read_text(path)?;
    parse_csv(&text).map_err(|(line, message)| DataError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    })
}

/// Parses CSV text. The error is `(line, message)`.
pub fn parse_csv(text: &str) -> std::result::Result<Vec<CsvRow>, (usize, String)> {
    let mut rows = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut state = State::StartRecord;
    let mut line = 1usize;
    let mut record_line = 1usize;
    let mut quote_line = 1usize;
    let mut chars = text.chars().peekable();

    while let Some(c) = chars.next() {
        let newline = c == '\n' || c == '\r';
        if state == State::StartRecord {
            if newline {
                eat_lf_after_cr(c, &mut chars);
                rows.push(CsvRow {
                    line,
                    fields: Vec::new(),
                });
                line += 1;
                continue;
            }
            record_line = line;
            state = State::StartField;
        }
        match state {
            State::StartRecord | State::StartField | State::InField | State::QuoteInQuotedField
                if newline =>
            {
                eat_lf_after_cr(c, &mut chars);
                fields.push(std::mem::take(&mut field));
                rows.push(CsvRow {
                    line: record_line,
                    fields: std::mem::take(&mut fields),
                });
                line += 1;
                state = State::StartRecord;
            }
            State::StartRecord | State::StartField | State::InField | State::QuoteInQuotedField
                if c == ',' =>
            {
                fields.push(std::mem::take(&mut field));
                state = State::StartField;
            }
            State::StartRecord | State::StartField if c == '"' => {
                quote_line = line;
                state = State::InQuotedField;
            }
            State::QuoteInQuotedField if c == '"' => {
                field.push('"');
                state = State::InQuotedField;
            }
            State::StartRecord | State::StartField | State::InField | State::QuoteInQuotedField => {
                field.push(c);
                state = State::InField;
            }
            State::InQuotedField if c == '"' => state = State::QuoteInQuotedField,
            State::InQuotedField => {
                field.push(c);
                if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
                    line += 1;
                }
            }
        }
    }
    match state {
        State::StartRecord => {}
        State::InQuotedField => {
            return Err((
                quote_line,
                "quoted field opened here is never closed (missing `\"`)".to_string(),
            ))
        }
        State::StartField | State::InField | State::QuoteInQuotedField => {
            fields.push(field);
            rows.push(CsvRow {
                line: record_line,
                fields,
            });
        }
    }
    Ok(rows)
}

/// `"\r\n"` is one line break: after a `\r`, a following `\n` is consumed.
fn eat_lf_after_cr(c: char, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    if c == '\r' && chars.peek() == Some(&'\n') {
        chars.next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Vec<Vec<String>> {
        parse_csv(text)
            .expect("valid csv")
            .into_iter()
            .map(|r| r.fields)
            .collect()
    }

    #[test]
    fn quoted_fields_and_newlines() {
        let rows = fields("\"a,b\",\"x\ny\",\"he said \"\"hi\"\"\"\r\nplain,,\n");
        assert_eq!(
            rows,
            vec![vec!["a,b", "x\ny", "he said \"hi\""], vec!["plain", "", ""]]
        );
    }

    #[test]
    fn stray_quote_in_unquoted_field_is_literal() {
        assert_eq!(fields("ab\"c,d\n"), vec![vec!["ab\"c", "d"]]);
        // After a closing quote, other characters continue the field unquoted.
        assert_eq!(fields("\"ab\"c,d"), vec![vec!["abc", "d"]]);
    }

    #[test]
    fn empty_lines_and_lone_cr() {
        assert_eq!(
            fields("a\n\nb\rc"),
            vec![
                vec!["a".to_string()],
                vec![],
                vec!["b".to_string()],
                vec!["c".to_string()]
            ]
        );
    }

    #[test]
    fn line_numbers_count_newlines_inside_quotes() {
        let rows = parse_csv("\"x\ny\",1\nz,2\n").expect("valid");
        assert_eq!(rows[1].line, 3);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert_eq!(parse_csv("a,b\n\"open,c\n").unwrap_err().0, 2);
    }
}
