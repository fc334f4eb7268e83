//! Prints the PruneDistillJob CRD as YAML:
//! `cargo run -p pruneforge-api --bin crdgen > crds/pruneforge.dev_prunedistilljobs.yaml`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match pruneforge_api::crd_yaml() {
        Ok(yaml) => {
            if let Err(e) = std::io::stdout().write_all(yaml.as_bytes()) {
                eprintln!("crdgen: cannot write to stdout: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
