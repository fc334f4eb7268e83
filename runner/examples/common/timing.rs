//! Timing shared by the GEMM examples (`gemm_layouts`, `panel_gemm`).

use std::time::Instant;

/// Median wall time of `repeats` calls of `f`, after one untimed warm-up call.
pub fn median_s(mut f: impl FnMut(), repeats: usize) -> f64 {
    f();
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
