//! A process-wide pool of large f32 buffers for the training kernels.
//!
//! A training step allocates and frees about as much activation memory as the model has
//! layers times a few megabytes, every step. Fresh large allocations come from `mmap`, so
//! every page is faulted in and zeroed again on each step (several percent of a step on a
//! small CPU). Buffers taken here are handed back after the backward pass and reused.
//! [`take`] returns a buffer of the requested length with unspecified contents (callers
//! overwrite it); [`take_zeroed`] clears it.

use std::sync::Mutex;

/// Buffers smaller than this are left to the allocator.
const MIN_POOLED: usize = 16 * 1024;
/// The pool keeps at most this many bytes.
const MAX_POOLED_BYTES: usize = 6 << 30;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` values with unspecified contents.
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len && b.capacity() <= 2 * len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let mut b = pool.swap_remove(i);
            drop(pool);
            if b.len() >= len {
                b.truncate(len);
            } else {
                b.resize(len, 0.0);
            }
            return b;
        }
    }
    vec![0f32; len]
}

/// A zero-filled buffer of `len` values.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    let mut b = take(len);
    b.fill(0.0);
    b
}

/// Returns a buffer to the pool (dropped when small or when the pool is full).
pub fn give(b: Vec<f32>) {
    if b.capacity() < MIN_POOLED {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let bytes: usize = pool.iter().map(|b| b.capacity() * 4).sum();
    if bytes + b.capacity() * 4 <= MAX_POOLED_BYTES {
        pool.push(b);
    }
}

/// Frees every pooled buffer (at the end of a training run).
pub fn clear() {
    POOL.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_fitting_size() {
        let mut a = take(100_000);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        give(a);
        let b = take(90_000);
        assert_eq!(b.len(), 90_000);
        assert_eq!(b.as_ptr(), ptr);
        let z = take_zeroed(90_000);
        assert!(z.iter().all(|&v| v == 0.0));
        give(b);
        give(z);
        clear();
    }
}
