//! Few-row matmul against a row-major weight, `y[m, n] = x[m, k] · w[n, k]^T` for `m ≤`
//! [`MAX_ROWS`]: the projections and LM head of decoding (one to a few tokens per step).
//!
//! At such `m` the work is reading `w` once; a general GEMM packs and tiles for reuse that is
//! not there. This kernel streams each block of [`W_ROWS`] weight rows once, while it is in L1,
//! against every row of `x` in groups of [`X_ROWS`], with one vector accumulator per (x row,
//! w row) pair and one horizontal sum at the end. Blocks of weight rows run in parallel.
//! The widest vector unit the CPU has is chosen at run time (AVX-512F, else AVX2 + FMA, else
//! portable code), so one binary runs on any x86-64 CPU.

use super::widest::VectorPath;
use super::SendPtr;
use rayon::prelude::*;

/// The most rows of `x` for which this kernel is used (measured crossover with the GEMM:
/// `pruneforge bench matmul`, see docs/RESULTS.md).
pub const MAX_ROWS: usize = 48;
/// Weight rows per register tile.
const W_ROWS: usize = 4;
/// Rows of `x` per register tile.
const X_ROWS: usize = 4;
/// Weight rows per parallel task.
const TASK_ROWS: usize = 32;
/// How many blocks of [`W_ROWS`] weight rows ahead the kernel prefetches.
/// (Measured with `bench matmul` on the LM head: 1.4x at one row, 1.1x at 16, against none.)
const PREFETCH_BLOCKS: usize = 2;

/// `y[m, n] = x[m, k] · w[n, k]^T` (all row-major, contiguous). Panics only on a length
/// mismatch, which callers rule out: `x.len() == m * k`, `w.len() == n * k`.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    matmul_t_with(VectorPath::detect(), x, m, k, w, n)
}

/// [`matmul_t`] on a given code path (tests compare every path the CPU has).
fn matmul_t_with(
    kernel: VectorPath,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "skinny: x is not [m, k]");
    assert_eq!(w.len(), n * k, "skinny: w is not [n, k]");
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let y_ptr = SendPtr(y.as_mut_ptr());
    let tasks = n.div_ceil(TASK_ROWS);
    (0..tasks).into_par_iter().for_each(|t| {
        let j0 = t * TASK_ROWS;
        let j1 = (j0 + TASK_ROWS).min(n);
        columns(kernel, x, m, k, w, j0..j1, 1.0, |i, j, vals| {
            // SAFETY: (i, j..j + vals.len()) lies inside y [m, n]; tasks own disjoint column
            // ranges j0..j1, so no two tasks write the same element.
            unsafe { y_ptr.slice(i * n + j, vals.len()) }.copy_from_slice(vals)
        });
    });
    y
}

/// `y[m, n] = scale * x[m, k] · w[n, k]^T` into `y` on the calling thread, for callers that
/// are already one task of a parallel loop (attention's scores during decoding). Each element
/// is the same sum, in the same order, as in [`matmul_t`].
pub fn matmul_t_serial(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    scale: f32,
    y: &mut [f32],
) {
    assert_eq!(x.len(), m * k, "skinny: x is not [m, k]");
    assert_eq!(w.len(), n * k, "skinny: w is not [n, k]");
    assert_eq!(y.len(), m * n, "skinny: y is not [m, n]");
    columns(
        VectorPath::detect(),
        x,
        m,
        k,
        w,
        0..n,
        scale,
        |i, j, vals| y[i * n + j..i * n + j + vals.len()].copy_from_slice(vals),
    );
}

/// Output columns `cols` of `scale * x · w^T`, tile by tile: `write(i, j, vals)` receives row
/// `i`, columns `j..j + vals.len()`.
#[allow(clippy::too_many_arguments)]
fn columns(
    kernel: VectorPath,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    cols: std::ops::Range<usize>,
    scale: f32,
    mut write: impl FnMut(usize, usize, &[f32]),
) {
    let n_all = w.len() / k.max(1);
    let mut j = cols.start;
    while j < cols.end {
        let wr = (cols.end - j).min(W_ROWS);
        let w_blk = &w[j * k..(j + wr) * k];
        // A block of weight rows further on, fetched while this one runs: rows this short end
        // before the hardware prefetcher has found them. Each group of x rows asks for its
        // share of that block's rows.
        let ahead = (j + PREFETCH_BLOCKS * W_ROWS).min(n_all);
        let ahead_rows = (n_all - ahead).min(W_ROWS);
        let groups = m.div_ceil(X_ROWS).max(1);
        let share = ahead_rows.div_ceil(groups);
        let mut i = 0;
        while i < m {
            let xr = (m - i).min(X_ROWS);
            let x_blk = &x[i * k..(i + xr) * k];
            let mut acc = [[0f32; W_ROWS]; X_ROWS];
            let g = i / X_ROWS;
            let r0 = (g * share).min(ahead_rows);
            let r1 = ((g + 1) * share).min(ahead_rows);
            let prefetch = &w[(ahead + r0) * k..(ahead + r1) * k];
            kernel.tile(x_blk, xr, w_blk, wr, k, prefetch, &mut acc);
            for (r, row) in acc.iter_mut().enumerate().take(xr) {
                if scale != 1.0 {
                    row.iter_mut().for_each(|v| *v *= scale);
                }
                write(i + r, j, &row[..wr]);
            }
            i += xr;
        }
        j += wr;
    }
}

/// The register tile on one vector path.
trait Tile {
    /// `acc[r][c] = x_blk[r] · w_blk[c]` for `r < xr`, `c < wr` (rows of length `k`), asking
    /// the cache for `prefetch` (whole rows of length `k`, possibly none) on the way.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        self,
        x_blk: &[f32],
        xr: usize,
        w_blk: &[f32],
        wr: usize,
        k: usize,
        prefetch: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    );
}

impl Tile for VectorPath {
    fn tile(
        self,
        x_blk: &[f32],
        xr: usize,
        w_blk: &[f32],
        wr: usize,
        k: usize,
        prefetch: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        match self {
            // SAFETY: `detect` saw the feature; the slices hold xr and wr rows of k, and
            // `prefetch` whole rows of k.
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx512 => unsafe {
                x86::tile_avx512(x_blk, xr, w_blk, wr, k, prefetch, acc)
            },
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx2 => unsafe { x86::tile_avx2(x_blk, xr, w_blk, wr, k, prefetch, acc) },
            VectorPath::Portable => tile_portable(x_blk, xr, w_blk, wr, k, acc),
        }
    }
}

fn tile_portable(
    x_blk: &[f32],
    xr: usize,
    w_blk: &[f32],
    wr: usize,
    k: usize,
    acc: &mut [[f32; W_ROWS]; X_ROWS],
) {
    for (r, acc_row) in acc.iter_mut().enumerate().take(xr) {
        let xs = &x_blk[r * k..(r + 1) * k];
        for (c, a) in acc_row.iter_mut().enumerate().take(wr) {
            let ws = &w_blk[c * k..(c + 1) * k];
            *a = xs.iter().zip(ws).map(|(p, q)| p * q).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{prefetch_rows, tile_by_shape};
    use super::{W_ROWS, X_ROWS};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F is available; `x` holds `xr` rows and `w` holds `wr` rows of `k` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(
        x: &[f32],
        xr: usize,
        w: &[f32],
        wr: usize,
        k: usize,
        prefetch: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        debug_assert!(
            x.len() >= xr * k && w.len() >= wr * k && prefetch.len().is_multiple_of(k.max(1))
        );
        tile_by_shape!(avx512, xr, wr, (x.as_ptr(), w.as_ptr(), k, prefetch, acc))
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        pf: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        let mut s = [[_mm512_setzero_ps(); C]; R];
        let full = k / 16 * 16;
        let mut p = 0;
        while p < full {
            prefetch_rows(pf, k, p);
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add(c * k + p));
            }
            for (r, sr) in s.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add(r * k + p));
                for c in 0..C {
                    sr[c] = _mm512_fmadd_ps(xv, wv[c], sr[c]);
                }
            }
            p += 16;
        }
        if p < k {
            let mask: __mmask16 = (1u16 << (k - p)) - 1;
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add(c * k + p));
            }
            for (r, sr) in s.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add(r * k + p));
                for c in 0..C {
                    sr[c] = _mm512_fmadd_ps(xv, wv[c], sr[c]);
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                acc[r][c] = _mm512_reduce_add_ps(s[r][c]);
            }
        }
    }

    /// # Safety
    /// AVX2 and FMA are available; `x` holds `xr` rows and `w` holds `wr` rows of `k` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(
        x: &[f32],
        xr: usize,
        w: &[f32],
        wr: usize,
        k: usize,
        prefetch: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        debug_assert!(
            x.len() >= xr * k && w.len() >= wr * k && prefetch.len().is_multiple_of(k.max(1))
        );
        tile_by_shape!(avx2, xr, wr, (x.as_ptr(), w.as_ptr(), k, prefetch, acc))
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        pf: &[f32],
        acc: &mut [[f32; W_ROWS]; X_ROWS],
    ) {
        let mut s = [[_mm256_setzero_ps(); C]; R];
        let full = k / 8 * 8;
        let mut p = 0;
        while p < full {
            if p % 16 == 0 {
                prefetch_rows(pf, k, p);
            }
            let mut wv = [_mm256_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(w.add(c * k + p));
            }
            for (r, sr) in s.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(r * k + p));
                for c in 0..C {
                    sr[c] = _mm256_fmadd_ps(xv, wv[c], sr[c]);
                }
            }
            p += 8;
        }
        for r in 0..R {
            for c in 0..C {
                let v = s[r][c];
                let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
                let one = _mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1));
                let mut sum = _mm_cvtss_f32(one);
                for q in p..k {
                    sum += *x.add(r * k + q) * *w.add(c * k + q);
                }
                acc[r][c] = sum;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;

    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
            }
        }
        y
    }

    #[test]
    fn every_shape_and_path_matches_the_definition() {
        let paths = VectorPath::available();
        // m over every tile height, k with and without vector tails, n over tile and task tails.
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 576, 576),
            (2, 17, 5),
            (3, 33, 70),
            (5, 100, 33),
            (7, 8, 3),
            (16, 576, 97),
            (9, 1536, 64),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let want = reference(&x, m, k, &w, n);
            let mut serial = vec![0f32; m * n];
            matmul_t_serial(&x, m, k, &w, n, 0.5, &mut serial);
            let parallel = matmul_t(&x, m, k, &w, n);
            for (s, p) in serial.iter().zip(&parallel) {
                assert_eq!(
                    *s,
                    0.5 * p,
                    "serial and parallel sums differ at {m}x{k}x{n}"
                );
            }
            for &path in &paths {
                let got = matmul_t_with(path, &x, m, k, &w, n);
                for (g, w) in got.iter().zip(&want) {
                    let err = (*g as f64 - w).abs();
                    assert!(
                        err <= 1e-4 * (1.0 + w.abs()),
                        "{path:?} {m}x{k}x{n}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
