//! Python `str` whitespace semantics (`str.strip()`, `str.rstrip()`), which the reference
//! scripts and lm-evaluation-harness use to build prompts.
//!
//! Python's `str.isspace()` is true for every Unicode `White_Space` character and also for the
//! ASCII information separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.

/// Python's `str.isspace()` for one character.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `s.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_like_python() {
        assert_eq!(py_strip("\u{1f} a b\u{a0}\n"), "a b");
        assert_eq!(py_rstrip("  a \t\r\n"), "  a");
        assert_eq!(py_strip("\u{200b}x"), "\u{200b}x"); // zero-width space is not whitespace
    }
}
