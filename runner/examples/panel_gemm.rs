//! Would a GEMM of our own, on weights packed once, beat the `gemm` crate? A plain BLIS-style
//! kernel for `y = x · w^T`: `w` packed once into panels of 32 output columns (`[k][32]` each),
//! `x` packed per call into tiles of 12 rows (`[k][12]`), and an AVX-512 register tile of 12 rows
//! × 32 columns (24 accumulators; per depth step two vector loads, twelve broadcasts and 24
//! FMAs). Threads take contiguous ranges of panels. Printed per shape, GFLOP/s (median): the
//! crate by column blocks (what `model::linear` calls), the time to pack `x` as a share of the
//! crate's, and for each `kc × panels` blocking given this kernel without / with packing `x`
//! (`w` is packed before timing). `CEILING=1` times the register tile alone on one
//! thread with its operands in L1 or L2.
//! x86-64 with AVX-512F only; measured results in docs/RESULTS.md.
//!
//!     cargo run --release -p pruneforge --example panel_gemm [-- 288x16,576x8]
#[path = "common/timing.rs"]
mod timing;
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::timing;
    use pruneforge::model::train_kernels::gemm::{matmul, Threads, View, ViewMut};
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    use std::time::Instant;

    const NV: usize = 2;
    const NR: usize = 16 * NV;

    /// w [n, k] → panels [n/NR][k][NR].
    fn pack_w(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let panels = n.div_ceil(NR);
        let mut out = vec![0f32; panels * k * NR];
        for p in 0..panels {
            for c in 0..NR {
                let j = p * NR + c;
                if j >= n {
                    continue;
                }
                let row = &w[j * k..(j + 1) * k];
                for (kk, v) in row.iter().enumerate() {
                    out[(p * k + kk) * NR + c] = *v;
                }
            }
        }
        out
    }

    /// x [m, k] → tiles [m/MR][k][MR].
    fn pack_x<const MR: usize>(x: &[f32], m: usize, k: usize, out: &mut Vec<f32>) {
        let tiles = m.div_ceil(MR);
        out.clear();
        out.resize(tiles * k * MR, 0.0);
        for t in 0..tiles {
            for r in 0..MR {
                let i = t * MR + r;
                if i >= m {
                    continue;
                }
                let row = &x[i * k..(i + 1) * k];
                let dst = &mut out[t * k * MR..(t + 1) * k * MR];
                for (kk, v) in row.iter().enumerate() {
                    dst[kk * MR + r] = *v;
                }
            }
        }
    }

    /// `c[rows, 32] (+)= x_tile[kc][MR] · w_panel[kc][32]` (rows ≤ MR), `c` at row stride `ldc`.
    ///
    /// # Safety
    /// AVX-512F present; `x` holds `kc * MR`, `w` holds `kc * 32` floats, `c` covers the tile.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const MR: usize>(
        kc: usize,
        x: *const f32,
        w: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut wp = w;
        let mut xp = x;
        for _ in 0..kc {
            let mut wv = [_mm512_setzero_ps(); NV];
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(wp.add(16 * v));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*xp.add(r));
                for v in 0..NV {
                    acc[v] = _mm512_fmadd_ps(wv[v], b, acc[v]);
                }
            }
            wp = wp.add(NR);
            xp = xp.add(MR);
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            for (v, a) in acc.iter().enumerate() {
                let dst = c.add(r * ldc + 16 * v);
                let val = if accumulate {
                    _mm512_add_ps(_mm512_loadu_ps(dst), *a)
                } else {
                    *a
                };
                _mm512_storeu_ps(dst, val);
            }
        }
    }

    #[derive(Clone, Copy)]
    struct P(*mut f32);
    unsafe impl Send for P {}
    unsafe impl Sync for P {}

    impl P {
        /// A method, so that closures capture the whole `P` (which is `Sync`), not its field.
        fn get(self) -> *mut f32 {
            self.0
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn packed_matmul<const MR: usize>(
        xp: &[f32],
        m: usize,
        k: usize,
        wp: &[f32],
        n: usize,
        y: &mut [f32],
        kc: usize,
        block_panels: usize,
    ) {
        assert_eq!(n % NR, 0, "the prototype handles whole panels only");
        let panels = n / NR;
        let threads = rayon::current_num_threads();
        let per = panels.div_ceil(threads);
        let yp = P(y.as_mut_ptr());
        let tiles = m.div_ceil(MR);
        (0..threads).into_par_iter().for_each(|t| {
            let p0 = t * per;
            let p1 = ((t + 1) * per).min(panels);
            let mut b0 = p0;
            while b0 < p1 {
                let b1 = (b0 + block_panels).min(p1);
                let mut k0 = 0;
                while k0 < k {
                    let kl = (k - k0).min(kc);
                    for ti in 0..tiles {
                        let rows = (m - ti * MR).min(MR);
                        let xt = xp[(ti * k + k0) * MR..].as_ptr();
                        for p in b0..b1 {
                            let wt = wp[(p * k + k0) * NR..].as_ptr();
                            unsafe {
                                let c = yp.get().add(ti * MR * n + p * NR);
                                kernel::<MR>(kl, xt, wt, c, n, rows, k0 > 0);
                            }
                        }
                    }
                    k0 += kl;
                }
                b0 = b1;
            }
        });
    }

    fn parse_configs(arg: &str) -> Option<Vec<(usize, usize)>> {
        arg.split(',')
            .map(|c| {
                let (kc, panels) = c.split_once('x')?;
                let (kc, panels) = (kc.parse().ok()?, panels.parse().ok()?);
                (kc > 0 && panels > 0).then_some((kc, panels))
            })
            .collect()
    }

    pub fn main() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("panel_gemm needs AVX-512F");
            std::process::exit(2);
        }
        if std::env::var("CEILING").is_ok() {
            ceiling();
            return;
        }
        let shapes = [
            (1024, 576, 960),
            (1024, 576, 3072),
            (1024, 1536, 576),
            (1024, 576, 576),
            (200, 576, 960),
            (256, 576, 49152),
        ];
        let configs: Vec<(usize, usize)> = match std::env::args().nth(1) {
            Some(arg) => match parse_configs(&arg) {
                Some(c) => c,
                None => {
                    eprintln!("usage: panel_gemm [KCxPANELS,...], e.g. 288x16,576x8");
                    std::process::exit(2);
                }
            },
            None => vec![(288, 16), (576, 8)],
        };
        for &(m, k, n) in &shapes {
            let xs: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let ws: Vec<f32> = (0..n * k)
                .map(|i| ((i * 104729) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let gflop = 2.0 * (m * k * n) as f64 / 1e9;
            let repeats = ((20.0 / gflop) as usize).clamp(5, 200);
            let mut y = vec![0f32; m * n];
            let crate_s = timing::median_s(
                || {
                    let dst = ViewMut::new(&mut y, m, n);
                    let lhs = View::new(&xs, m, k);
                    let rhs = View::new(&ws, n, k).t();
                    std::hint::black_box(matmul(dst, lhs, rhs, false, 1.0, Threads::ColumnBlocks))
                        .ok();
                },
                repeats,
            );
            let want = y.clone();
            let wp = pack_w(&ws, n, k);
            let mut line = format!(
                "{:>16} crate {:>5.0}",
                format!("{m}x{k}x{n}"),
                gflop / crate_s
            );
            let mut xbuf = Vec::new();
            let px = timing::median_s(|| pack_x::<12>(&xs, m, k, &mut xbuf), repeats);
            line += &format!(" | xpack {:>4.1}%", 100.0 * px / crate_s);
            for &(kc, bp) in &configs {
                let mut y2 = vec![0f32; m * n];
                let packed = timing::median_s(
                    || packed_matmul::<12>(&xbuf, m, k, &wp, n, &mut y2, kc, bp),
                    repeats,
                );
                let s = timing::median_s(
                    || {
                        pack_x::<12>(&xs, m, k, &mut xbuf);
                        packed_matmul::<12>(&xbuf, m, k, &wp, n, &mut y2, kc, bp);
                    },
                    repeats,
                );
                let err = y2
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                line += &format!(
                    " | {kc}x{bp}: {:>5.0} / {:>5.0} (err {err:.1e})",
                    gflop / packed,
                    gflop / s
                );
            }
            println!("{line}");
        }
    }

    /// The register tile alone, one thread, on panels that stay in L1 or L2.
    fn ceiling() {
        for &(kc, panels) in &[(64usize, 1usize), (288, 1), (288, 4), (288, 16), (128, 64)] {
            let x = vec![0.5f32; 12 * kc];
            let w = vec![0.25f32; NR * kc * panels];
            let mut c = vec![0f32; 12 * NR * panels];
            let iters = 200_000_000 / (kc * panels);
            let t = Instant::now();
            for _ in 0..iters {
                for p in 0..panels {
                    unsafe {
                        kernel::<12>(
                            kc,
                            x.as_ptr(),
                            w[p * NR * kc..].as_ptr(),
                            c[p * NR..].as_mut_ptr(),
                            NR * panels,
                            12,
                            false,
                        )
                    };
                }
                std::hint::black_box(&mut c);
            }
            let flops = (iters * panels * kc * 12 * NR * 2) as f64;
            println!(
                "kernel kc {kc} panels {panels}: {:.0} GFLOP/s one thread",
                flops / t.elapsed().as_secs_f64() / 1e9
            );
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    x86::main();
    #[cfg(not(target_arch = "x86_64"))]
    {
        eprintln!("panel_gemm needs x86-64 with AVX-512F");
        std::process::exit(2);
    }
}
