//! A bounds-checked wrapper around the `gemm` crate for strided f32 matrix views.

use candle_core::{bail, Result};
use gemm::Parallelism;

/// A read-only strided matrix view: element `(i, j)` is `data[off + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    data: &'a [f32],
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, rows, cols, cols, 1)
    }

    pub fn strided(
        data: &'a [f32],
        off: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Columns `start..start + len`.
    pub fn cols(self, start: usize, len: usize) -> Self {
        Self {
            off: self.off + start * self.cs,
            cols: len,
            ..self
        }
    }

    /// Rows `start..start + len`.
    pub fn rows(self, start: usize, len: usize) -> Self {
        Self {
            off: self.off + start * self.rs,
            rows: len,
            ..self
        }
    }

    fn check(&self) -> Result<()> {
        check_bounds(
            self.data.len(),
            self.off,
            self.rows,
            self.cols,
            self.rs,
            self.cs,
        )
    }
}

/// A writable strided matrix view.
pub struct ViewMut<'a> {
    data: &'a mut [f32],
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> ViewMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, rows, cols, cols, 1)
    }

    pub fn strided(
        data: &'a mut [f32],
        off: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        Self {
            data,
            off,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Columns `start..start + len`.
    pub fn cols(self, start: usize, len: usize) -> Self {
        Self {
            off: self.off + start * self.cs,
            cols: len,
            ..self
        }
    }

    /// Rows `start..start + len`.
    pub fn rows(self, start: usize, len: usize) -> Self {
        Self {
            off: self.off + start * self.rs,
            rows: len,
            ..self
        }
    }
}

fn check_bounds(
    len: usize,
    off: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = off + (rows - 1) * rs + (cols - 1) * cs;
    if last >= len {
        bail!("gemm view out of bounds: [{rows}, {cols}] strides ({rs}, {cs}) at {off} in {len}")
    }
    Ok(())
}

/// Threads for one GEMM.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// All of rayon's, through the crate's own threading.
    All,
    /// One (inside an already parallel task).
    One,
    /// All of rayon's, each running the crate single-threaded on its own block of `dst`'s
    /// columns (all of `lhs`, that block of `rhs`). For `x · w^T` each thread then packs only
    /// its share of the weight; with the crate's threading every thread packs all of it.
    /// `cargo run --release -p pruneforge --example gemm_layouts` compares the ways.
    ColumnBlocks,
}

/// Column blocks of [`Threads::ColumnBlocks`] start at multiples of this (one AVX-512 vector
/// of f32; aligning to the crate's whole 64-wide tile split 576 columns 320 + 256, which was
/// slower than 288 + 288).
const COLUMN_BLOCK_ALIGN: usize = 16;

/// `dst = scale * lhs · rhs`, or `dst += scale * lhs · rhs` when `accumulate`.
pub fn matmul(
    dst: ViewMut<'_>,
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    scale: f32,
    threads: Threads,
) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.rows != m || dst.cols != n {
        bail!(
            "gemm shape mismatch: [{m}, {k}] x [{}, {n}] -> [{}, {}]",
            rhs.rows,
            dst.rows,
            dst.cols
        )
    }
    lhs.check()?;
    rhs.check()?;
    check_bounds(dst.data.len(), dst.off, dst.rows, dst.cols, dst.rs, dst.cs)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst.data[dst.off + i * dst.rs + j * dst.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    let par = match threads {
        Threads::All => Parallelism::Rayon(rayon::current_num_threads()),
        Threads::One => Parallelism::None,
        Threads::ColumnBlocks => {
            let blocks = rayon::current_num_threads().min(n.div_ceil(COLUMN_BLOCK_ALIGN));
            if blocks > 1 {
                column_blocks(dst, lhs, rhs, accumulate, scale, blocks);
                return Ok(());
            }
            Parallelism::None
        }
    };
    // SAFETY: every view was bounds-checked above for its shape and strides; `dst` is a
    // unique borrow, so it cannot alias the inputs.
    unsafe {
        gemm_into(
            dst.data.as_mut_ptr().add(dst.off),
            dst.rs,
            dst.cs,
            lhs,
            rhs,
            accumulate,
            scale,
            par,
        )
    };
    Ok(())
}

/// [`Threads::ColumnBlocks`] on `blocks` threads, for views [`matmul`] has checked.
fn column_blocks(
    dst: ViewMut<'_>,
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    scale: f32,
    blocks: usize,
) {
    use rayon::prelude::*;
    let n = rhs.cols;
    let per = n.div_ceil(blocks).next_multiple_of(COLUMN_BLOCK_ALIGN);
    let dst_ptr = crate::model::kernels::SendPtr(dst.data.as_mut_ptr());
    let (dst_off, dst_rs, dst_cs) = (dst.off, dst.rs, dst.cs);
    (0..blocks).into_par_iter().for_each(|b| {
        let c0 = b * per;
        if c0 >= n {
            return;
        }
        let cols = per.min(n - c0);
        // SAFETY: `matmul` bounds-checked all three views for their shapes and strides, and
        // this block's columns c0..c0 + cols lie inside them. Blocks write disjoint columns of
        // `dst` (a unique borrow, no alias of the inputs), so no element is written twice.
        unsafe {
            gemm_into(
                dst_ptr.at(dst_off + c0 * dst_cs),
                dst_rs,
                dst_cs,
                lhs,
                rhs.cols(c0, cols),
                accumulate,
                scale,
                Parallelism::None,
            )
        };
    });
}

/// One call of the crate: `dst = scale * lhs · rhs` (`+=` when `accumulate`), `dst` being
/// `lhs.rows × rhs.cols` elements at strides `dst_rs`, `dst_cs` from `dst`.
///
/// # Safety
/// The views are bounds-checked for their shapes and strides; `dst` covers its elements, which
/// nothing else reads or writes meanwhile and which alias neither input.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    scale: f32,
    par: Parallelism,
) {
    gemm::gemm(
        lhs.rows,
        rhs.cols,
        lhs.cols,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs.data.as_ptr().add(lhs.off),
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.data.as_ptr().add(rhs.off),
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_views_multiply_like_the_definition() {
        // a [2,3], b stored as [4,3] and used transposed -> [3,4]
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..12).map(|v| (v as f32) * 0.5 - 1.0).collect();
        let mut c = vec![1f32; 8];
        matmul(
            ViewMut::new(&mut c, 2, 4),
            View::new(&a, 2, 3),
            View::new(&b, 4, 3).t(),
            true,
            2.0,
            Threads::One,
        )
        .unwrap();
        for i in 0..2 {
            for j in 0..4 {
                let want: f32 =
                    1.0 + 2.0 * (0..3).map(|k| a[i * 3 + k] * b[j * 3 + k]).sum::<f32>();
                assert!((c[i * 4 + j] - want).abs() < 1e-5);
            }
        }
        let mut small = vec![0f32; 2];
        assert!(matmul(
            ViewMut::new(&mut small, 1, 2),
            View::new(&a, 1, 3),
            View::new(&b, 3, 4).cols(3, 2),
            false,
            1.0,
            Threads::One
        )
        .is_err());
    }

    #[test]
    fn column_blocks_match_one_thread_on_strided_views() {
        // dst is a column window of a wider buffer (the columns around it must stay put),
        // rhs is a transposed weight; 3 threads give uneven blocks, the last one partial.
        let (m, k, n) = (37usize, 29usize, 200usize);
        let value = |i: usize, seed: usize| ((i * 7919 + seed) % 97) as f32 / 48.0 - 1.0;
        let x: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
        let w: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
        let width = n + 5;
        let start: Vec<f32> = (0..m * width).map(|i| value(i, 3)).collect();
        let run = |threads: Threads, accumulate: bool| {
            let mut buf = start.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap();
            pool.install(|| {
                matmul(
                    ViewMut::strided(&mut buf, 2, m, n, width, 1),
                    View::new(&x, m, k),
                    View::new(&w, n, k).t(),
                    accumulate,
                    0.5,
                    threads,
                )
            })
            .unwrap();
            buf
        };
        for accumulate in [false, true] {
            let one = run(Threads::One, accumulate);
            let blocks = run(Threads::ColumnBlocks, accumulate);
            for i in 0..m {
                for j in 0..width {
                    let at = i * width + j;
                    if (2..2 + n).contains(&j) {
                        let c = j - 2;
                        let dot: f32 = (0..k).map(|p| x[i * k + p] * w[c * k + p]).sum();
                        let want = 0.5 * dot + if accumulate { start[at] } else { 0.0 };
                        assert!((blocks[at] - want).abs() < 1e-4, "({i}, {c})");
                        assert!((blocks[at] - one[at]).abs() < 1e-5, "({i}, {c})");
                    } else {
                        assert_eq!(blocks[at], start[at], "outside the window at ({i}, {j})");
                    }
                }
            }
        }
    }
}
