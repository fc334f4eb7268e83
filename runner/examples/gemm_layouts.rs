//! How to call the `gemm` crate for `y = x · w^T` on the model's shapes: candle's matmul,
//! the crate's own threading on the row-major views, each thread running the crate
//! single-threaded on its slice of rows, each on its block of output columns
//! (`Threads::ColumnBlocks`, what `model::linear` does), and the crate's threading on a
//! weight stored transposed.
//! f32, all of rayon's threads, median of repeats, GFLOP/s.
//!
//!     cargo run --release -p pruneforge --example gemm_layouts

#[path = "common/timing.rs"]
mod timing;
use candle_core::{Device, Tensor};
use pruneforge::model::train_kernels::gemm::{matmul, Threads, View, ViewMut};
use rayon::prelude::*;

fn main() -> candle_core::Result<()> {
    // (rows, k, n): an 8x128 forward, an evaluation batch, the LM head on 256 positions,
    // and SmolLM2's q|k|v (960), o (576), gate|up (3072) and down (k 1536) projections.
    let shapes = [
        (1024, 576, 960),
        (1024, 576, 3072),
        (1024, 1536, 576),
        (200, 576, 960),
        (200, 576, 576),
        (200, 576, 3072),
        (200, 1536, 576),
        (100, 576, 576),
        (256, 576, 49152),
    ];
    let threads = rayon::current_num_threads();
    println!("y[m, n] = x[m, k] · w[n, k]^T, f32, {threads} threads, GFLOP/s");
    println!(
        "{:>18} {:>8} {:>14} {:>11} {:>11} {:>11}",
        "m x k x n", "candle", "crate threads", "rows split", "col blocks", "w^T stored"
    );
    for &(m, k, n) in &shapes {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ws = w.flatten_all()?.to_vec1::<f32>()?;
        let w_t = w.t()?;
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        let repeats = ((20.0 / gflop) as usize).clamp(5, 200);
        let candle = timing::median_s(|| drop(std::hint::black_box(x.matmul(&w_t))), repeats);
        let mut y = vec![0f32; m * n];
        let mut time_matmul = |rhs: View<'_>, threads: Threads| {
            timing::median_s(
                || {
                    let dst = ViewMut::new(&mut y, m, n);
                    let lhs = View::new(&xs, m, k);
                    std::hint::black_box(matmul(dst, lhs, rhs, false, 1.0, threads)).ok();
                },
                repeats,
            )
        };
        let crate_threads = time_matmul(View::new(&ws, n, k).t(), Threads::All);
        // Each thread its own block of output columns (weight rows): what `model::linear` does.
        let column_blocks = time_matmul(View::new(&ws, n, k).t(), Threads::ColumnBlocks);
        // The weight stored transposed, [k, n] row-major, with the crate's threading.
        let wt = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let stored_t = time_matmul(View::new(&wt, k, n), Threads::All);
        let per = m.div_ceil(threads);
        let split = timing::median_s(
            || {
                y.par_chunks_mut(per * n)
                    .enumerate()
                    .for_each(|(c, y_rows)| {
                        let rows = y_rows.len() / n;
                        let dst = ViewMut::new(y_rows, rows, n);
                        let lhs = View::new(&xs[c * per * k..(c * per + rows) * k], rows, k);
                        let rhs = View::new(&ws, n, k).t();
                        std::hint::black_box(matmul(dst, lhs, rhs, false, 1.0, Threads::One)).ok();
                    })
            },
            repeats,
        );
        println!(
            "{:>18} {:>8.0} {:>14.0} {:>11.0} {:>11.0} {:>11.0}",
            format!("{m}x{k}x{n}"),
            gflop / candle,
            gflop / crate_threads,
            gflop / split,
            gflop / column_blocks,
            gflop / stored_t
        );
    }
    Ok(())
}
