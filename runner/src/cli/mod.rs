//! The `pruneforge` command line: one file per subcommand.

pub mod bench;
pub mod distill;
pub mod generate;
pub mod import;
pub mod logging;
pub mod merge;
pub mod report;
pub mod run;
pub mod stage;
