//! RMSNorm with a frozen weight: `y = w * x * r`, `r = 1 / sqrt(mean(x^2) + eps)`.
//! Backward: `dx = r * (w * dy) - x * r^3 * mean(w * dy * x)`.

use super::{cpu_slice, to_vec};
use crate::model::kernels::{from_vec, rms_norm::rms_norm_row, with_f32};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "train-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let hidden = self.weight.dim(0)?;
        let out = with_f32(&self.weight, |w| {
            let mut out = vec![0f32; x.len()];
            out.par_chunks_mut(hidden)
                .zip(x.par_chunks(hidden))
                .with_min_len(8)
                .for_each(|(o, xr)| rms_norm_row(xr, w, self.eps, o));
            out
        })?;
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let hidden = self.weight.dim(0)?;
        let x = to_vec(arg)?;
        let dy = to_vec(grad)?;
        let dx = with_f32(&self.weight, |w| {
            let mut dx = vec![0f32; x.len()];
            dx.par_chunks_mut(hidden)
                .zip(x.par_chunks(hidden).zip(dy.par_chunks(hidden)))
                .with_min_len(8)
                .for_each(|(o, (xr, gr))| {
                    let r = inv_rms(xr, self.eps);
                    let dot: f32 = xr.iter().zip(gr).zip(w).map(|((x, g), w)| x * g * w).sum();
                    let c = r * r * r * dot / hidden as f32;
                    for i in 0..hidden {
                        o[i] = r * w[i] * gr[i] - xr[i] * c;
                    }
                });
            dx
        })?;
        Ok(Some(from_vec(dx, arg.dims())?))
    }
}

/// RMSNorm over the last dimension of `x` with weight `w` (no gradient for `w`).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let hidden = w.dim(0)?;
    if x.dim(D::Minus1)? != hidden {
        bail!("rms_norm: hidden size mismatch {:?} vs {hidden}", x.shape())
    }
    x.contiguous()?.apply_op1(RmsNorm {
        weight: w.contiguous()?,
        eps: eps as f32,
    })
}
