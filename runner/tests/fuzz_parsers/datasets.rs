//! Datasets and evaluation-task files: SFT sets (Alpaca JSON, GSM8K JSONL, JSONL with a field
//! map, detected schemas) read and written back, every task builder (with few-shot examples
//! and offset/limit from the flags byte), CSV, text sources; and pre-tokenized id files.
//!
//! Input: a format byte, a flags byte (bits 0-1 `num_fewshot`, 2-4 offset, 5 a limit of 2),
//! then the file. PIQA's label file follows its items after a NUL byte.

use pruneforge::data::csv::parse_csv;
use pruneforge::data::tasks::{self, TaskConfig, TaskFiles};
use pruneforge::data::token_ids::read_token_ids;
use pruneforge::data::{FieldMap, Selection, SftDataset, SftSchema, TextSource};
use pruneforge::model::safetensors_io::RawTensor;
use pruneforge_api::fuzz::{Rng, Verdict};
use pruneforge_api::spec::EvalTaskName;
use safetensors::Dtype;
use std::path::{Path, PathBuf};

use super::model_files::mutate_safetensors;
use super::support::{scratch, write};

const ALPACA: &str = r#"[{"instruction":"Add 2 and 3","input":"","output":"5"},
{"instruction":"Say hi","input":"to Bob","output":"Hi Bob"},
{"instruction":"x","output":"y","extra":[1,2]}]"#;
const GSM8K: &str = "{\"question\":\"What is 2+3?\",\"answer\":\"2+3=5\\n#### 5\"}\n{\"question\":\"Q2\",\"answer\":\"1,000 + 1 = 1,001\\n#### 1,001\"}\n\n{\"question\":\"Q3\",\"answer\":\"#### -7\"}\n";
const FIELDS: &str = "{\"id\": 7, \"prompt\":\"p\",\"context\":\"c\",\"response\":\"r\",\"gold\": 3}\n{\"id\":\"b\",\"prompt\":\"p2\",\"response\":\"r2\",\"gold\":\"x\"}\n";
const DETECT: &str =
    "{\"instruction\":\"i\",\"output\":\"o\"}\n{\"instruction\":\"j\",\"input\":\"k\",\"output\":\"p\"}\n";
const ARC: &str = "{\"id\":\"M_1\",\"question\":{\"stem\":\"Which?\",\"choices\":[{\"text\":\"A thing\",\"label\":\"A\"},{\"text\":\"B thing\",\"label\":\"B\"},{\"text\":\"C\",\"label\":\"C\"}]},\"answerKey\":\"B\"}\n{\"id\":\"M_2\",\"question\":{\"stem\":\"Two?\",\"choices\":[{\"text\":\"one\",\"label\":\"1\"},{\"text\":\"two\",\"label\":\"2\"}]},\"answerKey\":\"2\"}\n{\"id\":\"M_3\",\"question\":{\"stem\":\"Three?\",\"choices\":[{\"text\":\"x\",\"label\":\"A\"},{\"text\":\"y\",\"label\":\"B\"}]},\"answerKey\":\"A\"}\n";
const HELLASWAG: &str = "{\"idx\":0,\"query\":\"A man is\",\"endings\":[\"e1\",\"e2\",\"e3\",\"e4\"],\"label\":\"2\"}\n{\"idx\":1,\"query\":\"She\",\"endings\":[\"a\",\"b\",\"c\",\"d\"],\"label\":0}\n{\"idx\":2,\"query\":\"It\",\"endings\":[\"w\",\"x\",\"y\",\"z\"],\"label\":3}\n";
const PIQA: &str = "{\"goal\":\"g1\",\"sol1\":\"s1\",\"sol2\":\"s2\"}\n{\"goal\":\"g2\",\"sol1\":\"t1\",\"sol2\":\"t2\"}\n{\"goal\":\"g3\",\"sol1\":\"u1\",\"sol2\":\"u2\"}\n\x000\n1\n0\n";
const WINOGRANDE: &str = "{\"qID\":\"q1\",\"sentence\":\"The cup fell because _ was heavy.\",\"option1\":\"cup\",\"option2\":\"table\",\"answer\":\"1\"}\n{\"qID\":\"q2\",\"sentence\":\"_ won.\",\"option1\":\"A\",\"option2\":\"B\",\"answer\":\"2\"}\n{\"qID\":\"q3\",\"sentence\":\"x _\",\"option1\":\"ä\",\"option2\":\"…\",\"answer\":\"1\"}\n";
const TRUTHFULQA: &str = r#"[{"question":"Q?","mc1_targets":{"a":1,"b":0},"mc2_targets":{"True answer.":1,"False answer.":0,"Other.":0}},
{"question":"R?","mc2_targets":{"x":0,"y":1}}]"#;
const MMLU: &str =
    "\"What is 1+1?\",1,2,3,4,B\nQ2,a,b,c,d,A\n\"multi\nline\",\"x\"\"y\",z,w,v, D \n";
const TEXT: &str = "Some text.\nMore text.\n\nLast line";
const TEXT_JSONL: &str = "{\"text\":\"a document\"}\n{\"text\":\"another\"}\n";

/// The formats, by the first input byte.
const FORMATS: [(&str, &str); 16] = [
    ("alpaca", ALPACA),
    ("gsm8k", GSM8K),
    ("fields", FIELDS),
    ("detect", DETECT),
    ("arc", ARC),
    ("hellaswag", HELLASWAG),
    ("piqa", PIQA),
    ("winogrande", WINOGRANDE),
    ("truthfulqa", TRUTHFULQA),
    ("mmlu", MMLU),
    ("gsm8k-task", GSM8K),
    ("perplexity-text", TEXT),
    ("perplexity-jsonl", TEXT_JSONL),
    ("answer-nll", DETECT),
    ("csv", MMLU),
    ("alpaca-stream", ALPACA),
];

pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (_, text)) in FORMATS.iter().enumerate() {
        for flags in [0u8, 0b10_0101] {
            let mut input = vec![i as u8, flags];
            input.extend_from_slice(text.as_bytes());
            out.push(input);
        }
    }
    out
}

fn config(flags: u8) -> TaskConfig {
    TaskConfig {
        num_fewshot: usize::from(flags & 3),
        selection: Selection::new(
            usize::from((flags >> 2) & 7),
            (flags & 0b10_0000 != 0).then_some(2),
        ),
        ..TaskConfig::default()
    }
}

/// What a record keeps through a write and a read.
type Kept = (String, String, String, String, Option<String>);

fn kept(d: &SftDataset) -> Vec<Kept> {
    d.records
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.instruction.clone(),
                r.input.clone(),
                r.output.clone(),
                r.gold.clone(),
            )
        })
        .collect()
}

/// Loads an SFT set, writes it back in its schema and reads that again (the distill stage's
/// output is read by the finetune stage): the records must survive.
fn sft_round_trip(path: &Path, schema: Option<SftSchema>) -> Verdict {
    let loaded = match schema {
        Some(s) => SftDataset::load(path, s),
        None => SftDataset::load_detected(path),
    };
    let d = match loaded {
        Ok(d) => d,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    let written = path.with_extension("out");
    if let Err(e) = d.write(&written) {
        return Verdict::Violation(format!("a loaded set cannot be written: {e}"));
    }
    let expected = kept(&d);
    match SftDataset::load(&written, d.schema.clone()) {
        Ok(back) => {
            let got = kept(&back);
            if got == expected {
                Verdict::Accepted
            } else {
                Verdict::Violation(format!(
                    "records changed through write + read: {expected:?} -> {got:?}"
                ))
            }
        }
        Err(e) => Verdict::Violation(format!("a written set does not read back: {e}")),
    }
}

fn task(task: EvalTaskName, files: &TaskFiles, flags: u8) -> Verdict {
    match tasks::build(task, files, &config(flags)) {
        Ok(docs) => {
            let _ = docs.len();
            Verdict::Accepted
        }
        Err(e) => Verdict::Rejected(e.to_string()),
    }
}

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    write(&path, bytes);
    path
}

pub fn check(input: &[u8]) -> Verdict {
    let [format, flags, body @ ..] = input else {
        return Verdict::Rejected("too short".into());
    };
    let flags = *flags;
    let dir = scratch("data");
    let index = usize::from(*format) % FORMATS.len();
    let with_pool = |docs: PathBuf| TaskFiles {
        shots: Some(docs.clone()),
        ..TaskFiles::docs(docs)
    };
    match FORMATS[index].0 {
        "alpaca" => sft_round_trip(&file(&dir, "sft.json", body), Some(SftSchema::Alpaca)),
        "gsm8k" => sft_round_trip(&file(&dir, "sft.jsonl", body), Some(SftSchema::Gsm8k)),
        "fields" => {
            let map = FieldMap {
                instruction: "prompt".into(),
                input: (flags & 1 == 0).then(|| "context".into()),
                output: "response".into(),
                id: Some("id".into()),
                gold: Some("gold".into()),
            };
            sft_round_trip(&file(&dir, "sft.jsonl", body), Some(SftSchema::Jsonl(map)))
        }
        "detect" => sft_round_trip(&file(&dir, "sft.jsonl", body), None),
        "arc" => task(
            EvalTaskName::ArcEasy,
            &with_pool(file(&dir, "arc.jsonl", body)),
            flags,
        ),
        "hellaswag" => task(
            EvalTaskName::Hellaswag,
            &with_pool(file(&dir, "hellaswag.jsonl", body)),
            flags,
        ),
        "piqa" => {
            let cut = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            let items = file(&dir, "piqa.jsonl", &body[..cut]);
            let labels = file(
                &dir,
                "piqa-labels.lst",
                body.get(cut + 1..).unwrap_or_default(),
            );
            let files = TaskFiles {
                docs: items.clone(),
                labels: Some(labels.clone()),
                shots: Some(items),
                shot_labels: Some(labels),
            };
            task(EvalTaskName::Piqa, &files, flags)
        }
        "winogrande" => task(
            EvalTaskName::Winogrande,
            &with_pool(file(&dir, "winogrande.jsonl", body)),
            flags,
        ),
        "truthfulqa" => task(
            EvalTaskName::TruthfulqaMc2,
            &TaskFiles::docs(file(&dir, "truthfulqa.json", body)),
            flags & !3,
        ),
        "mmlu" => {
            let test = dir.join("mmlu_test");
            let dev = dir.join("mmlu_dev");
            for d in [&test, &dev] {
                std::fs::create_dir_all(d).expect("scratch directory");
            }
            file(&test, "college_biology_test.csv", body);
            file(&dev, "college_biology_dev.csv", body);
            let files = TaskFiles {
                shots: Some(dev),
                ..TaskFiles::docs(test)
            };
            task(EvalTaskName::Mmlu, &files, flags)
        }
        "gsm8k-task" => task(
            EvalTaskName::Gsm8k,
            &with_pool(file(&dir, "gsm8k.jsonl", body)),
            flags,
        ),
        "perplexity-text" => task(
            EvalTaskName::Perplexity,
            &TaskFiles::docs(file(&dir, "text.txt", body)),
            flags & !3,
        ),
        "perplexity-jsonl" => task(
            EvalTaskName::Perplexity,
            &TaskFiles::docs(file(&dir, "text.jsonl", body)),
            flags & !3,
        ),
        "answer-nll" => task(
            EvalTaskName::AnswerNll,
            &TaskFiles::docs(file(&dir, "answers.jsonl", body)),
            flags & !3,
        ),
        "csv" => match std::str::from_utf8(body) {
            Ok(text) => match parse_csv(text) {
                Ok(_) => Verdict::Accepted,
                Err((line, e)) => Verdict::Rejected(format!("line {line}: {e}")),
            },
            Err(e) => Verdict::Rejected(e.to_string()),
        },
        _ => {
            let path = file(&dir, "stream.json", body);
            let lines = TextSource::Lines(path.clone()).load().map(|l| l.len());
            let stream = TextSource::AlpacaStream(path).load();
            match (lines, stream) {
                (Ok(_), Ok(_)) => Verdict::Accepted,
                (_, Err(e)) | (Err(e), _) => Verdict::Rejected(e.to_string()),
            }
        }
    }
}

fn ids_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<i64>)]) -> Vec<u8> {
    let raw: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(name, dtype, shape, values)| {
            let bytes: Vec<u8> = match dtype {
                Dtype::I64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Dtype::I32 => values
                    .iter()
                    .flat_map(|v| (*v as i32).to_le_bytes())
                    .collect(),
                _ => values
                    .iter()
                    .flat_map(|v| (*v as u32).to_le_bytes())
                    .collect(),
            };
            let t = RawTensor {
                dtype: *dtype,
                shape: shape.clone(),
                bytes,
            };
            (name.to_string(), t)
        })
        .collect();
    safetensors::serialize(raw.iter().map(|(n, t)| (n.as_str(), t)), None).expect("safetensors")
}

/// Ids with a right-padding mask (I64), a single row (I32), and U32 ids with an I32 mask.
pub fn token_id_seeds() -> Vec<Vec<u8>> {
    vec![
        ids_file(&[
            (
                "input_ids",
                Dtype::I64,
                vec![2, 4],
                vec![5, 6, 7, 0, 1, 2, 3, 4],
            ),
            (
                "attention_mask",
                Dtype::I64,
                vec![2, 4],
                vec![1, 1, 1, 0, 1, 1, 1, 1],
            ),
        ]),
        ids_file(&[("input_ids", Dtype::I32, vec![5], vec![9, 8, 7, 6, 5])]),
        ids_file(&[
            ("input_ids", Dtype::U32, vec![1, 3], vec![1, 2, 3]),
            ("attention_mask", Dtype::I32, vec![1, 3], vec![1, 0, 0]),
        ]),
    ]
}

pub fn token_ids_mutant(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    mutate_safetensors(rng, input)
}

/// Reads the ids as the score stage and the perplexity task do, and every row.
pub fn check_token_ids(input: &[u8]) -> Verdict {
    let path = scratch("ids").join("ids.safetensors");
    write(&path, input);
    let m = match read_token_ids(&path, "input_ids") {
        Ok(m) => m,
        Err(e) => return Verdict::Rejected(e.to_string()),
    };
    if m.ids.len() != m.rows.saturating_mul(m.width) || m.lengths.len() != m.rows {
        return Verdict::Violation(format!(
            "{} ids, {} lengths for {} rows of {}",
            m.ids.len(),
            m.lengths.len(),
            m.rows,
            m.width
        ));
    }
    for r in 0..m.rows {
        if m.lengths[r] > m.width {
            return Verdict::Violation(format!("row {r} is longer than the width"));
        }
        let _ = m.row(r);
    }
    Verdict::Accepted
}
