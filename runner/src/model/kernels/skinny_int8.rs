//! Few-row matmul against 8-bit weights: `y[m, n] = x[m, k] · w[n, k]^T` where each row of `w`
//! is kept as signed bytes with one f32 scale per block of [`BLOCK`] values (the layout of
//! GGUF's Q8_0, with an f32 instead of an f16 scale).
//!
//! Decoding reads every weight once per token, so a weight in a quarter of the bytes is read
//! in about a quarter of the time. This is what makes a copy of the target in 8 bits a cheap
//! speculative draft ([`crate::model::Llama::with_int8_decoding`]): it predicts the f32
//! model's next token almost always. The kernel follows [`super::skinny`]: blocks of
//! [`W_ROWS`] weight rows in parallel tasks, tiles of up to [`X_ROWS`] rows of `x`, the
//! widest vector unit chosen at run time, and the block of weight rows further on prefetched
//! (rows this short end before the hardware prefetcher has found them).

use super::widest::VectorPath;
use super::SendPtr;
use rayon::prelude::*;

/// Values per scale.
pub const BLOCK: usize = 32;
/// The most rows of `x` for which the 8-bit weights are used; more rows (a prompt) take the
/// f32 weights and the GEMM, where arithmetic, not reading the weights, is the cost.
pub const MAX_ROWS: usize = 16;
const W_ROWS: usize = 4;
const X_ROWS: usize = 4;
const TASK_ROWS: usize = 32;
/// Blocks of [`W_ROWS`] weight rows prefetched ahead.
const PREFETCH_BLOCKS: usize = 2;

/// A `[rows, cols]` matrix in 8 bits with one f32 scale per [`BLOCK`] values of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    rows: usize,
    cols: usize,
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl Int8Rows {
    /// Rounds a row-major `[rows, cols]` matrix: each block's scale is its largest magnitude
    /// ÷ 127. `Err` says what is wrong with the input.
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<Self, String> {
        if values.len() != rows * cols {
            return Err(format!(
                "{} values for a [{rows}, {cols}] matrix",
                values.len()
            ));
        }
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(format!(
                "rows of {cols} values do not split into blocks of {BLOCK}"
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(format!("value {i} is not finite ({})", values[i]));
        }
        let mut q = vec![0i8; values.len()];
        let mut scales = vec![0f32; values.len() / BLOCK];
        q.par_chunks_mut(BLOCK * 256)
            .zip(scales.par_chunks_mut(256))
            .zip(values.par_chunks(BLOCK * 256))
            .for_each(|((q, s), v)| {
                for ((qb, sb), vb) in q.chunks_mut(BLOCK).zip(s.iter_mut()).zip(v.chunks(BLOCK)) {
                    let amax = vb.iter().fold(0f32, |a, x| a.max(x.abs()));
                    *sb = amax / 127.0;
                    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
                    for (o, &x) in qb.iter_mut().zip(vb) {
                        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
                    }
                }
            });
        Ok(Int8Rows {
            rows,
            cols,
            q,
            scales,
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes the values and scales take.
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len()
    }

    /// The f32 values the bytes stand for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        self.q
            .chunks(BLOCK)
            .zip(&self.scales)
            .flat_map(|(qb, &s)| qb.iter().map(move |&v| v as f32 * s))
            .collect()
    }
}

/// `y[m, n] = x[m, k] · w^T` for `w` of `n` rows of `k` values. Panics only on a length
/// mismatch, which callers rule out: `x.len() == m * k`, `k == w.dims().1`.
pub fn matmul_t(x: &[f32], m: usize, w: &Int8Rows) -> Vec<f32> {
    matmul_t_with(VectorPath::detect(), x, m, w)
}

fn matmul_t_with(kernel: VectorPath, x: &[f32], m: usize, w: &Int8Rows) -> Vec<f32> {
    let (n, k) = w.dims();
    assert_eq!(x.len(), m * k, "skinny_int8: x is not [m, k]");
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let y_ptr = SendPtr(y.as_mut_ptr());
    (0..n.div_ceil(TASK_ROWS)).into_par_iter().for_each(|t| {
        let j0 = t * TASK_ROWS;
        let j1 = (j0 + TASK_ROWS).min(n);
        let mut j = j0;
        while j < j1 {
            let wr = (j1 - j).min(W_ROWS);
            let ahead = (j + PREFETCH_BLOCKS * W_ROWS).min(n);
            let ahead_rows = (n - ahead).min(W_ROWS);
            let prefetch = &w.q[ahead * k..(ahead + ahead_rows) * k];
            let mut i = 0;
            while i < m {
                let xr = (m - i).min(X_ROWS);
                let mut acc = [[0f32; W_ROWS]; X_ROWS];
                let rows = Rows {
                    q: &w.q[j * k..(j + wr) * k],
                    scales: &w.scales[j * k / BLOCK..(j + wr) * k / BLOCK],
                    k,
                };
                let pf = if i == 0 { prefetch } else { &[] };
                kernel.tile(&x[i * k..(i + xr) * k], xr, rows, wr, pf, &mut acc);
                for (r, row) in acc.iter().enumerate().take(xr) {
                    // SAFETY: (i + r, j..j + wr) lies inside y [m, n]; tasks own disjoint
                    // column ranges j0..j1.
                    unsafe { y_ptr.slice((i + r) * n + j, wr) }.copy_from_slice(&row[..wr]);
                }
                i += xr;
            }
            j += wr;
        }
    });
    y
}

/// Up to [`W_ROWS`] rows of an [`Int8Rows`].
#[derive(Clone, Copy)]
struct Rows<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    k: usize,
}

trait Tile {
    /// `acc[r][c] = x[r] · w[c]` for `r < xr`, `c < wr`; asks the cache for `prefetch`.
    fn tile(
        self,
        x: &[f32],
        xr: usize,
        w: Rows<'_>,
        wr: usize,
        prefetch: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    );
}

impl Tile for VectorPath {
    fn tile(
        self,
        x: &[f32],
        xr: usize,
        w: Rows<'_>,
        wr: usize,
        prefetch: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        debug_assert!(x.len() == xr * w.k && w.q.len() == wr * w.k);
        match self {
            // SAFETY: `detect` saw the features; x holds xr rows and w wr rows of k values,
            // k a multiple of BLOCK.
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx512 => unsafe { x86::tile_avx512(x, xr, w, wr, prefetch, acc) },
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx2 => unsafe { x86::tile_avx2(x, xr, w, wr, prefetch, acc) },
            VectorPath::Portable => tile_portable(x, xr, w, wr, acc),
        }
    }
}

fn tile_portable(x: &[f32], xr: usize, w: Rows<'_>, wr: usize, acc: &mut [[f32; W_ROWS]; X_ROWS]) {
    let k = w.k;
    for (r, acc_row) in acc.iter_mut().enumerate().take(xr) {
        let xs = &x[r * k..(r + 1) * k];
        for (c, a) in acc_row.iter_mut().enumerate().take(wr) {
            let qs = &w.q[c * k..(c + 1) * k];
            let ss = &w.scales[c * k / BLOCK..(c + 1) * k / BLOCK];
            *a = xs
                .chunks(BLOCK)
                .zip(qs.chunks(BLOCK))
                .zip(ss)
                .map(|((xb, qb), &s)| {
                    s * xb.iter().zip(qb).map(|(&p, &q)| p * q as f32).sum::<f32>()
                })
                .sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{prefetch_rows, tile_by_shape};
    use super::{Rows, BLOCK, W_ROWS, X_ROWS};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F is available; x holds xr rows and w wr rows of k values, k % BLOCK == 0.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(
        x: &[f32],
        xr: usize,
        w: Rows<'_>,
        wr: usize,
        pf: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        tile_by_shape!(avx512, xr, wr, (x.as_ptr(), w, pf, acc))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const C: usize>(
        x: *const f32,
        w: Rows<'_>,
        pf: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        let k = w.k;
        let q = w.q.as_ptr();
        let mut s = [[_mm512_setzero_ps(); C]; R];
        let mut b = 0;
        while b < k / BLOCK {
            let p = b * BLOCK;
            if b % 2 == 0 {
                prefetch_rows(pf, k, p);
            }
            let mut lo = [_mm512_setzero_ps(); C];
            let mut hi = [_mm512_setzero_ps(); C];
            let mut scale = [_mm512_setzero_ps(); C];
            for c in 0..C {
                let at = q.add(c * k + p);
                lo[c] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(at.cast())));
                hi[c] =
                    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(at.add(16).cast())));
                scale[c] = _mm512_set1_ps(*w.scales.get_unchecked(c * k / BLOCK + b));
            }
            for (r, sr) in s.iter_mut().enumerate() {
                let x0 = _mm512_loadu_ps(x.add(r * k + p));
                let x1 = _mm512_loadu_ps(x.add(r * k + p + 16));
                for c in 0..C {
                    let t = _mm512_fmadd_ps(x1, hi[c], _mm512_mul_ps(x0, lo[c]));
                    sr[c] = _mm512_fmadd_ps(t, scale[c], sr[c]);
                }
            }
            b += 1;
        }
        for r in 0..R {
            for c in 0..C {
                acc[r][c] = _mm512_reduce_add_ps(s[r][c]);
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA are available; x holds xr rows and w wr rows of k values, k % BLOCK == 0.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(
        x: &[f32],
        xr: usize,
        w: Rows<'_>,
        wr: usize,
        pf: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        tile_by_shape!(avx2, xr, wr, (x.as_ptr(), w, pf, acc))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const C: usize>(
        x: *const f32,
        w: Rows<'_>,
        pf: &[i8],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        let k = w.k;
        let q = w.q.as_ptr();
        let mut s = [[_mm256_setzero_ps(); C]; R];
        let mut b = 0;
        while b < k / BLOCK {
            let p = b * BLOCK;
            if b % 2 == 0 {
                prefetch_rows(pf, k, p);
            }
            let scale: [__m256; C] =
                std::array::from_fn(|c| _mm256_set1_ps(*w.scales.get_unchecked(c * k / BLOCK + b)));
            let mut t = [[_mm256_setzero_ps(); C]; R];
            for part in 0..BLOCK / 8 {
                let wv: [__m256; C] = std::array::from_fn(|c| {
                    let at = q.add(c * k + p + part * 8);
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(at.cast())))
                });
                for (r, tr) in t.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.add(r * k + p + part * 8));
                    for c in 0..C {
                        tr[c] = _mm256_fmadd_ps(xv, wv[c], tr[c]);
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    s[r][c] = _mm256_fmadd_ps(t[r][c], scale[c], s[r][c]);
                }
            }
            b += 1;
        }
        for r in 0..R {
            for c in 0..C {
                let v = s[r][c];
                let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
                let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
                acc[r][c] = _mm_cvtss_f32(one);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;

    #[test]
    fn every_shape_and_path_matches_the_dequantized_definition() {
        let paths = VectorPath::available();
        for &(m, k, n) in &[
            (1, 32, 1),
            (1, 576, 70),
            (2, 64, 5),
            (3, 96, 33),
            (5, 576, 97),
            (16, 1536, 41),
        ] {
            let x = values(m * k, 1);
            let w = Int8Rows::quantize(&values(n * k, 2), n, k).unwrap();
            let dense = w.dequantize();
            let want: Vec<f64> = (0..m * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    (0..k)
                        .map(|p| x[i * k + p] as f64 * dense[j * k + p] as f64)
                        .sum()
                })
                .collect();
            for &path in &paths {
                let got = matmul_t_with(path, &x, m, &w);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                        "{path:?} {m}x{k}x{n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounding_stays_within_half_a_step_and_bad_input_is_refused() {
        let v = values(4 * 64, 3);
        let w = Int8Rows::quantize(&v, 4, 64).unwrap();
        assert_eq!(w.bytes(), 4 * 64 + 4 * 8);
        for (b, (orig, back)) in v
            .chunks(BLOCK)
            .zip(w.dequantize().chunks(BLOCK))
            .enumerate()
        {
            let step = orig.iter().fold(0f32, |a, x| a.max(x.abs())) / 127.0;
            for (o, r) in orig.iter().zip(back) {
                assert!((o - r).abs() <= 0.5 * step + 1e-7, "block {b}: {o} vs {r}");
            }
        }
        let zeros = Int8Rows::quantize(&[0.0; 32], 1, 32).unwrap();
        assert_eq!(matmul_t(&[1.0; 32], 1, &zeros), vec![0.0]);
        assert!(Int8Rows::quantize(&[0.0; 33], 1, 33)
            .unwrap_err()
            .contains("blocks of 32"));
        assert!(Int8Rows::quantize(&[0.0; 32], 2, 32)
            .unwrap_err()
            .contains("[2, 32]"));
        let mut nan = vec![0.0; 32];
        nan[5] = f32::NAN;
        assert!(Int8Rows::quantize(&nan, 1, 32)
            .unwrap_err()
            .contains("value 5"));
    }
}
