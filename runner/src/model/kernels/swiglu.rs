//! SwiGLU on a fused gate|up projection: `silu(gate) * up` (a tensor wrapper around the
//! training kernel's forward loop, so inference and training compute it one way).

use super::{from_vec, with_f32};
use candle_core::{bail, Result, Tensor};

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
        crate::model::train_kernels::swiglu::forward(xs, inter, &mut out);
        out
    })?;
    let mut shape = dims;
    if let Some(l) = shape.last_mut() {
        *l = inter;
    }
    from_vec(out, &shape)
}
