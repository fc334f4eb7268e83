//! Python's `random.Random` (MT19937) for integer seeds, enough of it to reproduce
//! `random.Random(seed).sample(population, k)` exactly.
//!
//! lm-evaluation-harness draws few-shot examples with `random.Random(1234).sample(docs, k)`,
//! one call per evaluated document in order; with this generator our few-shot prompts are
//! the same as lm-eval's for the same shot pool.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// Mersenne Twister seeded as CPython's `random.seed(int)`.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl PyRandom {
    /// `random.Random(seed)`: the absolute value of the seed, split into 32-bit words (least
    /// significant first), feeds `init_by_array`.
    pub fn new(seed: i64) -> Self {
        let n = seed.unsigned_abs();
        let mut key = vec![(n & 0xffff_ffff) as u32];
        if n >> 32 != 0 {
            key.push((n >> 32) as u32);
        }
        let mut rng = PyRandom {
            state: [0; N],
            index: N,
        };
        rng.init_by_array(&key);
        rng
    }

    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..N {
            let prev = self.state[i - 1];
            self.state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let mut i = 1usize;
        let mut j = 0usize;
        let mut k = N.max(key.len());
        while k > 0 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.state[0] = self.state[N - 1];
                i = 1;
            }
            k -= 1;
        }
        self.state[0] = 0x8000_0000;
    }

    fn twist(&mut self) {
        for kk in 0..N {
            let y = (self.state[kk] & UPPER_MASK) | (self.state[(kk + 1) % N] & LOWER_MASK);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[kk] = self.state[(kk + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// `genrand_uint32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for `k <= 64`.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        match k {
            0 => 0,
            1..=32 => u64::from(self.next_u32() >> (32 - k)),
            _ => {
                let k = k.min(64);
                let low = u64::from(self.next_u32());
                let high = u64::from(self.next_u32() >> (64 - k));
                low | (high << 32)
            }
        }
    }

    /// `_randbelow(n)` (rejection sampling on `n.bit_length()` bits); `n` must be > 0.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        let k = u64::BITS - n.leading_zeros();
        let mut r = self.getrandbits(k);
        while r >= n {
            r = self.getrandbits(k);
        }
        r
    }

    /// `random.sample(range(n), k)`: `k` distinct indices below `n`, in selection order.
    /// Returns `None` when `k > n` (Python raises `ValueError`).
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Option<Vec<usize>> {
        if k > n {
            return None;
        }
        let mut result = Vec::with_capacity(k);
        let mut setsize = 21usize;
        if k > 5 {
            let exponent = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.saturating_pow(exponent.ceil() as u32);
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow((n - i) as u64) as usize;
                result.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = std::collections::HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n as u64) as usize;
                while selected.contains(&j) {
                    j = self.randbelow(n as u64) as usize;
                }
                selected.insert(j);
                result.push(j);
            }
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values printed by CPython 3: `r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]`
    // and `random.Random(1234).sample(range(7473), 5)`.
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(1234);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [4150886329, 3342196574, 1892932127]
        );
        let mut r = PyRandom::new(1234);
        assert_eq!(
            r.sample_indices(7473, 5),
            Some(vec![6374, 3610, 957, 61, 742])
        );
        // Successive calls share the state (pool branch for small n).
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample_indices(10, 3), Some(vec![7, 1, 0]));
        assert_eq!(r.sample_indices(10, 3), Some(vec![1, 0, 9]));
        // k > 5 changes the set-size threshold: pool branch, then set branch.
        let mut r = PyRandom::new(42);
        assert_eq!(
            r.sample_indices(200, 26),
            Some(vec![
                163, 28, 6, 189, 70, 62, 57, 35, 188, 26, 173, 139, 22, 151, 108, 8, 7, 23, 55, 59,
                129, 154, 197, 143, 50, 166
            ])
        );
        assert_eq!(
            r.sample_indices(1119, 25),
            Some(vec![
                1116, 859, 451, 919, 569, 13, 326, 865, 696, 318, 440, 689, 209, 189, 778, 198,
                735, 704, 541, 88, 940, 1098, 255, 775, 161
            ])
        );
        // Negative and multi-word seeds, more than 32 bits.
        let mut r = PyRandom::new(-7);
        assert_eq!(r.getrandbits(40), 1040772936760);
        assert_eq!(r.randbelow(5), 1);
        let mut r = PyRandom::new((1 << 40) + 5);
        assert_eq!(r.next_u32(), 2166296868);
        assert_eq!(PyRandom::new(3).sample_indices(2, 3), None);
    }
}
