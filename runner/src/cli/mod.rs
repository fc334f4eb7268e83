//! The `pruneforge` command line: one file per subcommand.

pub mod merge;
