//! A frozen (possibly fused) projection with LoRA adapters on some of its parts, as one
//! autograd node:
//!
//! `y = x W^T + b`, and for every adapted part `i` (output rows `rows_i`):
//! `y[:, rows_i] += s_i * (drop_i(x) A_i^T) B_i^T`.
//!
//! Backward computes `dx`, `dA` and `dB` only (the base weight and bias are frozen):
//! `dx = dy W + sum_i drop_i((s_i dy_i B_i) A_i)`, `dB_i = s_i dy_i^T (drop_i(x) A_i^T)`,
//! `dA_i = (s_i dy_i B_i)^T drop_i(x)`. The low-rank activations `drop_i(x) A_i^T` are kept
//! from the forward pass; dropout masks are regenerated from their seeds.

use super::dropout;
use super::gemm::{matmul, Threads, View, ViewMut};
use super::{cpu_slice, to_vec};
use crate::model::kernels::{from_vec, with_f32};
use crate::model::linear::{FusedLinear, LoraAdapter};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use std::ops::Range;
use std::sync::Mutex;

/// One adapted part of a fused projection, as the op sees it.
#[derive(Clone, Debug)]
struct AdapterSpec {
    /// Output rows of this part in the fused projection.
    rows: Range<usize>,
    scale: f32,
    dropout: f32,
    seed: u64,
}

/// Base projection shared by both ops.
struct Base {
    weight: Tensor,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
}

impl Base {
    fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        let (i, o) = (self.in_dim, self.out_dim);
        let mut y = vec![0f32; n * o];
        with_f32(&self.weight, |w| {
            matmul(
                ViewMut::new(&mut y, n, o),
                View::new(x, n, i),
                View::new(w, o, i).t(),
                false,
                1.0,
                Threads::All,
            )
        })??;
        if let Some(b) = &self.bias {
            with_f32(b, |b| {
                for row in y.chunks_mut(o) {
                    row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                }
            })?;
        }
        Ok(y)
    }

    /// `dy W`.
    fn backward_input(&self, dy: &[f32], n: usize) -> Result<Vec<f32>> {
        let (i, o) = (self.in_dim, self.out_dim);
        let mut dx = vec![0f32; n * i];
        with_f32(&self.weight, |w| {
            matmul(
                ViewMut::new(&mut dx, n, i),
                View::new(dy, n, o),
                View::new(w, o, i),
                false,
                1.0,
                Threads::All,
            )
        })??;
        Ok(dx)
    }
}

fn out_shape(layout: &Layout, out: usize) -> Shape {
    let mut dims = layout.shape().dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = out;
    }
    Shape::from(dims)
}

/// A projection without adapters: gradient for the input only.
struct FrozenLinear {
    base: Base,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "train-frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(storage, layout)?;
        let n = x.len() / self.base.in_dim.max(1);
        let y = self.base.forward(x, n)?;
        Ok((CpuStorage::F32(y), out_shape(layout, self.base.out_dim)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        if !arg.track_op() {
            return Ok(None);
        }
        let dy = to_vec(grad)?;
        let n = dy.len() / self.base.out_dim.max(1);
        let dx = self.base.backward_input(&dy, n)?;
        Ok(Some(from_vec(dx, arg.dims())?))
    }
}

/// A projection with adapters. Arguments: `x [n, in]`, `A_cat [parts * r, in]` (the adapters'
/// `A` stacked), `B_cat [sum of part outputs, r]` (their `B` stacked).
struct LoraLinear {
    base: Base,
    rank: usize,
    specs: Vec<AdapterSpec>,
    /// `drop_i(x) A_i^T` for every part, side by side: `[n, parts * r]`.
    lows: Mutex<Vec<f32>>,
}

impl LoraLinear {
    fn b_rows(&self) -> usize {
        self.specs.iter().map(|s| s.rows.len()).sum()
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "train-lora-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1)?;
        let a = cpu_slice(s2, l2)?;
        let b = cpu_slice(s3, l3)?;
        let (i, o, r) = (self.base.in_dim, self.base.out_dim, self.rank);
        let n = x.len() / i.max(1);
        let parts = self.specs.len();
        let big_r = parts * r;
        let b_rows = self.b_rows();
        let mut y = self.base.forward(x, n)?;
        let mut lows = vec![0f32; n * big_r];
        let mut dropped = Vec::new();
        let mut b_off = 0;
        for (p, s) in self.specs.iter().enumerate() {
            let src: &[f32] = if s.dropout > 0.0 {
                dropped.resize(x.len(), 0.0);
                dropout::apply(x, s.seed, s.dropout, &mut dropped);
                &dropped
            } else {
                x
            };
            matmul(
                ViewMut::new(&mut lows, n, big_r).cols(p * r, r),
                View::new(src, n, i),
                View::new(a, big_r, i).rows(p * r, r).t(),
                false,
                1.0,
                Threads::All,
            )?;
            let len = s.rows.len();
            matmul(
                ViewMut::new(&mut y, n, o).cols(s.rows.start, len),
                View::new(&lows, n, big_r).cols(p * r, r),
                View::new(b, b_rows, r).rows(b_off, len).t(),
                true,
                s.scale,
                Threads::All,
            )?;
            b_off += len;
        }
        *self.lows.lock().unwrap_or_else(|e| e.into_inner()) = lows;
        Ok((CpuStorage::F32(y), out_shape(l1, o)))
    }

    fn bwd(
        &self,
        x_t: &Tensor,
        a_t: &Tensor,
        b_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (i, o, r) = (self.base.in_dim, self.base.out_dim, self.rank);
        let dy = to_vec(grad)?;
        let x = to_vec(x_t)?;
        let a = to_vec(a_t)?;
        let b = to_vec(b_t)?;
        let n = x.len() / i.max(1);
        let parts = self.specs.len();
        let big_r = parts * r;
        let b_rows = self.b_rows();
        let lows = std::mem::take(&mut *self.lows.lock().unwrap_or_else(|e| e.into_inner()));
        if lows.len() != n * big_r {
            candle_core::bail!("train-lora-linear: backward called twice or without forward")
        }
        let want_dx = x_t.track_op();
        let mut dx = if want_dx {
            self.base.backward_input(&dy, n)?
        } else {
            Vec::new()
        };
        let mut da = vec![0f32; big_r * i];
        let mut db = vec![0f32; b_rows * r];
        let mut g = vec![0f32; n * r];
        let mut dropped = Vec::new();
        let mut tmp = Vec::new();
        let mut b_off = 0;
        for (p, s) in self.specs.iter().enumerate() {
            let len = s.rows.len();
            let dy_i = View::new(&dy, n, o).cols(s.rows.start, len);
            matmul(
                ViewMut::new(&mut db, b_rows, r).rows(b_off, len),
                dy_i.t(),
                View::new(&lows, n, big_r).cols(p * r, r),
                false,
                s.scale,
                Threads::All,
            )?;
            matmul(
                ViewMut::new(&mut g, n, r),
                dy_i,
                View::new(&b, b_rows, r).rows(b_off, len),
                false,
                s.scale,
                Threads::All,
            )?;
            let src: &[f32] = if s.dropout > 0.0 {
                dropped.resize(x.len(), 0.0);
                dropout::apply(&x, s.seed, s.dropout, &mut dropped);
                &dropped
            } else {
                &x
            };
            matmul(
                ViewMut::new(&mut da, big_r, i).rows(p * r, r),
                View::new(&g, n, r).t(),
                View::new(src, n, i),
                false,
                1.0,
                Threads::All,
            )?;
            if want_dx {
                let a_i = View::new(&a, big_r, i).rows(p * r, r);
                if s.dropout > 0.0 {
                    tmp.resize(n * i, 0.0);
                    matmul(
                        ViewMut::new(&mut tmp, n, i),
                        View::new(&g, n, r),
                        a_i,
                        false,
                        1.0,
                        Threads::All,
                    )?;
                    dropout::apply(&tmp, s.seed, s.dropout, &mut dropped);
                    dx.iter_mut().zip(&dropped).for_each(|(d, v)| *d += v);
                } else {
                    matmul(
                        ViewMut::new(&mut dx, n, i),
                        View::new(&g, n, r),
                        a_i,
                        true,
                        1.0,
                        Threads::All,
                    )?;
                }
            }
            b_off += len;
        }
        let dx = if want_dx {
            Some(from_vec(dx, x_t.dims())?)
        } else {
            None
        };
        Ok((
            dx,
            Some(from_vec(da, a_t.dims())?),
            Some(from_vec(db, b_t.dims())?),
        ))
    }
}

/// The forward pass of `lin` in training mode with the CPU kernels, or `None` when its
/// adapters do not fit them (different ranks), in which case the caller uses the composable
/// path.
pub fn forward(lin: &FusedLinear, x: &Tensor) -> Result<Option<Tensor>> {
    let in_dim = lin.in_dim()?;
    let x = x.contiguous()?;
    let base = Base {
        weight: lin.weight.contiguous()?,
        bias: lin.bias.as_ref().map(|b| b.contiguous()).transpose()?,
        in_dim,
        out_dim: lin.out_dim(),
    };
    let adapted: Vec<(&crate::model::linear::Part, &LoraAdapter)> = lin
        .parts
        .iter()
        .zip(&lin.lora)
        .filter_map(|(p, l)| l.as_ref().map(|l| (p, l)))
        .collect();
    if adapted.is_empty() {
        return Ok(Some(x.apply_op1(FrozenLinear { base })?));
    }
    let rank = adapted[0].1.a.dim(0)?;
    for (_, l) in &adapted {
        if l.a.dim(0)? != rank || l.b.dim(1)? != rank || l.a.dim(1)? != in_dim {
            return Ok(None);
        }
    }
    let specs = adapted
        .iter()
        .map(|(p, l)| AdapterSpec {
            rows: p.rows.clone(),
            scale: l.scale as f32,
            dropout: l.dropout,
            seed: l.dropout_seed,
        })
        .collect();
    let cat = |ts: Vec<&Tensor>| -> Result<Tensor> {
        if ts.len() == 1 {
            ts[0].contiguous()
        } else {
            Tensor::cat(&ts, 0)
        }
    };
    let a = cat(adapted.iter().map(|(_, l)| &l.a).collect())?;
    let b = cat(adapted.iter().map(|(_, l)| &l.b).collect())?;
    let op = LoraLinear {
        base,
        rank,
        specs,
        lows: Mutex::new(Vec::new()),
    };
    Ok(Some(x.apply_op3(&a, &b, op)?))
}
