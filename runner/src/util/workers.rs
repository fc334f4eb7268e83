//! Running a command on a thread of rayon's pool.
//!
//! The kernels split their work with rayon. Called from a thread outside the pool (the main
//! thread), every parallel loop is handed to the pool through a queue while the caller blocks
//! on a lock, and a pool thread that went to sleep has to be woken by a futex call. Decoding
//! runs a few hundred such loops per token, some of them a few microseconds long. On the 2-vCPU
//! virtual machines measured, the hand-over cost 20-65 µs per loop (`perf`: futex wake and
//! the scheduler, over half of the samples of a few-row matmul loop), more than the matmul
//! itself. Called from a pool thread, the loop starts in place and the other threads steal
//! from it while they are still spinning.

/// Runs `f` on a thread of rayon's global pool and returns its result (the calling thread
/// waits). Inside, rayon's parallel loops start without the hand-over.
///
/// `f` occupies one pool thread until it returns, so it must not block on a thread of its own
/// that waits for the pool in turn (with one pool thread that would never finish). The
/// runner's blocking work (storage I/O on tokio threads, lease heartbeats) does not use rayon.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn runs_on_a_pool_thread_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let (inside, sum) = on_pool(|| {
            let sum: u64 = (0..1000u64).into_par_iter().sum();
            (rayon::current_thread_index().is_some(), sum)
        });
        assert!(inside);
        assert_eq!(sum, 499_500);
        // Nested: already on the pool, runs in place.
        assert_eq!(on_pool(|| on_pool(|| 7)), 7);
    }
}
