//! Small shared helpers.

pub mod fs;
