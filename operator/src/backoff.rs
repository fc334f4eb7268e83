//! Exponential backoff of failed reconciles, per object: the first retry after
//! `Settings::requeue_error`, then doubling up to `Settings::requeue_error_max`; a successful
//! reconcile starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The delay before retry number `failures` (1 = the first failure): `base × 2^(failures-1)`,
/// at most `max`.
pub fn delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exponent).min(max)
}

/// Consecutive failures per object (`namespace/name`).
#[derive(Debug)]
pub struct ErrorBackoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Backoff from `base` doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        ErrorBackoff {
            base,
            max: max.max(base),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure of `key` and returns the delay before its retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = match self.failures.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        delay(self.base, self.max, *n)
    }

    /// Forgets the failures of `key` (it reconciled successfully, or is gone).
    pub fn succeeded(&self, key: &str) {
        let mut map = match self.failures.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let s = Duration::from_secs;
        assert_eq!(delay(s(15), s(600), 1), s(15));
        assert_eq!(delay(s(15), s(600), 2), s(30));
        assert_eq!(delay(s(15), s(600), 4), s(120));
        assert_eq!(delay(s(15), s(600), 6), s(480));
        assert_eq!(delay(s(15), s(600), 7), s(600));
        assert_eq!(delay(s(15), s(600), u32::MAX), s(600));
        let b = ErrorBackoff::new(s(1), s(8));
        let got: Vec<Duration> = (0..5).map(|_| b.failed("ns/a")).collect();
        assert_eq!(got, [s(1), s(2), s(4), s(8), s(8)]);
        assert_eq!(b.failed("ns/b"), s(1), "per object");
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a"), s(1));
    }
}
