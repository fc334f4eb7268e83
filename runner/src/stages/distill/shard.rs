//! Deterministic, disjoint, contiguous shards: shard k of K gets items
//! `[k*n/K, (k+1)*n/K)`, so concatenating shards in index order restores the input order.

use std::ops::Range;

pub fn shard_range(items: usize, index: usize, count: usize) -> Range<usize> {
    let count = count.max(1);
    let start = items * index / count;
    let end = items * (index + 1) / count;
    start..end
}

/// The shard index from `JOB_COMPLETION_INDEX` (a Kubernetes Indexed Job), if set.
pub fn completion_index_from_env() -> Option<usize> {
    std::env::var("JOB_COMPLETION_INDEX")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_everything_once_in_order() {
        for n in [0usize, 1, 7, 64, 65] {
            for k in 1..=5 {
                let ranges: Vec<_> = (0..k).map(|i| shard_range(n, i, k)).collect();
                let flat: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n={n} k={k}");
            }
        }
    }
}
