//! Few-shot example selection and formatting with lm-evaluation-harness semantics.
//!
//! - Random sampler (lm-eval's default): one `random.Random(seed)` per task, and for every
//!   document in order `rnd.sample(pool, k)`. Documents skipped by offset/limit still draw, so
//!   a document's shots do not depend on the selection.
//! - When the pool may contain the scored document itself (the task table gives the scored
//!   slice as the pool: HellaSwag and PIQA take their shots from the public validation slice),
//!   `k + 1` are drawn, the document is removed and the first `k` kept, as lm-eval does when
//!   the few-shot split is the test split.
//! - First-n sampler (MMLU): the first `k` rows of the subject's dev file.
//! - The examples are joined with `"\n\n"` and followed by `"\n\n"` before the document's own
//!   context (lm-eval's `fewshot_delimiter`).

use pruneforge_api::spec::EvalTaskName;

use super::{ItemsFile, TaskConfig, TaskFiles};
use crate::data::error::{DataError, Result};
use crate::data::pyrandom::PyRandom;
use crate::data::selection::Selection;

/// lm-eval's `fewshot_delimiter`.
pub const FEWSHOT_DELIMITER: &str = "\n\n";

/// lm-eval's default `fewshot_random_seed`.
pub const DEFAULT_FEWSHOT_SEED: i64 = 1234;

/// The text that goes before a document's context: the examples, each followed by the
/// delimiter; empty without examples.
pub fn fewshot_prefix<S: AsRef<str>>(shots: &[S]) -> String {
    let mut out = String::new();
    for shot in shots {
        out.push_str(shot.as_ref());
        out.push_str(FEWSHOT_DELIMITER);
    }
    out
}

/// Draws random few-shot examples for the documents of a task, in document order.
#[derive(Debug)]
pub struct RandomShots {
    rng: PyRandom,
    k: usize,
    pool_len: usize,
    exclude_doc: bool,
}

impl RandomShots {
    /// `k` examples per document from a pool of `pool_len`. With `exclude_doc`, `k + 1` are
    /// drawn and the scored document is removed (see the module docs).
    pub fn new(
        task: &str,
        seed: i64,
        k: usize,
        pool_len: usize,
        exclude_doc: bool,
    ) -> Result<Self> {
        let draw = k + usize::from(exclude_doc && k > 0);
        if draw > pool_len {
            return Err(DataError::task(
                task,
                format!(
                    "{k}-shot needs {draw} examples to draw from, but the few-shot pool has \
                     {pool_len}; lower num_fewshot"
                ),
            ));
        }
        Ok(RandomShots {
            rng: PyRandom::new(seed),
            k,
            pool_len,
            exclude_doc,
        })
    }

    /// The pool indices of the next document's examples. `is_doc(j)` tells whether pool item
    /// `j` is the document itself (only asked with `exclude_doc`). Draws nothing for `k = 0`.
    pub fn next(&mut self, is_doc: impl Fn(usize) -> bool) -> Vec<usize> {
        if self.k == 0 {
            return Vec::new();
        }
        let draw = self.k + usize::from(self.exclude_doc);
        let drawn = self
            .rng
            .sample_indices(self.pool_len, draw)
            .unwrap_or_default();
        if self.exclude_doc {
            drawn
                .into_iter()
                .filter(|&j| !is_doc(j))
                .take(self.k)
                .collect()
        } else {
            drawn
        }
    }
}

/// Walks the documents in order, drawing every document's examples (so that a document's
/// shots do not depend on the selection), and builds the selected ones with
/// `make(idx, item, shot_indices)`. `is_doc(item, j)` tells whether pool item `j` is `item`.
pub fn build_selected<T, D>(
    items: &[T],
    selection: Selection,
    shots: &mut RandomShots,
    is_doc: impl Fn(&T, usize) -> bool,
    mut make: impl FnMut(usize, &T, &[usize]) -> D,
) -> Vec<D> {
    let range = selection.range(items.len());
    let mut docs = Vec::with_capacity(range.len());
    for (idx, item) in items.iter().enumerate().take(range.end) {
        let drawn = shots.next(|j| is_doc(item, j));
        if idx >= range.start {
            docs.push(make(idx, item, &drawn));
        }
    }
    docs
}

/// Builds the selected documents of a task whose few-shot examples are items of the same kind
/// drawn at random (lm-eval's default sampler): loads the documents with `load`, the pool (only
/// when examples are asked for), draws every document's examples in order, and makes each
/// selected document with `make(idx, item, prefix)`, where `prefix` is the examples rendered by
/// `shot` and joined as [`fewshot_prefix`] does. The scored document is kept out of its own
/// examples when the task's pool is its scored slice (see the module docs).
pub fn build_with_random_shots<T: PartialEq, D>(
    task: EvalTaskName,
    files: &TaskFiles,
    config: &TaskConfig,
    load: impl Fn(ItemsFile<'_>) -> Result<Vec<T>>,
    shot: impl Fn(&T) -> String,
    mut make: impl FnMut(usize, &T, &str) -> D,
) -> Result<Vec<D>> {
    let def = task.def();
    let items = load(files.docs_file())?;
    let pool = if config.num_fewshot > 0 {
        load(files.pool_file(task)?)?
    } else {
        Vec::new()
    };
    let exclude_doc = def.fewshot_pool == Some(def.docs);
    let mut shots = RandomShots::new(
        task.as_str(),
        config.seed,
        config.num_fewshot,
        pool.len(),
        exclude_doc,
    )?;
    Ok(build_selected(
        &items,
        config.selection,
        &mut shots,
        |item, j| pool[j] == *item,
        |idx, item, drawn| {
            let examples: Vec<String> = drawn.iter().map(|&j| shot(&pool[j])).collect();
            make(idx, item, &fewshot_prefix(&examples))
        },
    ))
}

/// Fails when a task has no few-shot pool but examples were asked for.
pub fn require_zero_shot(task: &str, k: usize, why: &str) -> Result<()> {
    if k > 0 {
        return Err(DataError::task(
            task,
            format!("num_fewshot = {k}, but {why}; use num_fewshot = 0"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_joins_with_blank_lines() {
        assert_eq!(fewshot_prefix::<&str>(&[]), "");
        assert_eq!(fewshot_prefix(&["a b", "c d"]), "a b\n\nc d\n\n");
    }

    #[test]
    fn excludes_the_document_and_keeps_k() {
        let mut shots = RandomShots::new("t", 1234, 3, 10, true).expect("pool is big enough");
        // random.Random(1234).sample(range(10), 4) == [7, 1, 0, 9]
        assert_eq!(shots.next(|j| j == 1), vec![7, 0, 9]);
        let mut shots = RandomShots::new("t", 1234, 3, 10, true).expect("pool is big enough");
        assert_eq!(shots.next(|_| false), vec![7, 1, 0]);
        assert!(RandomShots::new("t", 1, 10, 10, true).is_err());
        assert!(RandomShots::new("t", 1, 10, 10, false).is_ok());
    }
}
