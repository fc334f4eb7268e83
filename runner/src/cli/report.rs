//! `pruneforge report OUT_DIR`: HTML + Markdown report from the run records in OUT_DIR.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The storage root of a local run (holds runs/<job>.json).
    pub out_dir: PathBuf,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    for p in pruneforge::report::write_from_dir(&args.out_dir)? {
        println!("wrote {p}");
    }
    Ok(())
}
