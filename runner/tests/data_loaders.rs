//! Dataset loaders: the calibration stream of the reference recipe, the MMLU CSV quirk, SFT
//! round trips in the input's schema, and errors that name the file, the place and the problem.

use std::path::{Path, PathBuf};

use pruneforge::data::calibration::alpaca_calibration_stream;
use pruneforge::data::csv::read_csv;
use pruneforge::data::sft::{gsm8k_gold, load_alpaca, load_gsm8k};
use pruneforge::data::tasks::{arc, mmlu, piqa, truthfulqa, winogrande};
use pruneforge::data::{
    BuiltinDataset, DataError, DataRoot, FieldMap, Selection, SftDataset, SftSchema, TextSource,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The runner's one resolver over `root` (None: the discovered data root).
fn resolver(root: Option<&DataRoot>) -> pruneforge::resolve::Resolver {
    pruneforge::resolve::Resolver::new(root.cloned(), std::env::temp_dir().join("pf-test-resolve"))
}

fn root() -> DataRoot {
    DataRoot::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"))
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

#[test]
fn calibration_stream_matches_the_reference_recipe() {
    let stream =
        alpaca_calibration_stream(&root().dataset(BuiltinDataset::Alpaca)).expect("stream");
    assert_eq!(stream.chars().count(), 1_813_422);
    assert_eq!(
        hex::encode(Sha256::digest(stream.as_bytes())),
        "74f35b5518371bf1152f598cce1b00be972645384356f2106569d062e47e1a09"
    );
    let records = load_alpaca(&root().dataset(BuiltinDataset::Alpaca)).expect("alpaca");
    assert_eq!(records.len(), 5000);
    assert_eq!(records.iter().filter(|r| !r.input.is_empty()).count(), 1943);
    // The same text through the generic text source.
    let rows = TextSource::AlpacaStream(root().dataset(BuiltinDataset::Alpaca))
        .load()
        .expect("text source");
    assert_eq!(rows, vec![stream]);
}

fn rows_digest(dir: &Path) -> (usize, String) {
    let mut hasher = Sha256::new();
    let mut n = 0;
    for (_, path) in mmlu::subject_files(dir).expect("subject files") {
        for row in read_csv(&path).expect("csv") {
            hasher.update(format!("{}\u{1e}", row.fields.join("\u{1f}")).as_bytes());
            n += 1;
        }
    }
    (n, hex::encode(hasher.finalize()))
}

#[test]
fn csv_reader_matches_python_csv_on_mmlu() {
    // The stray quote in an unquoted field is kept as a literal character (row 6 of the file).
    let path = root().join("mmlu/val/college_medicine_val.csv");
    let rows = read_csv(&path).expect("csv");
    assert_eq!(rows.len(), 22);
    assert_eq!(
        rows[5].fields,
        [
            "Which of the following would be the most accurate definition of Nietzsche\u{2019}s Will to Truth?\"",
            "An intrinsic desire to know the truth.",
            "Moral drive to act toward what is good.",
            "A subset of our ego that acts towards what is right.",
            "Our desire for love.",
            "A",
        ]
    );
    assert!(rows.iter().all(|r| r.fields.len() == 6));
    let items = mmlu::load_file(&path, "college_medicine").expect("items");
    assert_eq!(items[5].answer, 0);
    // Every row of every split, compared with Python's csv.reader through a digest of the
    // fields (joined with U+001F, rows ended with U+001E), computed with CPython.
    let want = [
        (
            "mmlu/dev",
            285,
            "2dd951a13881036ed3806bf99b37fc10a0a53b9f7992fa7682eda7c63c82e9b1",
        ),
        (
            "mmlu/val",
            1531,
            "5ba55058e363a3718dde6c0ab865a8eede9b922b6583e7002a01816eaa966305",
        ),
        (
            "mmlu/test.public",
            228,
            "a731c15efe036c4b1465579b0acd59173752ba86041c4c66e53056d008017446",
        ),
    ];
    for (dir, n, digest) in want {
        assert_eq!(
            rows_digest(&root().join(dir)),
            (n, digest.to_string()),
            "{dir}"
        );
    }
    assert_eq!(
        mmlu::load_dir(&root().join("mmlu/val")).expect("val").len(),
        1531
    );
}

#[test]
fn public_files_load_with_the_documented_counts() {
    let r = root();
    assert_eq!(
        arc::load(&r.dataset(BuiltinDataset::ArcChallengeTrain))
            .expect("arc")
            .len(),
        1119
    );
    let easy = arc::load(&r.dataset(BuiltinDataset::ArcEasy)).expect("arc");
    assert_eq!(easy.len(), 200);
    assert_eq!(
        winogrande::load(&r.dataset(BuiltinDataset::WinograndeTrain))
            .expect("wg")
            .len(),
        10234
    );
    assert_eq!(
        load_gsm8k(&r.dataset(BuiltinDataset::Gsm8kTrain))
            .expect("gsm8k")
            .len(),
        7473
    );
    assert_eq!(
        truthfulqa::load(&r.dataset(BuiltinDataset::TruthfulqaMc2))
            .expect("tqa")
            .len(),
        200
    );
    let piqa = piqa::load(
        &r.dataset(BuiltinDataset::Piqa),
        &r.join("piqa/valid-labels.public.lst"),
    )
    .expect("piqa");
    assert_eq!(piqa.len(), 200);
    // ARC items with numeric labels and with 3 or 5 choices exist and resolve their gold.
    let all_arc: Vec<_> = [
        BuiltinDataset::ArcEasyTrain,
        BuiltinDataset::ArcChallengeTrain,
    ]
    .iter()
    .flat_map(|&b| arc::load(&r.dataset(b)).expect("arc"))
    .collect();
    assert!(all_arc.iter().any(|a| a.labels[0] == "1"));
    assert!(all_arc.iter().any(|a| a.choices.len() == 3));
    assert!(all_arc.iter().any(|a| a.choices.len() == 5));
    assert!(all_arc.iter().all(|a| a.gold < a.choices.len()));
}

#[test]
fn sft_round_trips_in_the_input_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Alpaca: the written file parses to the same JSON values as the original.
    let alpaca_path = root().dataset(BuiltinDataset::Alpaca);
    let alpaca = SftDataset::load_detected(&alpaca_path).expect("alpaca");
    assert_eq!(alpaca.schema, SftSchema::Alpaca);
    let out = dir.path().join("alpaca_out.json");
    alpaca.write(&out).expect("write");
    let original: Value =
        serde_json::from_str(&std::fs::read_to_string(&alpaca_path).expect("read")).expect("json");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    assert_eq!(original, written);
    assert_eq!(SftDataset::load_detected(&out).expect("reload"), alpaca);

    // GSM8K: question/answer JSONL with the gold number.
    let gsm_path = root().dataset(BuiltinDataset::Gsm8kTrain);
    let gsm = SftDataset::load_detected(&gsm_path)
        .expect("gsm8k")
        .select(Selection::new(3, Some(10)));
    assert_eq!(gsm.schema, SftSchema::Gsm8k);
    assert_eq!(gsm.records.len(), 10);
    assert_eq!(gsm.records[0].id, "3");
    let out = dir.path().join("gsm_out.jsonl");
    gsm.write(&out).expect("write");
    let originals: Vec<Value> = std::fs::read_to_string(&gsm_path)
        .expect("read")
        .lines()
        .skip(3)
        .take(10)
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let written: Vec<Value> = std::fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(originals, written);

    // Generic JSONL: mapped fields are rewritten, other fields and the key order are kept.
    let src = write(
        dir.path(),
        "generic.jsonl",
        b"{\"uid\": 7, \"prompt\": \"Add 2 and 2.\", \"meta\": {\"k\": 1}, \"response\": \"4\"}\n\n{\"uid\": 8, \"prompt\": \"Hi\", \"response\": \"Hello\"}\n",
    );
    let map = FieldMap {
        instruction: "prompt".into(),
        input: None,
        output: "response".into(),
        id: Some("uid".into()),
        gold: None,
    };
    let mut generic = SftDataset::load(&src, SftSchema::Jsonl(map)).expect("generic");
    assert_eq!(generic.records.len(), 2);
    assert_eq!(generic.records[0].id, "7");
    generic.records[0].output = "Four.".into();
    let out = dir.path().join("generic_out.jsonl");
    generic.write(&out).expect("write");
    let text = std::fs::read_to_string(&out).expect("read");
    assert_eq!(
        text.lines().next().expect("line"),
        r#"{"uid":7,"prompt":"Add 2 and 2.","meta":{"k":1},"response":"Four."}"#
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn gsm8k_gold_is_the_number_after_the_marker() {
    assert_eq!(gsm8k_gold("a\nb\n#### 1,234").as_deref(), Some("1234"));
    assert_eq!(gsm8k_gold("#### -5 ").as_deref(), Some("-5"));
    assert_eq!(gsm8k_gold("no marker"), None);
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn loader_errors_name_the_file_the_place_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // Malformed JSON on line 3 of a JSONL file.
    let p = write(
        d,
        "bad.jsonl",
        b"{\"question\": \"q\", \"answer\": \"#### 1\"}\n\n{\"question\": \"q\", \"answer\": \n",
    );
    let e = err_text(load_gsm8k(&p).expect_err("malformed line"));
    assert!(
        e.contains("bad.jsonl") && e.contains("line 3") && e.contains("invalid JSON"),
        "{e}"
    );

    // A missing field.
    let p = write(d, "missing.jsonl", b"{\"question\": \"q\"}\n");
    let e = err_text(load_gsm8k(&p).expect_err("missing answer"));
    assert!(
        e.contains("line 1") && e.contains("missing field `answer`"),
        "{e}"
    );

    // A GSM8K answer without the final number.
    let p = write(
        d,
        "nogold.jsonl",
        b"{\"question\": \"q\", \"answer\": \"42\"}\n",
    );
    let e = err_text(load_gsm8k(&p).expect_err("no ####"));
    assert!(e.contains("####"), "{e}");

    // Alpaca: not an array; a record without output; bad JSON with line and column.
    let p = write(d, "obj.json", b"{\"instruction\": \"x\"}");
    assert!(err_text(load_alpaca(&p).expect_err("object")).contains("expected a JSON array"));
    let p = write(
        d,
        "rec.json",
        b"[{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"},\n {\"instruction\": \"c\", \"input\": \"\"}]",
    );
    let e = err_text(load_alpaca(&p).expect_err("record 1"));
    assert!(e.contains("record 1") && e.contains("`output`"), "{e}");
    let p = write(d, "syntax.json", b"[\n{\"instruction\": \"a\",,}\n]");
    let e = err_text(load_alpaca(&p).expect_err("syntax"));
    assert!(e.contains("line 2, column"), "{e}");
    let p = write(d, "type.json", b"[{\"instruction\": 5, \"output\": \"b\"}]");
    let e = err_text(load_alpaca(&p).expect_err("type"));
    assert!(
        e.contains("`instruction` must be a string, found a number"),
        "{e}"
    );

    // Invalid UTF-8 names its line.
    let p = write(
        d,
        "latin1.jsonl",
        b"{\"question\": \"ok\", \"answer\": \"#### 1\"}\n{\"question\": \"caf\xe9\"}\n",
    );
    let e = err_text(load_gsm8k(&p).expect_err("utf-8"));
    assert!(e.contains("line 2") && e.contains("UTF-8"), "{e}");

    // A missing file.
    let e = err_text(load_gsm8k(&d.join("nope.jsonl")).expect_err("missing file"));
    assert!(e.contains("cannot read") && e.contains("nope.jsonl"), "{e}");

    // MMLU: wrong column count, unknown answer letter, unterminated quote.
    let p = write(d, "x_test.csv", b"q,a,b,c,d,A\nq,a,b,c,A\n");
    let e = err_text(mmlu::load_file(&p, "x").expect_err("5 columns"));
    assert!(e.contains("line 2") && e.contains("found 5"), "{e}");
    let p = write(d, "y_test.csv", b"\"multi\nline\",a,b,c,d,E\n");
    let e = err_text(mmlu::load_file(&p, "y").expect_err("letter"));
    assert!(e.contains("line 1") && e.contains("`E`"), "{e}");
    let p = write(d, "z_test.csv", b"q,a,b,c,d,A\n\"open,a,b,c,d,A\n");
    let e = err_text(mmlu::load_file(&p, "z").expect_err("quote"));
    assert!(e.contains("line 2") && e.contains("never closed"), "{e}");

    // ARC answer key that is not a label.
    let p = write(
        d,
        "arc.jsonl",
        br#"{"id":"x","question":{"stem":"s","choices":[{"text":"a","label":"1"},{"text":"b","label":"2"}]},"answerKey":"C"}"#,
    );
    let e = err_text(arc::load(&p).expect_err("answerKey"));
    assert!(e.contains("answerKey `C`") && e.contains("line 1"), "{e}");

    // Winogrande without a blank; with a bad answer.
    let p = write(
        d,
        "wg.jsonl",
        br#"{"qID":"q","sentence":"no blank","option1":"a","option2":"b","answer":"1"}"#,
    );
    assert!(err_text(winogrande::load(&p).expect_err("blank")).contains("no blank `_`"));
    let p = write(
        d,
        "wg2.jsonl",
        br#"{"qID":"q","sentence":"a _ b","option1":"a","option2":"b","answer":"3"}"#,
    );
    assert!(err_text(winogrande::load(&p).expect_err("answer")).contains("\"1\" or \"2\""));

    // PIQA labels: a bad label, and a count that does not match.
    let items = write(d, "piqa.jsonl", b"{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n{\"goal\":\"g\",\"sol1\":\"a\",\"sol2\":\"b\"}\n");
    let labels = write(d, "labels.lst", b"0\n2\n");
    let e = err_text(piqa::load(&items, &labels).expect_err("label 2"));
    assert!(e.contains("line 2") && e.contains("`2`"), "{e}");
    let labels = write(d, "short.lst", b"0\n");
    let e = err_text(piqa::load(&items, &labels).expect_err("count"));
    assert!(e.contains("1 labels for the 2 items"), "{e}");

    // TruthfulQA: labels must be 0/1 and include a false answer.
    let p = write(
        d,
        "tqa.json",
        br#"[{"question":"q","mc2_targets":{"a":1,"b":1}}]"#,
    );
    let e = err_text(truthfulqa::load(&p).expect_err("no false"));
    assert!(
        e.contains("record 0") && e.contains("no false answer"),
        "{e}"
    );
    let p = write(
        d,
        "tqa2.json",
        br#"[{"question":"q","mc2_targets":{"a":1,"b":"no"}}]"#,
    );
    assert!(err_text(truthfulqa::load(&p).expect_err("bad label")).contains("0 or 1"));

    // Schema detection that cannot decide.
    let p = write(d, "unknown.jsonl", b"{\"a\": 1}\n");
    let e = err_text(SftDataset::load_detected(&p).expect_err("unknown schema"));
    assert!(e.contains("field mapping"), "{e}");

    // Unknown builtin names list the known ones.
    let e = resolver(Some(&root()))
        .resolve("builtin:dolly")
        .expect_err("unknown")
        .to_string();
    assert!(
        e.contains("dolly") && e.contains("alpaca") && e.contains("mmlu-dev"),
        "{e}"
    );
}

#[test]
fn text_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let txt = write(dir.path(), "a.txt", b"one\n\ntwo\n");
    assert_eq!(
        TextSource::PlainFile(txt.clone()).load().expect("plain"),
        ["one\n\ntwo\n"]
    );
    assert_eq!(
        TextSource::Lines(txt).load().expect("lines"),
        ["one", "two"]
    );
    let jsonl = write(dir.path(), "t.jsonl", b"{\"text\": \"x\"}\n{\"text\": 3}\n");
    let e = TextSource::JsonlField {
        path: jsonl,
        field: "text".into(),
    }
    .load()
    .expect_err("number");
    assert!(e.to_string().contains("line 2"), "{e}");
}
