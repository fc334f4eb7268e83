//! `pruneforge bench matmul`: `y = x · w^T` (f32, CPU) at a few row counts, by the few-row
//! kernel (`model::kernels::skinny`) and by the general GEMM (candle's matmul), with the
//! method of the other benches (one warm-up, N timed repeats, median). It shows where the
//! crossover `skinny::MAX_ROWS` lies on the machine at hand, and which vector path it runs.

use candle_core::{Device, Tensor};
use pruneforge::model::kernels::{skinny, widest::VectorPath};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchMatmulArgs {
    /// Rows of x to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub rows: Vec<usize>,
    /// Inner dimension (the model's hidden size for q/k/v/o and gate/up).
    #[arg(long, default_value_t = 576)]
    pub k: usize,
    /// Output features (columns of y): e.g. 1536 (gate|up of SmolLM2) or 49152 (its LM head).
    #[arg(long, default_value_t = 1536)]
    pub n: usize,
    #[arg(long, default_value_t = 20)]
    pub repeats: usize,
}

fn median_s(mut f: impl FnMut() -> anyhow::Result<()>, repeats: usize) -> anyhow::Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(args: BenchMatmulArgs, json_out: &Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let BenchMatmulArgs {
        rows,
        k,
        n,
        repeats,
    } = args;
    if k == 0 || n == 0 || rows.contains(&0) {
        anyhow::bail!("bench matmul: --rows, --k and --n must be positive");
    }
    let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
    let w_data = w.flatten_all()?.to_vec1::<f32>()?;
    let w_t = w.t()?;
    let mut results = Vec::new();
    println!(
        "matmul y[m, {n}] = x[m, {k}] · w^T, f32, {} threads, path {:?} (skinny used up to {} rows)",
        rayon::current_num_threads(),
        VectorPath::detect(),
        skinny::MAX_ROWS
    );
    println!(
        "{:>5} {:>12} {:>12} {:>8}",
        "rows", "skinny GB/s", "gemm GB/s", "ratio"
    );
    for &m in &rows {
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let x_data = x.flatten_all()?.to_vec1::<f32>()?;
        let skinny_s = median_s(
            || {
                std::hint::black_box(skinny::matmul_t(&x_data, m, k, &w_data, n));
                Ok(())
            },
            repeats,
        )?;
        let gemm_s = median_s(
            || {
                std::hint::black_box(x.matmul(&w_t)?);
                Ok(())
            },
            repeats,
        )?;
        // Bytes of the weight read once: the figure that bounds these shapes.
        let gb = (n * k * 4) as f64 / 1e9;
        let flop = 2.0 * (m * n * k) as f64;
        println!(
            "{m:>5} {:>12.1} {:>12.1} {:>8.2}",
            gb / skinny_s,
            gb / gemm_s,
            gemm_s / skinny_s
        );
        results.push(json!({
            "rows": m, "skinny_s": skinny_s, "gemm_s": gemm_s,
            "skinny_gflop_s": flop / skinny_s / 1e9, "gemm_gflop_s": flop / gemm_s / 1e9,
            "skinny_speedup": gemm_s / skinny_s,
        }));
    }
    if let Some(path) = json_out {
        let report = json!({
            "work": "matmul", "k": k, "n": n, "threads": rayon::current_num_threads(),
            "path": VectorPath::detect().name(), "max_rows": skinny::MAX_ROWS,
            "results": results,
        });
        pruneforge::util::fs::write_json_atomic(Path::new(path), &report)?;
    }
    Ok(())
}
