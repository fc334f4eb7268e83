//! A small deterministic mutation fuzzer for the parser tests of the workspace, on stable Rust
//! (no cargo-fuzz, no nightly). Test support, not part of the API: it lives here because every
//! crate of the workspace can reach this one.
//!
//! A [`Target`] names valid seed inputs; [`run`] mutates them (bit flips, byte insertion and
//! deletion, truncation, splicing, integer fields overwritten with boundary values, JSON
//! values replaced by hostile ones, and whatever the target's own mutator does) and calls the
//! parser under [`std::panic::catch_unwind`]. A panic, a broken invariant the check reports
//! ([`Verdict::Violation`]), a single allocation above [`Target::max_alloc`] (with
//! [`GuardedAlloc`] as the test's global allocator) or an input that takes longer than
//! [`Target::max_seconds`] is a crash; [`Report::assert_clean`] fails the test with the seed,
//! the iteration and the input (hex), and writes the input to a file for the corpus.
//!
//! Each run is bounded by iterations and wall time. Environment:
//! `PRUNEFORGE_FUZZ_SECONDS` (seconds per target; default the target's), `PRUNEFORGE_FUZZ_ITERATIONS`
//! (default 1 000 000), `PRUNEFORGE_FUZZ_SEED` (a number; default derived from the target name,
//! so runs are reproducible), `PRUNEFORGE_FUZZ_CRASH_DIR` (where crash inputs are written;
//! default `<temp>/pruneforge-fuzz`). With `PRUNEFORGE_FUZZ_TRACE=1` the current input is
//! also written to `<crash dir>/<target>/current.bin` before every iteration, so that an abort
//! (which no test can catch) leaves its input behind.
//!
//! [`replay`] runs the crash corpus of a target (files kept as regression tests).

mod alloc;
mod mutate;

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

pub use alloc::{GuardedAlloc, REFUSED_ALLOCATION};
pub use mutate::{
    boundary_u64, hostile_value, mutate_bytes, mutate_json, mutate_json_text, Rng, BOUNDARY_U64,
};

/// What a parser made of one input.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Parsed (and whatever the check did with it afterwards worked).
    Accepted,
    /// Refused with this error: fine.
    Rejected(String),
    /// An invariant broke (e.g. a value that parsed does not serialize back): a crash.
    Violation(String),
}

impl Verdict {
    /// `Accepted` for `Ok`, `Rejected` with the error's message for `Err`.
    pub fn of<T, E: std::fmt::Display>(result: Result<T, E>) -> Self {
        match result {
            Ok(_) => Verdict::Accepted,
            Err(e) => Verdict::Rejected(e.to_string()),
        }
    }
}

/// A target's own mutation of an input; `None` when it does not apply to this input.
pub type CustomMutator<'a> = &'a dyn Fn(&mut Rng, &[u8]) -> Option<Vec<u8>>;

/// One fuzz target.
pub struct Target<'a> {
    /// Name, used for the seed, messages and the crash directory.
    pub name: &'a str,
    /// Valid inputs to start from.
    pub seeds: Vec<Vec<u8>>,
    /// Bytes at the start that select a variant of the target (file kind, options); JSON
    /// mutations apply to the rest.
    pub prefix: usize,
    /// Length of the header of binary inputs: half of the position-based byte mutations land
    /// there (0: anywhere).
    pub hot: usize,
    /// Whether JSON-aware mutations apply (the body is JSON or JSONL).
    pub json: bool,
    /// The target's own structure-aware mutator.
    pub custom: Option<CustomMutator<'a>>,
    /// Default wall-time budget in seconds (`PRUNEFORGE_FUZZ_SECONDS` overrides it).
    pub seconds: f64,
    /// Largest single allocation an input may cause, in bytes.
    pub max_alloc: usize,
    /// Longest time one input may take, in seconds.
    pub max_seconds: f64,
    /// Mutants longer than this are not tried.
    pub max_input: usize,
}

impl<'a> Target<'a> {
    /// A target with default limits: 5 s, 64 MiB per allocation, 5 s per input, 4 MiB inputs.
    pub fn new(name: &'a str, seeds: Vec<Vec<u8>>) -> Self {
        Target {
            name,
            seeds,
            prefix: 0,
            hot: 0,
            json: false,
            custom: None,
            seconds: 5.0,
            max_alloc: 64 << 20,
            max_seconds: 5.0,
            max_input: 4 << 20,
        }
    }
}

/// How a crash showed itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashKind {
    /// The parser panicked.
    Panic,
    /// The check reported a broken invariant.
    Violation,
    /// One allocation was larger than the target allows.
    Allocation,
    /// The input took longer than the target allows.
    Slow,
}

/// One crashing input.
#[derive(Debug, Clone)]
pub struct Crash {
    /// Kind.
    pub kind: CrashKind,
    /// The panic message and location, or the violation.
    pub what: String,
    /// Iteration (0-based) at which it was found.
    pub iteration: u64,
    /// The input.
    pub input: Vec<u8>,
    /// Where the input was written.
    pub file: Option<PathBuf>,
}

/// The outcome of a fuzz run.
#[derive(Debug)]
pub struct Report {
    /// Target name.
    pub target: String,
    /// The seed of the run.
    pub seed: u64,
    /// Inputs tried.
    pub iterations: u64,
    /// Of those, accepted by the parser.
    pub accepted: u64,
    /// Distinct rejection messages seen (digits masked).
    pub distinct_errors: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Crashes, one per distinct message.
    pub crashes: Vec<Crash>,
}

impl Report {
    /// Fails (panics) when the run found crashes, listing each with its input.
    pub fn assert_clean(&self) {
        if self.crashes.is_empty() {
            return;
        }
        let mut msg = format!(
            "fuzz target `{}` (PRUNEFORGE_FUZZ_SEED={}) found {} crash(es) in {} iterations:\n",
            self.target,
            self.seed,
            self.crashes.len(),
            self.iterations
        );
        for c in &self.crashes {
            let _ = writeln!(
                msg,
                "- {:?} at iteration {}: {}\n  input ({} bytes{}): {}",
                c.kind,
                c.iteration,
                c.what,
                c.input.len(),
                c.file
                    .as_ref()
                    .map(|f| format!(", saved to {}", f.display()))
                    .unwrap_or_default(),
                hex_preview(&c.input, 512)
            );
        }
        panic!("{msg}");
    }
}

/// Lowercase hex of the first `max` bytes (`…` when cut).
pub fn hex_preview(bytes: &[u8], max: usize) -> String {
    let mut s: String = bytes.iter().take(max).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > max {
        s.push('…');
    }
    s
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics on a thread that runs an input are recorded instead of printed.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "<non-string panic>".into());
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                // The first frames outside the standard library and this harness: where a
                // panic in a dependency was called from.
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                let frames: Vec<&str> = trace
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("at ") && !l.contains("/rustc/"))
                    .filter(|l| !l.contains("crds/src/fuzz"))
                    .take(4)
                    .collect();
                LAST_PANIC.with(|p| {
                    *p.borrow_mut() = Some(format!(
                        "{message}{location} (called {})",
                        frames.join(", ")
                    ))
                });
            } else {
                previous(info);
            }
        }));
    });
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

fn name_seed(name: &str) -> u64 {
    // FNV-1a.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where crash inputs go: `$PRUNEFORGE_FUZZ_CRASH_DIR/<target>`.
pub fn crash_dir(target: &str) -> PathBuf {
    std::env::var_os("PRUNEFORGE_FUZZ_CRASH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("pruneforge-fuzz"))
        .join(target)
}

/// `text` with every run of digits replaced by `#`.
fn mask_numbers(text: impl Iterator<Item = char>) -> String {
    let mut out = String::new();
    for c in text {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The message of a verdict up to its first quoted part, numbers masked, so that one kind of
/// error is one signature whatever the input's text and numbers.
fn signature(text: &str) -> String {
    mask_numbers(
        text.chars()
            .take_while(|c| !matches!(c, '`' | '"' | '\''))
            .take(100),
    )
}

/// Runs `check` on one input with panics caught and allocations measured.
fn run_one(check: &dyn Fn(&[u8]) -> Verdict, input: &[u8]) -> (Result<Verdict, String>, usize) {
    install_panic_hook();
    CAPTURING.with(|c| c.set(true));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    alloc::reset_largest();
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    CAPTURING.with(|c| c.set(false));
    let largest = alloc::largest();
    let outcome = outcome.map_err(|payload| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string panic>".into())
    });
    (outcome, largest)
}

/// Fuzzes `check` from the target's seeds until the iteration or time budget is spent; every
/// distinct crash is kept (at most 16).
pub fn run(target: &Target<'_>, check: impl Fn(&[u8]) -> Verdict) -> Report {
    let seed = env_u64("PRUNEFORGE_FUZZ_SEED").unwrap_or_else(|| name_seed(target.name));
    let max_iterations = env_u64("PRUNEFORGE_FUZZ_ITERATIONS").unwrap_or(1_000_000);
    let seconds = std::env::var("PRUNEFORGE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(target.seconds);
    let budget = Duration::from_secs_f64(seconds.max(0.0));
    let trace = std::env::var_os("PRUNEFORGE_FUZZ_TRACE").is_some();
    let dir = crash_dir(target.name);
    let mut rng = Rng::new(seed);
    let mut pool: Vec<Vec<u8>> = target.seeds.clone();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut crash_seen: BTreeSet<String> = BTreeSet::new();
    let mut report = Report {
        target: target.name.to_string(),
        seed,
        iterations: 0,
        accepted: 0,
        distinct_errors: 0,
        elapsed: Duration::ZERO,
        crashes: Vec::new(),
    };
    let started = Instant::now();
    // The seeds themselves first, then mutants.
    let mut queue: Vec<Vec<u8>> = target.seeds.iter().rev().cloned().collect();
    while report.iterations < max_iterations && started.elapsed() < budget {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                let Some(input) = mutant(target, &mut rng, &pool) else {
                    continue;
                };
                input
            }
        };
        if trace {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(dir.join("current.bin"), &input);
        }
        let t0 = Instant::now();
        let (outcome, largest) = run_one(&check, &input);
        let took = t0.elapsed().as_secs_f64();
        report.iterations += 1;
        let crash = match &outcome {
            Err(panic) => Some((CrashKind::Panic, panic.clone())),
            Ok(Verdict::Violation(v)) => Some((CrashKind::Violation, v.clone())),
            Ok(_) if largest > target.max_alloc => Some((
                CrashKind::Allocation,
                format!(
                    "one allocation of {largest} bytes for a {}-byte input (limit {})",
                    input.len(),
                    target.max_alloc
                ),
            )),
            Ok(_) if took > target.max_seconds => Some((
                CrashKind::Slow,
                format!(
                    "took {took:.1} s (limit {} s) for a {}-byte input",
                    target.max_seconds,
                    input.len()
                ),
            )),
            Ok(_) => None,
        };
        if let Some((kind, what)) = crash {
            let key = format!("{kind:?}:{}", mask_numbers(what.chars()));
            if crash_seen.insert(key) {
                let file = save_crash(&dir, &input);
                report.crashes.push(Crash {
                    kind,
                    what,
                    iteration: report.iterations - 1,
                    input,
                    file,
                });
                if report.crashes.len() >= 16 {
                    break;
                }
            }
            continue;
        }
        let sig = match &outcome {
            Ok(Verdict::Accepted) => {
                report.accepted += 1;
                // Accepted inputs reach deeper code: keep some of them.
                rng.one_in(16).then(|| format!("ok:{}", report.accepted))
            }
            Ok(Verdict::Rejected(e)) => Some(format!("err:{}", signature(e))),
            _ => None,
        };
        if let Some(sig) = sig {
            if seen.insert(sig) && input.len() <= target.max_input {
                if pool.len() < 512 {
                    pool.push(input);
                } else {
                    let i = target.seeds.len() + rng.below(pool.len() - target.seeds.len());
                    pool[i] = input;
                }
            }
        }
    }
    report.distinct_errors = seen.iter().filter(|s| s.starts_with("err:")).count();
    report.elapsed = started.elapsed();
    eprintln!(
        "fuzz {}: {} inputs in {:.1} s ({} accepted, {} distinct errors, {} crashes; seed {})",
        report.target,
        report.iterations,
        report.elapsed.as_secs_f64(),
        report.accepted,
        report.distinct_errors,
        report.crashes.len(),
        report.seed
    );
    report
}

fn mutant(target: &Target<'_>, rng: &mut Rng, pool: &[Vec<u8>]) -> Option<Vec<u8>> {
    let base = if rng.one_in(3) {
        rng.pick(&target.seeds)?
    } else {
        rng.pick(pool)?
    };
    let mut input = base.clone();
    let most = if rng.one_in(4) { 8 } else { 3 };
    let rounds = 1 + rng.below(most);
    for _ in 0..rounds {
        let choice = rng.below(10);
        let next = if choice < 3 && target.custom.is_some() {
            target.custom.and_then(|m| m(rng, &input))
        } else if choice < 6 && target.json && input.len() >= target.prefix {
            let donor = rng.pick(pool).cloned().unwrap_or_default();
            let donor_body = donor.get(target.prefix..).unwrap_or_default();
            mutate_json_text(rng, &input[target.prefix..], donor_body).map(|body| {
                let mut out = input[..target.prefix].to_vec();
                out.extend_from_slice(&body);
                out
            })
        } else {
            None
        };
        input = match next {
            Some(n) => n,
            None => {
                // Byte mutations keep the variant prefix most of the time.
                let keep = if rng.one_in(16) {
                    0
                } else {
                    target.prefix.min(input.len())
                };
                let mut body = mutate_bytes(rng, &input[keep..], pool, target.hot);
                let mut out = input[..keep].to_vec();
                out.append(&mut body);
                out
            }
        };
    }
    (input.len() <= target.max_input).then_some(input)
}

fn save_crash(dir: &Path, input: &[u8]) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let name = format!("crash-{:016x}.bin", name_seed_bytes(input));
    let path = dir.join(name);
    std::fs::write(&path, input).ok()?;
    Some(path)
}

fn name_seed_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Replays every file of `dir` (a crash corpus kept as regression tests): none may panic,
/// break an invariant or allocate more than `max_alloc` bytes at once; each must be rejected
/// unless its name contains `.accept` (an input that is valid once the bug is fixed). Returns
/// how many files ran; panics listing the failures.
pub fn replay(dir: &Path, max_alloc: usize, check: impl Fn(&[u8]) -> Verdict) -> usize {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut failures = Vec::new();
    for file in &files {
        let Ok(input) = std::fs::read(file) else {
            failures.push(format!("{}: unreadable", file.display()));
            continue;
        };
        let may_accept = file
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".accept"));
        let (outcome, largest) = run_one(&check, &input);
        let problem = match outcome {
            Err(panic) => Some(format!("panicked: {panic}")),
            Ok(Verdict::Violation(v)) => Some(format!("invariant broken: {v}")),
            Ok(_) if largest > max_alloc => Some(format!("allocated {largest} bytes at once")),
            Ok(Verdict::Accepted) if !may_accept => {
                Some("was accepted; expected an error".to_string())
            }
            Ok(_) => None,
        };
        if let Some(p) = problem {
            failures.push(format!("{}: {p}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "crash corpus {}:\n{}",
        dir.display(),
        failures.join("\n")
    );
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic() {
        let seed = br#"{"a": [1, 2, {"b": "c"}], "d": 18}"#.to_vec();
        let run = |s: u64| {
            let mut rng = Rng::new(s);
            let mut out: Vec<Vec<u8>> = (0..200)
                .map(|_| mutate_bytes(&mut rng, &seed, std::slice::from_ref(&seed), 4))
                .collect();
            out.extend((0..200).filter_map(|_| mutate_json_text(&mut rng, &seed, &seed)));
            out
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn a_panicking_parser_is_reported_with_its_input() {
        let target = Target {
            seconds: 2.0,
            ..Target::new("self-test", vec![b"12345678".to_vec()])
        };
        let report = run(&target, |input| {
            if input.first() == Some(&0) {
                panic!("first byte is zero");
            }
            Verdict::Accepted
        });
        assert!(report.iterations > 0);
        assert_eq!(report.crashes.len(), 1, "{report:?}");
        assert!(report.crashes[0].what.contains("first byte is zero"));
        assert_eq!(report.crashes[0].input.first(), Some(&0));
    }
}
