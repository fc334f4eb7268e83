//! What rayon's hand-over costs the few-row matmul: GFLOP/s and microseconds per call of
//! `skinny::matmul_t` at 1-16 rows, called from the main thread (each call queued to the pool
//! while the caller sleeps) or, with `INSIDE=1`, from a pool thread (what
//! `util::workers::on_pool` gives every `pruneforge` command).
//!
//! `[INSIDE=1] [RAYON_NUM_THREADS=n] [N=256] [K=576] cargo run --release -p pruneforge
//! --example few_row_handover` (N = 256 keeps the weight in L2; 49152 is the LM head).
use pruneforge::model::kernels::skinny;
use std::time::Instant;
fn main() {
    let inside = std::env::var("INSIDE").is_ok();
    if inside {
        let pool = rayon::ThreadPoolBuilder::new().build().unwrap();
        pool.install(body);
    } else {
        body();
    }
}
fn body() {
    let k: usize = std::env::var("K")
        .map(|v| v.parse().unwrap())
        .unwrap_or(576);
    let n: usize = std::env::var("N")
        .map(|v| v.parse().unwrap())
        .unwrap_or(256);
    for &off in &[0usize] {
        for &m in &[1usize, 4, 8, 16] {
            let xb: Vec<f32> = (0..m * k + 64).map(|i| (i % 7) as f32 * 0.1).collect();
            let wb: Vec<f32> = (0..n * k + 64).map(|i| (i % 5) as f32 * 0.1).collect();
            // align to 64 bytes + off floats
            let xa = (64 - (xb.as_ptr() as usize % 64)) % 64 / 4 + off;
            let wa = (64 - (wb.as_ptr() as usize % 64)) % 64 / 4 + off;
            let x = &xb[xa..xa + m * k];
            let w = &wb[wa..wa + n * k];
            let reps = (20000 * 256 * 576 / (n * k) / m.max(1)).max(3);
            let _ = skinny::matmul_t(x, m, k, w, n);
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(skinny::matmul_t(x, m, k, w, n));
            }
            let s = t.elapsed().as_secs_f64();
            let gf = 2.0 * (m * n * k * reps) as f64 / s / 1e9;
            println!(
                "off {off} m {m:2}: {gf:.1} GFLOP/s ({:.2} us/call)",
                s / reps as f64 * 1e6
            );
        }
    }
}
