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

/// Threads for one GEMM: all of rayon's, or one (inside an already parallel task).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

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
    };
    // SAFETY: every view was bounds-checked above for its shape and strides; `dst` is a
    // unique borrow, so it cannot alias the inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dst.off),
            dst.cs as isize,
            dst.rs as isize,
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
    Ok(())
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
}
