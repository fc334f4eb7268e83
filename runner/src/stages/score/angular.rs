//! Angular distance between hidden states and ShortGPT Block Influence, accumulated batch by
//! batch (only sums are kept, never the hidden states of earlier batches).
//!
//! Per token, with `h_l` the hidden state entering layer `l` (`h_0` = embeddings, `h_L` = the
//! last layer's output before the final norm): `cos = <a, b> / (|a| |b|)` in f64, clamped to
//! [-1, 1]; `d = arccos(cos) / π`. `d(l, n)` compares `h_l` with `h_{l+n}`.
//!
//! Degenerate vectors: a zero vector has no direction. When both are zero, `cos = 1` (nothing
//! changed, `d = 0`); when exactly one is, `cos = 0` (`d = 1/2`). Such tokens are counted and
//! reported. Non-finite hidden states (NaN/inf from broken weights) are an error.

use crate::stages::{Result, StageError};
use candle_core::{DType, Device, Storage, Tensor};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Tokens per parallel task.
const TOKENS_PER_TASK: usize = 32;

/// Which pairs `(l, l + n)` are compared: `n` in the block sizes, plus `n = 1` for BI.
#[derive(Debug, Clone)]
struct Pairs {
    num_layers: usize,
    /// Distinct block sizes (incl. 1), ascending.
    sizes: Vec<usize>,
    /// Offset of size `sizes[i]` in the flat pair arrays.
    offsets: Vec<usize>,
    total: usize,
}

impl Pairs {
    fn new(num_layers: usize, block_sizes: &[usize]) -> Self {
        let mut sizes: Vec<usize> = block_sizes.iter().copied().chain([1]).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut offsets = Vec::with_capacity(sizes.len());
        let mut total = 0;
        for &n in &sizes {
            offsets.push(total);
            total += num_layers + 1 - n;
        }
        Self {
            num_layers,
            sizes,
            offsets,
            total,
        }
    }
}

/// Sums over tokens, flat over all pairs.
#[derive(Debug, Clone)]
struct Sums {
    d_all: Vec<f64>,
    d_last: Vec<f64>,
    cos_all: Vec<f64>,
    cos_last: Vec<f64>,
    tokens: u64,
    sequences: u64,
    degenerate: u64,
}

impl Sums {
    fn new(total: usize) -> Self {
        Self {
            d_all: vec![0.0; total],
            d_last: vec![0.0; total],
            cos_all: vec![0.0; total],
            cos_last: vec![0.0; total],
            tokens: 0,
            sequences: 0,
            degenerate: 0,
        }
    }

    fn add(&mut self, other: &Sums) {
        for (a, b) in [
            (&mut self.d_all, &other.d_all),
            (&mut self.d_last, &other.d_last),
            (&mut self.cos_all, &other.cos_all),
            (&mut self.cos_last, &other.cos_last),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.tokens += other.tokens;
        self.sequences += other.sequences;
        self.degenerate += other.degenerate;
    }
}

/// Accumulates the sums of one scoring pass.
pub struct AngularAccumulator {
    pairs: Pairs,
    sums: Sums,
}

/// The finished scores. Vectors are indexed by start layer `l`; `d_*[n]` has `L + 1 - n`
/// entries, `bi*` has `L`.
#[derive(Debug, Clone)]
pub struct AngularScores {
    pub d_lasttok: BTreeMap<usize, Vec<f64>>,
    pub d_alltok: BTreeMap<usize, Vec<f64>>,
    /// `1 − mean cos(h_l, h_{l+1})` over all tokens.
    pub bi: Vec<f64>,
    /// The same over the last token of each sequence.
    pub bi_lasttok: Vec<f64>,
    pub tokens: u64,
    pub sequences: u64,
    /// Token comparisons with a zero vector (see the module docs).
    pub degenerate: u64,
}

/// f32 slices of CPU tensors, borrowed for the duration of a batch.
struct HostStates {
    tensors: Vec<Tensor>,
}

impl HostStates {
    fn new(hidden: &[Tensor]) -> Result<Self> {
        let tensors = hidden
            .iter()
            .map(|h| {
                h.to_device(&Device::Cpu)?
                    .to_dtype(DType::F32)?
                    .contiguous()
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { tensors })
    }

    fn with_slices<R>(&self, f: impl FnOnce(&[&[f32]]) -> Result<R>) -> Result<R> {
        let guards: Vec<_> = self
            .tensors
            .iter()
            .map(|t| t.storage_and_layout())
            .collect();
        let mut slices = Vec::with_capacity(guards.len());
        for (storage, layout) in &guards {
            let Storage::Cpu(cpu) = &**storage else {
                return Err(StageError::Input(
                    "hidden states are not on the CPU after copying".into(),
                ));
            };
            let data = cpu.as_slice::<f32>()?;
            let start = layout.start_offset();
            slices.push(&data[start..start + layout.shape().elem_count()]);
        }
        f(&slices)
    }
}

/// `Σ a_i b_i` (8 independent lanes so it vectorises).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// The tokens `chunk` (`(row, position)`) of a batch: `states[l]` is `h_l` `[b, t, width]`.
struct BatchView<'a> {
    states: &'a [&'a [f32]],
    t: usize,
    width: usize,
    lengths: &'a [usize],
    pairs: &'a Pairs,
}

impl BatchView<'_> {
    /// Sums over `chunk`. Each token's states are widened to f64 once (products of two f32
    /// values are exact in f64), then every pair's dot product is taken in f64.
    #[inline(always)]
    fn accumulate(&self, chunk: &[(usize, usize)]) -> Result<Sums> {
        let pairs = self.pairs;
        let (w, states_n) = (self.width, pairs.num_layers + 1);
        let mut sums = Sums::new(pairs.total);
        let mut wide = vec![0f64; states_n * w];
        let mut norms = vec![0f64; states_n];
        for &(r, p) in chunk {
            let at = (r * self.t + p) * w;
            for (l, (dst, n)) in wide.chunks_exact_mut(w).zip(norms.iter_mut()).enumerate() {
                for (d, &x) in dst.iter_mut().zip(&self.states[l][at..at + w]) {
                    *d = x as f64;
                }
                *n = dot(dst, dst).sqrt();
                if !n.is_finite() {
                    return Err(StageError::Input(format!(
                        "hidden state h_{l} is not finite (NaN or infinity) at batch row {r}, position {p}: the model's weights or activations are broken"
                    )));
                }
            }
            let vec = |l: usize| &wide[l * w..(l + 1) * w];
            let last = p + 1 == self.lengths[r];
            for (&n, &off) in pairs.sizes.iter().zip(&pairs.offsets) {
                for l in 0..=pairs.num_layers - n {
                    let (cos, degenerate) = cosine(dot(vec(l), vec(l + n)), norms[l], norms[l + n]);
                    let d = angular_distance(cos);
                    let i = off + l;
                    sums.d_all[i] += d;
                    sums.cos_all[i] += cos;
                    if last {
                        sums.d_last[i] += d;
                        sums.cos_last[i] += cos;
                    }
                    sums.degenerate += degenerate as u64;
                }
            }
            sums.tokens += 1;
            sums.sequences += last as u64;
        }
        Ok(sums)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn accumulate_avx512(&self, chunk: &[(usize, usize)]) -> Result<Sums> {
        self.accumulate(chunk)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn accumulate_avx2(&self, chunk: &[(usize, usize)]) -> Result<Sums> {
        self.accumulate(chunk)
    }

    /// [`Self::accumulate`] compiled for the widest vector unit the CPU has (same results:
    /// only the lane width changes, not the order of the sums).
    fn accumulate_dispatch(&self, chunk: &[(usize, usize)]) -> Result<Sums> {
        match crate::model::kernels::widest::VectorPath::detect() {
            // SAFETY: the CPU supports AVX-512F (`detect` checked).
            #[cfg(target_arch = "x86_64")]
            crate::model::kernels::widest::VectorPath::Avx512 => {
                return unsafe { self.accumulate_avx512(chunk) }
            }
            // SAFETY: the CPU supports AVX2 and FMA (`detect` checked).
            #[cfg(target_arch = "x86_64")]
            crate::model::kernels::widest::VectorPath::Avx2 => {
                return unsafe { self.accumulate_avx2(chunk) }
            }
            crate::model::kernels::widest::VectorPath::Portable => {}
        }
        self.accumulate(chunk)
    }
}

/// cos of two vectors given their norms, with the degenerate rules of the module docs;
/// the flag says whether the pair was degenerate.
fn cosine(dot: f64, na: f64, nb: f64) -> (f64, bool) {
    if na == 0.0 || nb == 0.0 {
        return (if na == nb { 1.0 } else { 0.0 }, true);
    }
    ((dot / (na * nb)).clamp(-1.0, 1.0), false)
}

/// Angular distance in [0, 1] of a clamped cosine.
pub fn angular_distance(cos: f64) -> f64 {
    cos.clamp(-1.0, 1.0).acos() / std::f64::consts::PI
}

impl AngularAccumulator {
    /// `num_layers` decoder layers (`L + 1` hidden states), distances for `block_sizes`.
    pub fn new(num_layers: usize, block_sizes: &[usize]) -> Self {
        let pairs = Pairs::new(num_layers, block_sizes);
        let sums = Sums::new(pairs.total);
        Self { pairs, sums }
    }

    /// Adds one batch: `hidden` = `h_0 .. h_L`, each `[b, t, hidden]`; row `r` has
    /// `lengths[r]` real tokens (the rest is padding and ignored).
    pub fn add_batch(&mut self, hidden: &[Tensor], lengths: &[usize]) -> Result<()> {
        let pairs = &self.pairs;
        if hidden.len() != pairs.num_layers + 1 {
            return Err(StageError::Input(format!(
                "{} hidden states for a model of {} layers (expected {})",
                hidden.len(),
                pairs.num_layers,
                pairs.num_layers + 1
            )));
        }
        let (b, t, width) = hidden[0].dims3()?;
        if lengths.len() != b || lengths.iter().any(|&l| l > t) {
            return Err(StageError::Input(format!(
                "row lengths {lengths:?} do not fit a batch of shape [{b}, {t}]"
            )));
        }
        let host = HostStates::new(hidden)?;
        let tokens: Vec<(usize, usize)> = lengths
            .iter()
            .enumerate()
            .flat_map(|(r, &len)| (0..len).map(move |p| (r, p)))
            .collect();
        let partials = host.with_slices(|states| {
            let view = BatchView {
                states,
                t,
                width,
                lengths,
                pairs,
            };
            tokens
                .par_chunks(TOKENS_PER_TASK)
                .map(|chunk| view.accumulate_dispatch(chunk))
                .collect::<Result<Vec<Sums>>>()
        })?;
        // Summed in a fixed order, so the result does not depend on thread scheduling.
        for p in &partials {
            self.sums.add(p);
        }
        Ok(())
    }

    /// Means over the tokens seen so far. Errors when no token was added.
    pub fn finish(&self) -> Result<AngularScores> {
        let s = &self.sums;
        if s.tokens == 0 || s.sequences == 0 {
            return Err(StageError::Input(
                "no calibration tokens were scored".into(),
            ));
        }
        let (tok, seq) = (s.tokens as f64, s.sequences as f64);
        let mut d_lasttok = BTreeMap::new();
        let mut d_alltok = BTreeMap::new();
        let mut bi = Vec::new();
        let mut bi_lasttok = Vec::new();
        for (&n, &off) in self.pairs.sizes.iter().zip(&self.pairs.offsets) {
            let range = off..off + self.pairs.num_layers + 1 - n;
            d_alltok.insert(n, s.d_all[range.clone()].iter().map(|v| v / tok).collect());
            d_lasttok.insert(n, s.d_last[range.clone()].iter().map(|v| v / seq).collect());
            if n == 1 {
                bi = s.cos_all[range.clone()]
                    .iter()
                    .map(|v| 1.0 - v / tok)
                    .collect();
                bi_lasttok = s.cos_last[range].iter().map(|v| 1.0 - v / seq).collect();
            }
        }
        Ok(AngularScores {
            d_lasttok,
            d_alltok,
            bi,
            bi_lasttok,
            tokens: s.tokens,
            sequences: s.sequences,
            degenerate: s.degenerate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rows: &[&[f32]]) -> Tensor {
        let w = rows[0].len();
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_vec(flat, (1, rows.len(), w), &Device::Cpu).unwrap()
    }

    #[test]
    fn distances_of_known_vectors() {
        // One layer: h_0 -> h_1. Token 0 turns 90°, token 1 (last) 180°, token 2 is padding.
        let h0 = state(&[&[1.0, 0.0], &[1.0, 0.0], &[5.0, 5.0]]);
        let h1 = state(&[&[0.0, 2.0], &[-3.0, 0.0], &[1.0, 1.0]]);
        let mut acc = AngularAccumulator::new(1, &[1]);
        acc.add_batch(&[h0, h1], &[2]).unwrap();
        let s = acc.finish().unwrap();
        assert!((s.d_alltok[&1][0] - 0.75).abs() < 1e-12);
        assert!((s.d_lasttok[&1][0] - 1.0).abs() < 1e-12);
        assert!((s.bi[0] - 1.5).abs() < 1e-12);
        assert!((s.bi_lasttok[0] - 2.0).abs() < 1e-12);
        assert_eq!((s.tokens, s.sequences, s.degenerate), (2, 1, 0));
    }

    #[test]
    fn zero_vectors_are_finite_and_nan_is_an_error() {
        let z = state(&[&[0.0, 0.0]]);
        let one = state(&[&[1.0, 0.0]]);
        let mut acc = AngularAccumulator::new(2, &[1, 2]);
        acc.add_batch(&[z.clone(), z.clone(), one.clone()], &[1])
            .unwrap();
        let s = acc.finish().unwrap();
        assert_eq!(s.d_alltok[&1], vec![0.0, 0.5]);
        assert_eq!(s.d_alltok[&2], vec![0.5]);
        assert_eq!(s.degenerate, 3);
        let nan = state(&[&[f32::NAN, 0.0]]);
        let mut acc = AngularAccumulator::new(1, &[1]);
        let e = acc.add_batch(&[one, nan], &[1]).unwrap_err().to_string();
        assert!(e.contains("h_1") && e.contains("not finite"), "{e}");
        assert!(AngularAccumulator::new(1, &[1]).finish().is_err());
    }

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.25 - 3.0).collect();
        let b: Vec<f64> = (0..37).map(|i| (i as f64).sin()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-12);
    }
}
