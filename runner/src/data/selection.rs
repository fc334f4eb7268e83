//! Offset/limit selection of the items of a dataset or task.

use std::ops::Range;

/// Keep the items `offset .. offset + limit` (all from `offset` when `limit` is `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub offset: usize,
    pub limit: Option<usize>,
}

impl Selection {
    /// Everything.
    pub const ALL: Selection = Selection {
        offset: 0,
        limit: None,
    };

    pub fn new(offset: usize, limit: Option<usize>) -> Self {
        Selection { offset, limit }
    }

    /// The selected index range for `len` items (empty when `offset >= len`).
    pub fn range(&self, len: usize) -> Range<usize> {
        let start = self.offset.min(len);
        let end = match self.limit {
            Some(limit) => start.saturating_add(limit).min(len),
            None => len,
        };
        start..end
    }

    /// The selected items, in order.
    pub fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        let range = self.range(items.len());
        items
            .into_iter()
            .skip(range.start)
            .take(range.len())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(Selection::new(2, Some(3)).range(10), 2..5);
        assert_eq!(Selection::new(8, Some(5)).range(10), 8..10);
        assert_eq!(Selection::new(12, None).range(10), 10..10);
        assert_eq!(Selection::ALL.apply(vec![1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(Selection::new(1, Some(1)).apply(vec![1, 2, 3]), vec![2]);
    }
}
