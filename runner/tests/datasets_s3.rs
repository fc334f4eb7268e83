//! Data set references in S3 (a real moto server on 127.0.0.1): the resolver downloads one
//! object (an SFT file) or a prefix (a directory of files), and a sibling beside an object
//! (PIQA's labels); the SFT loader then applies format, offset and limit as for a local file.
//!
//! One test in this binary: it points the process environment at the server.

mod moto;

use moto::{MotoServer, BUCKET};
use pruneforge::resolve::{ResolveError, Resolver};
use pruneforge::stages::inputs::load_sft;
use pruneforge::storage::BlockingStorage;
use pruneforge_api::spec::{DatasetFormat, DatasetRef};

const ALPACA: &str = r#"[
 {"instruction": "one", "input": "", "output": "1"},
 {"instruction": "two", "input": "x", "output": "2"},
 {"instruction": "three", "input": "", "output": "3"},
 {"instruction": "four", "input": "", "output": "4"}
]"#;

#[test]
fn datasets_resolve_from_s3() {
    let server = MotoServer::start();
    for (k, v) in server.env() {
        // This binary's only test: no other thread reads the environment meanwhile.
        std::env::set_var(k, v);
    }
    let store = BlockingStorage::new(server.storage()).unwrap();
    store
        .put_bytes("sets/alpaca.json", ALPACA.as_bytes().to_vec())
        .unwrap();
    store
        .put_bytes("sets/mmlu/anatomy_test.csv", b"q,a,b,c,d,A\n".to_vec())
        .unwrap();
    store
        .put_bytes("sets/mmlu/virology_test.csv", b"r,a,b,c,d,B\n".to_vec())
        .unwrap();
    store
        .put_bytes("sets/piqa/valid.jsonl", b"{}\n".to_vec())
        .unwrap();
    store
        .put_bytes("sets/piqa/valid-labels.lst", b"1\n".to_vec())
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let resolver = Resolver::new(None, cache.path());
    let root = format!("s3://{BUCKET}/pf-test/sets");

    // One object, read with offset and limit like a local file.
    let r = DatasetRef {
        uri: format!("{root}/alpaca.json"),
        format: DatasetFormat::Alpaca,
        fields: None,
        limit: Some(2),
        offset: 1,
    };
    let ds = load_sft(&r, &resolver).expect("SFT set from S3");
    let instructions: Vec<&str> = ds.records.iter().map(|r| r.instruction.as_str()).collect();
    assert_eq!(instructions, ["two", "three"]);

    // A changed object is fetched again, never served stale from the cache.
    store
        .put_bytes(
            "sets/alpaca.json",
            ALPACA.replace("two", "TWO").into_bytes(),
        )
        .unwrap();
    let ds = load_sft(&r, &resolver).unwrap();
    assert_eq!(ds.records[0].instruction, "TWO");

    // A prefix becomes a directory.
    let dir = resolver.resolve(&format!("{root}/mmlu")).expect("a prefix");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["anatomy_test.csv", "virology_test.csv"]);

    // A sibling of an object.
    let labels = resolver
        .resolve_sibling(&format!("{root}/piqa/valid.jsonl"), "valid-labels.lst")
        .unwrap();
    assert_eq!(std::fs::read_to_string(labels).unwrap(), "1\n");

    // Nothing there: a clear error naming the URI.
    let missing = format!("{root}/none.jsonl");
    match resolver.resolve(&missing) {
        Err(e @ ResolveError::NotFound { .. }) => assert!(e.to_string().contains(&missing)),
        other => panic!("expected NotFound, got {other:?}"),
    }
}
