//! Data root discovery and `builtin:` names. One test function, because it changes the
//! process environment.

use std::path::PathBuf;

use pruneforge::data::builtin::DATA_DIR_ENV;
use pruneforge::data::{resolve_dataset, Builtin, DataError, DataRoot};

#[test]
fn data_root_and_builtin_names() {
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));

    // Every builtin name resolves to an existing file or directory of shared/data.
    let root = DataRoot::new(&shared);
    for builtin in Builtin::ALL {
        let path = resolve_dataset(&format!("builtin:{}", builtin.name()), Some(&root))
            .expect("known builtin");
        assert!(path.exists(), "{} -> {}", builtin.name(), path.display());
        assert_eq!(Builtin::parse(builtin.name()).expect("bare name"), builtin);
    }
    assert_eq!(
        resolve_dataset("builtin:alpaca", Some(&root)).expect("alpaca"),
        shared.join("alpaca/alpaca_5000.json")
    );
    // Paths pass through.
    assert_eq!(
        resolve_dataset("/data/x.jsonl", None).expect("path"),
        PathBuf::from("/data/x.jsonl")
    );

    // The environment variable wins, and a wrong one is an error that names it.
    std::env::set_var(DATA_DIR_ENV, &shared);
    assert_eq!(
        DataRoot::discover().expect("from env").dir(),
        shared.as_path()
    );
    assert_eq!(
        resolve_dataset("builtin:gsm8k-test", None).expect("from env"),
        shared.join("gsm8k/test.public.jsonl")
    );
    std::env::set_var(DATA_DIR_ENV, "/nonexistent/pruneforge-data");
    match DataRoot::discover() {
        Err(e @ DataError::DataRootNotFound { .. }) => {
            let text = e.to_string();
            assert!(text.contains("/nonexistent/pruneforge-data"), "{text}");
            assert!(text.contains(DATA_DIR_ENV), "{text}");
        }
        other => panic!("expected DataRootNotFound, got {other:?}"),
    }

    // Without the variable, ../shared/data relative to the repository root is found
    // (cargo runs tests in the crate directory, below the repository root).
    std::env::remove_var(DATA_DIR_ENV);
    let candidates = DataRoot::candidates();
    assert_eq!(
        candidates.last().map(PathBuf::as_path),
        Some(std::path::Path::new("/usr/share/pruneforge/data"))
    );
    let found = DataRoot::discover().expect("repo-relative data root");
    assert_eq!(
        found.dir().canonicalize().expect("exists"),
        shared.canonicalize().expect("exists")
    );
}
