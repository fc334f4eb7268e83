//! The training loss on answer positions: masked next-token cross-entropy and logit
//! distillation (Minitron-style forward KL against a teacher), mixed as
//! `loss = (1 - r) * CE + r * KD`, averaged over the answer tokens of an optimizer step.
//!
//! KD at temperature `T` is `T^2 * KL(p_t || p_s)` with `p = softmax(z / T)` for teacher
//! (`z_t`) and student (`z_s`) logits; the `T^2` factor (Hinton et al.) keeps the gradient
//! `T * (p_s - p_t)` on the same scale for every `T`. With `T = 1` it is the plain forward KL.
//!
//! Memory stays bounded for large vocabularies (49k..128k): the LM head runs over chunks of
//! [`DEFAULT_CHUNK`] positions at a time for student and teacher, and nothing of size
//! `[positions, vocab]` outlives its chunk. On CPU the whole head + loss is one autograd node
//! that computes each position's gradient with respect to its final-norm state while the
//! chunk's logits are at hand (`[positions, hidden]` is kept, not the logits); elsewhere a
//! chunked composable version runs.

use super::error::{Result, TrainError};
use crate::model::kernels::{from_vec, with_f32};
use crate::model::train_kernels::fast_exp as exp;
use crate::model::train_kernels::gemm::{matmul, Threads, View, ViewMut};
use crate::model::train_kernels::pool;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Positions per LM-head chunk.
pub const DEFAULT_CHUNK: usize = 512;

/// Logit distillation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KdParams {
    /// Softmax temperature for teacher and student.
    pub temperature: f64,
    /// Weight of the KD term; the cross-entropy gets `1 - ratio`.
    pub ratio: f64,
    /// Weight of hidden-state distillation (Minitron): the normalized squared error between
    /// student layer outputs and those of the teacher layers they were cut from, added to
    /// the loss; 0 turns it off. See [`super::hidden`].
    pub hidden_weight: f64,
    /// Student layers whose outputs are matched; empty: every layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hidden_layers: Vec<usize>,
}

impl Default for KdParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            ratio: 0.5,
            hidden_weight: 0.0,
            hidden_layers: Vec::new(),
        }
    }
}

impl KdParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(TrainError::Input(format!(
                "kd.temperature must be > 0, got {}",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(TrainError::Input(format!(
                "kd.ratio must be in [0, 1], got {}",
                self.ratio
            )));
        }
        if !(self.hidden_weight.is_finite() && (0.0..=100.0).contains(&self.hidden_weight)) {
            return Err(TrainError::Input(format!(
                "kd.hidden_weight must be in [0, 100], got {}",
                self.hidden_weight
            )));
        }
        Ok(())
    }
}

/// Per-token weights of the two terms (already divided by the step's token count).
#[derive(Clone, Copy, Debug)]
pub struct LossWeights {
    pub ce: f32,
    pub kd: f32,
    pub temperature: f32,
}

/// What the head sees: final-norm states at the answer positions and the LM head weights.
pub struct HeadInputs<'a> {
    /// Student states `[m, hidden]` (carries the autograd graph).
    pub student: &'a Tensor,
    /// Student LM head `[vocab, hidden]`.
    pub student_head: &'a Tensor,
    /// Teacher states `[m, hidden_t]` and LM head `[vocab, hidden_t]` (no gradient).
    pub teacher: Option<(&'a Tensor, &'a Tensor)>,
    /// Target token of each position.
    pub targets: &'a [u32],
}

/// The weighted loss (a scalar to call `backward` on) and the unweighted sums of the two
/// terms over the positions (for logging).
pub struct HeadLoss {
    pub loss: Tensor,
    pub ce_sum: f64,
    pub kd_sum: f64,
}

const LANES: usize = 16;

fn max_of(z: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    rest.iter()
        .chain(acc.iter())
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `sum_j f(j)` with `LANES` independent f32 accumulators (vectorisable), summed in f64.
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    let mut j = 0;
    while j < full {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += f(j + i);
        }
        j += LANES;
    }
    let mut s: f64 = acc.iter().map(|&v| v as f64).sum();
    for j in full..n {
        s += f(j) as f64;
    }
    s
}

/// Loss of one position from its logits `z` (and the teacher's `zt`); overwrites `z` with
/// `d loss_w / d z` (and `zt` with scratch values). Returns `(ce, kd)` unweighted.
fn position_loss(
    z: &mut [f32],
    zt: Option<&mut [f32]>,
    target: usize,
    w: LossWeights,
) -> (f64, f64) {
    let n = z.len();
    let max = max_of(z);
    let z_target = z[target];
    let Some(zt) = zt else {
        for v in z.iter_mut() {
            *v = exp(*v - max);
        }
        let sum = lane_sum(n, |j| z[j]);
        let ce = (max as f64 + sum.ln()) - z_target as f64;
        let f = (w.ce as f64 / sum) as f32;
        z.iter_mut().for_each(|v| *v *= f);
        z[target] -= w.ce;
        return (ce, 0.0);
    };
    let t = w.temperature;
    let inv_t = 1.0 / t;
    let tmax = max_of(zt);
    // Teacher: zt <- exp((zt - tmax) / T), with sum and sum of e * u.
    let acc_t = lane_sum(n, |j| {
        let u = (zt[j] - tmax) * inv_t;
        u * exp(u)
    });
    for v in zt.iter_mut() {
        *v = exp((*v - tmax) * inv_t);
    }
    let sum_t = lane_sum(n, |j| zt[j]);
    // Student: softmax at 1 (cross-entropy) and at T (distillation).
    let sum1 = lane_sum(n, |j| exp(z[j] - max));
    let sum_s = lane_sum(n, |j| exp((z[j] - max) * inv_t));
    let cross = lane_sum(n, |j| zt[j] * ((z[j] - max) * inv_t));
    let ce = (max as f64 + sum1.ln()) - z_target as f64;
    let kl = (acc_t / sum_t - sum_t.ln()) - (cross / sum_t - sum_s.ln());
    let kd = (t as f64) * (t as f64) * kl;
    let (ln1, ln_s) = (sum1.ln() as f32, sum_s.ln() as f32);
    let inv_sum_t = (1.0 / sum_t) as f32;
    let (wce, wkd) = (w.ce, w.kd * t);
    for (v, &et) in z.iter_mut().zip(zt.iter()) {
        let u = *v - max;
        *v = wce * exp(u - ln1) + wkd * (exp(u * inv_t - ln_s) - et * inv_sum_t);
    }
    z[target] -= w.ce;
    (ce, kd)
}

struct HeadLossOp {
    head: Tensor,
    teacher: Option<(Tensor, Tensor)>,
    targets: Arc<Vec<u32>>,
    weights: LossWeights,
    chunk: usize,
    /// `d loss_i / d x_i` for every position `[m, hidden]`.
    grad: Mutex<Vec<f32>>,
    sums: Arc<Mutex<(f64, f64)>>,
}

impl CustomOp1 for HeadLossOp {
    fn name(&self) -> &'static str {
        "train-head-loss"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = crate::model::train_kernels::cpu_slice(storage, layout)?;
        let (vocab, hidden) = self.head.dims2()?;
        let m = self.targets.len();
        if x.len() != m * hidden {
            candle_core::bail!(
                "head loss: {} states for {m} targets",
                x.len() / hidden.max(1)
            )
        }
        let mut grad = vec![0f32; m * hidden];
        let mut out = vec![0f32; m];
        let (mut ce_sum, mut kd_sum) = (0f64, 0f64);
        let chunk = self.chunk.max(1);
        let mut zs = pool::take(chunk.min(m) * vocab);
        let mut zt = if self.teacher.is_some() {
            pool::take(chunk.min(m) * vocab)
        } else {
            Vec::new()
        };
        with_f32(&self.head, |w| -> candle_core::Result<()> {
            for c0 in (0..m).step_by(chunk) {
                let mc = chunk.min(m - c0);
                let zs = &mut zs[..mc * vocab];
                matmul(
                    ViewMut::new(zs, mc, vocab),
                    View::new(x, m, hidden).rows(c0, mc),
                    View::new(w, vocab, hidden).t(),
                    false,
                    1.0,
                    Threads::ColumnBlocks,
                )?;
                if let Some((xt, wt)) = &self.teacher {
                    let ht = wt.dim(1)?;
                    with_f32(xt, |xt| {
                        with_f32(wt, |wt| {
                            matmul(
                                ViewMut::new(&mut zt[..mc * vocab], mc, vocab),
                                View::new(xt, m, ht).rows(c0, mc),
                                View::new(wt, vocab, ht).t(),
                                false,
                                1.0,
                                Threads::ColumnBlocks,
                            )
                        })
                    })???;
                }
                let targets = &self.targets[c0..c0 + mc];
                let weights = self.weights;
                let losses: Vec<(f64, f64)> = if self.teacher.is_some() {
                    zs.par_chunks_mut(vocab)
                        .zip(zt[..mc * vocab].par_chunks_mut(vocab))
                        .zip(targets.par_iter())
                        .map(|((z, t), &y)| position_loss(z, Some(t), y as usize, weights))
                        .collect()
                } else {
                    zs.par_chunks_mut(vocab)
                        .zip(targets.par_iter())
                        .map(|(z, &y)| position_loss(z, None, y as usize, weights))
                        .collect()
                };
                for (i, (ce, kd)) in losses.into_iter().enumerate() {
                    out[c0 + i] = (weights.ce as f64 * ce + weights.kd as f64 * kd) as f32;
                    ce_sum += ce;
                    kd_sum += kd;
                }
                matmul(
                    ViewMut::new(&mut grad, m, hidden).rows(c0, mc),
                    View::new(zs, mc, vocab),
                    View::new(w, vocab, hidden),
                    false,
                    1.0,
                    Threads::ColumnBlocks,
                )?;
            }
            Ok(())
        })??;
        pool::give(zs);
        pool::give(zt);
        *self.grad.lock().unwrap_or_else(|e| e.into_inner()) = grad;
        *self.sums.lock().unwrap_or_else(|e| e.into_inner()) = (ce_sum, kd_sum);
        Ok((CpuStorage::F32(out), Shape::from(m)))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let g = std::mem::take(&mut *self.grad.lock().unwrap_or_else(|e| e.into_inner()));
        let hidden = self.head.dim(1)?;
        let scale = grad_res.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if g.len() != scale.len() * hidden {
            candle_core::bail!("train-head-loss: backward called twice or without forward")
        }
        let mut dx = g;
        dx.par_chunks_mut(hidden)
            .zip(scale.par_iter())
            .for_each(|(row, &s)| row.iter_mut().for_each(|v| *v *= s));
        Ok(Some(from_vec(dx, arg.dims())?))
    }
}

fn check_inputs(inp: &HeadInputs<'_>) -> Result<()> {
    let (m, h) = inp.student.dims2()?;
    let (v, hh) = inp.student_head.dims2()?;
    if hh != h || m != inp.targets.len() {
        return Err(TrainError::Input(format!(
            "head loss: states [{m}, {h}], head [{v}, {hh}], {} targets",
            inp.targets.len()
        )));
    }
    if let Some(&bad) = inp.targets.iter().find(|&&t| t as usize >= v) {
        return Err(TrainError::Input(format!(
            "target token {bad} is outside the vocabulary ({v})"
        )));
    }
    if let Some((xt, wt)) = inp.teacher {
        let (mt, ht) = xt.dims2()?;
        let (vt, ht2) = wt.dims2()?;
        if mt != m || ht != ht2 || vt != v {
            return Err(TrainError::Input(format!(
                "teacher and student disagree: teacher vocabulary {vt}, student {v}; logit \
                 distillation needs the same tokenizer"
            )));
        }
    }
    Ok(())
}

/// The loss over the given positions; CPU f32 uses the fused chunked kernel.
pub fn head_loss(inp: &HeadInputs<'_>, w: LossWeights, chunk: usize) -> Result<HeadLoss> {
    check_inputs(inp)?;
    let cpu = crate::model::train_kernels::usable(inp.student)
        && crate::model::train_kernels::usable(inp.student_head)
        && inp.teacher.is_none_or(|(x, w)| {
            crate::model::train_kernels::usable(x) && crate::model::train_kernels::usable(w)
        });
    if !cpu {
        return head_loss_composable(inp, w, chunk);
    }
    if inp.targets.is_empty() {
        return Ok(HeadLoss {
            loss: Tensor::zeros((), DType::F32, inp.student.device())?,
            ce_sum: 0.0,
            kd_sum: 0.0,
        });
    }
    let sums = Arc::new(Mutex::new((0f64, 0f64)));
    let op = HeadLossOp {
        head: inp.student_head.contiguous()?,
        teacher: inp
            .teacher
            .map(|(x, w)| -> Result<(Tensor, Tensor)> {
                Ok((x.detach().contiguous()?, w.contiguous()?))
            })
            .transpose()?,
        targets: Arc::new(inp.targets.to_vec()),
        weights: w,
        chunk,
        grad: Mutex::new(Vec::new()),
        sums: sums.clone(),
    };
    let per_position = inp.student.contiguous()?.apply_op1(op)?;
    let loss = per_position.sum_all()?;
    let (ce_sum, kd_sum) = *sums.lock().unwrap_or_else(|e| e.into_inner());
    Ok(HeadLoss {
        loss,
        ce_sum,
        kd_sum,
    })
}

/// The same loss with composable candle ops (any device; autograd through candle).
pub fn head_loss_composable(
    inp: &HeadInputs<'_>,
    w: LossWeights,
    chunk: usize,
) -> Result<HeadLoss> {
    check_inputs(inp)?;
    let device = inp.student.device();
    let m = inp.targets.len();
    let mut loss = Tensor::zeros((), DType::F32, device)?;
    let (mut ce_sum, mut kd_sum) = (0f64, 0f64);
    let t = w.temperature as f64;
    for c0 in (0..m).step_by(chunk.max(1)) {
        let mc = chunk.max(1).min(m - c0);
        let xs = inp.student.narrow(0, c0, mc)?;
        let logits = xs.matmul(&inp.student_head.t()?)?.to_dtype(DType::F32)?;
        let targets = Tensor::from_slice(&inp.targets[c0..c0 + mc], (mc, 1), device)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let ce = lsm.gather(&targets, 1)?.neg()?.sum_all()?;
        ce_sum += ce.to_scalar::<f32>()? as f64;
        loss = (loss + (ce * w.ce as f64)?)?;
        if let Some((xt, wt)) = inp.teacher {
            let lt = xt
                .narrow(0, c0, mc)?
                .detach()
                .matmul(&wt.t()?)?
                .to_dtype(DType::F32)?;
            let log_pt = candle_nn::ops::log_softmax(&(lt / t)?, D::Minus1)?;
            let log_ps = candle_nn::ops::log_softmax(&(logits / t)?, D::Minus1)?;
            let kd = ((log_pt.exp()? * (&log_pt - log_ps)?)?.sum_all()? * (t * t))?;
            kd_sum += kd.to_scalar::<f32>()? as f64;
            loss = (loss + (kd * w.kd as f64)?)?;
        }
    }
    Ok(HeadLoss {
        loss,
        ce_sum,
        kd_sum,
    })
}

/// Per-position next-token NLL `-log p(target)` at the given final-norm states, `[m]`, with
/// autograd through the states: the fused chunked kernel on CPU f32 (whose backward takes a
/// gradient per position), composable candle ops elsewhere. Sequence log-probabilities for
/// preference losses are sums of its entries with the sign flipped.
pub fn token_nll(
    student: &Tensor,
    student_head: &Tensor,
    targets: &[u32],
    chunk: usize,
) -> Result<Tensor> {
    let inp = HeadInputs {
        student,
        student_head,
        teacher: None,
        targets,
    };
    check_inputs(&inp)?;
    let device = student.device();
    if targets.is_empty() {
        return Ok(Tensor::zeros(0, DType::F32, device)?);
    }
    let cpu = crate::model::train_kernels::usable(student)
        && crate::model::train_kernels::usable(student_head);
    if cpu {
        let op = HeadLossOp {
            head: student_head.contiguous()?,
            teacher: None,
            targets: Arc::new(targets.to_vec()),
            weights: LossWeights {
                ce: 1.0,
                kd: 0.0,
                temperature: 1.0,
            },
            chunk,
            grad: Mutex::new(Vec::new()),
            sums: Arc::new(Mutex::new((0.0, 0.0))),
        };
        return Ok(student.contiguous()?.apply_op1(op)?);
    }
    let m = targets.len();
    let mut parts = Vec::new();
    for c0 in (0..m).step_by(chunk.max(1)) {
        let mc = chunk.max(1).min(m - c0);
        let logits = student
            .narrow(0, c0, mc)?
            .matmul(&student_head.t()?)?
            .to_dtype(DType::F32)?;
        let t = Tensor::from_slice(&targets[c0..c0 + mc], (mc, 1), device)?;
        let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        parts.push(lsm.gather(&t, 1)?.neg()?.flatten_all()?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}
