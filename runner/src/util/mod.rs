//! Small shared helpers.

pub mod allocator;
pub mod fs;
pub mod progress;
pub mod rng;
pub mod workers;
