//! `pruneforge gc --prefix URI…`: delete artifacts and their resume state (the operator's
//! `retention: Delete`).

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Artifact URI to delete (repeatable), e.g. s3://bucket/runs/score/0123abcd/.
    #[arg(long = "prefix", required = true)]
    pub prefixes: Vec<String>,
}

pub fn run(args: GcArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for uri in &args.prefixes {
        // The resume state of an unfinished stage first (its artifact may not exist).
        match pruneforge::exec::resume::delete_for_artifact(uri) {
            Ok(0) => {}
            Ok(n) => println!("deleted {n} objects of resume state of {uri}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: resume state of {uri}: {e}");
                continue;
            }
        }
        match pruneforge::exec::artifacts::delete(uri) {
            Ok(n) => println!("deleted {n} objects under {uri}"),
            Err(e) => {
                failed += 1;
                eprintln!("error: {uri}: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} prefixes could not be deleted",
            args.prefixes.len()
        );
    }
    Ok(())
}
