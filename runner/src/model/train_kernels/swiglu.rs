//! SwiGLU on a fused gate|up projection: `y = silu(g) * u` with `[g | u]` the two halves of
//! each row. Backward: `dg = dy * u * s * (1 + g * (1 - s))`, `du = dy * silu(g)`,
//! `s = sigmoid(g)`.

use super::{cpu_slice, to_vec};
use crate::model::kernels::from_vec;
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct SwiGlu {
    inter: usize,
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "train-swiglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = cpu_slice(storage, layout)?;
        let inter = self.inter;
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
        let mut dims = layout.shape().dims().to_vec();
        if let Some(l) = dims.last_mut() {
            *l = inter;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let inter = self.inter;
        let xs = to_vec(arg)?;
        let dy = to_vec(grad)?;
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(2 * inter)
            .zip(xs.par_chunks(2 * inter).zip(dy.par_chunks(inter)))
            .for_each(|(d, (row, gy))| {
                let (g, u) = row.split_at(inter);
                let (dg, du) = d.split_at_mut(inter);
                for i in 0..inter {
                    let x = g[i];
                    let s = 1.0 / (1.0 + (-x).exp());
                    du[i] = gy[i] * x * s;
                    dg[i] = gy[i] * u[i] * s * (1.0 + x * (1.0 - s));
                }
            });
        Ok(Some(from_vec(dx, arg.dims())?))
    }
}

/// `gate_up`: `[.., 2 * inter]` with the gate in the first half of each row.
pub fn swiglu(gate_up: &Tensor, inter: usize) -> Result<Tensor> {
    let last = gate_up.dims().last().copied().unwrap_or(0);
    if last != 2 * inter {
        bail!("swiglu: expected last dim {}, got {last}", 2 * inter)
    }
    gate_up.contiguous()?.apply_op1(SwiGlu { inter })
}
