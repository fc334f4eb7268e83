//! Data root discovery and `builtin:` names. One test function, because it changes the
//! process environment.

use std::path::PathBuf;

use pruneforge::data::builtin::DATA_DIR_ENV;
use pruneforge::data::{BuiltinDataset, DataError, DataRoot};

/// The runner's one resolver over `root` (None: the discovered data root).
fn resolver(root: Option<&DataRoot>) -> pruneforge::resolve::Resolver {
    pruneforge::resolve::Resolver::new(root.cloned(), std::env::temp_dir().join("pf-test-resolve"))
}

#[test]
fn data_root_and_builtin_names() {
    let shared = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));

    // Every builtin name the API accepts resolves to an existing file or directory of
    // shared/data.
    let root = DataRoot::new(&shared);
    for builtin in BuiltinDataset::ALL {
        let path = resolver(Some(&root))
            .resolve(&builtin.uri())
            .expect("known builtin");
        assert!(path.exists(), "{} -> {}", builtin.uri(), path.display());
    }
    assert_eq!(
        resolver(Some(&root))
            .resolve("builtin:alpaca")
            .expect("alpaca"),
        shared.join("alpaca/alpaca_5000.json")
    );
    // The API's name of the TruthfulQA set (the runner used to call it `truthfulqa`).
    assert_eq!(
        resolver(Some(&root))
            .resolve("builtin:truthfulqa_mc2")
            .expect("truthfulqa_mc2"),
        shared.join("truthfulqa/mc_task.v0.public.json")
    );
    assert!(matches!(
        resolver(Some(&root)).resolve("builtin:truthfulqa"),
        Err(pruneforge::resolve::ResolveError::UnknownBuiltin(_))
    ));
    // Paths pass through.
    assert_eq!(
        resolver(None).resolve("/data/x.jsonl").expect("path"),
        PathBuf::from("/data/x.jsonl")
    );

    // The environment variable wins, and a wrong one is an error that names it.
    std::env::set_var(DATA_DIR_ENV, &shared);
    assert_eq!(
        DataRoot::discover().expect("from env").dir(),
        shared.as_path()
    );
    assert_eq!(
        resolver(None)
            .resolve("builtin:gsm8k-test")
            .expect("from env"),
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
