//! SwiGLU on a fused gate|up projection: `silu(gate) * up`.

use super::{from_vec, with_f32};
use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;

/// `gate_up`: `[n, 2 * inter]` with the gate in the first half of each row.
pub fn swiglu(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    let dims = gate_up.dims().to_vec();
    let last = *dims.last().unwrap_or(&0);
    if last != 2 * inter {
        bail!("swiglu: expected last dim {}, got {last}", 2 * inter)
    }
    let gu = gate_up.contiguous()?;
    let out = with_f32(&gu, |xs| {
        let mut out = vec![0f32; xs.len() / 2];
        out.par_chunks_mut(inter)
            .zip(xs.par_chunks(2 * inter))
            .for_each(|(o, row)| {
                let (g, u) = row.split_at(inter);
                for i in 0..inter {
                    let x = g[i];
                    o[i] = x / (1.0 + (-x).exp()) * u[i];
                }
            });
        out
    })?;
    let mut shape = dims;
    if let Some(l) = shape.last_mut() {
        *l = inter;
    }
    from_vec(out, &shape)
}
