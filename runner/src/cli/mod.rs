//! The `pruneforge` command line: one file per subcommand.

pub mod bench_train;
pub mod finetune;
