//! RMSNorm with a frozen weight: `y = w * x * r`, `r = 1 / sqrt(mean(x^2) + eps)`.
//! Backward: `dx = r * (w * dy) - x * r^3 * mean(w * dy * x)`.

use super::{cpu_slice, Data};
use crate::model::kernels::{from_vec, rms_norm::rms_norm_row};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

/// `out = rmsnorm(x) * w` row by row (`w.len()` values per row).
pub fn forward(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(h)
        .zip(x.par_chunks(h))
        .with_min_len(8)
        .for_each(|(o, xr)| rms_norm_row(xr, w, eps, o));
}

/// `dx (+)= d rmsnorm(x) * w / dx · dy`; adds into `dx` when `accumulate`.
pub fn backward(x: &[f32], w: &[f32], eps: f32, dy: &[f32], dx: &mut [f32], accumulate: bool) {
    let h = w.len();
    dx.par_chunks_mut(h)
        .zip(x.par_chunks(h).zip(dy.par_chunks(h)))
        .with_min_len(8)
        .for_each(|(o, (xr, gr))| {
            let r = inv_rms(xr, eps);
            let dot: f32 = xr.iter().zip(gr).zip(w).map(|((x, g), w)| x * g * w).sum();
            let c = r * r * r * dot / h as f32;
            for i in 0..h {
                let v = r * w[i] * gr[i] - xr[i] * c;
                if accumulate {
                    o[i] += v;
                } else {
                    o[i] = v;
                }
            }
        });
}

struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "train-rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let w = Data::new(&self.weight)?;
        let mut out = vec![0f32; x.len()];
        forward(x, w.slice()?, self.eps, &mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let (x, dy) = (arg.contiguous()?, grad.contiguous()?);
        let (xd, dyd, w) = (Data::new(&x)?, Data::new(&dy)?, Data::new(&self.weight)?);
        let mut dx = vec![0f32; x.elem_count()];
        backward(
            xd.slice()?,
            w.slice()?,
            self.eps,
            dyd.slice()?,
            &mut dx,
            false,
        );
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
