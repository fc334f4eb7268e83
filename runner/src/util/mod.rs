//! Small shared helpers.

pub mod fs;
pub mod progress;
pub mod rng;
