//! A whole decoder layer as one autograd node (candle `CustomOp2`):
//! `y = layer(x; frozen weights, adapters)` with arguments `x [b, t, hidden]` and the flat
//! vector of the layer's adapter values (`A` then `B` of every adapter, each flattened,
//! concatenated in projection order). The backward pass returns the gradient of `x` and of
//! that vector; candle routes the latter back to the adapters' variables.
//!
//! Forward: `h1 = norm1(x)`, `qkv = P_qkv(h1)`, `a = attn(qkv)`, `x2 = x + P_o(a)`,
//! `h2 = norm2(x2)`, `gu = P_gu(h2)`, `y = x2 + P_down(swiglu(gu))`. Everything the backward
//! pass needs (norm inputs, projection inputs, low-rank activations, attention state) is kept.

use super::attention::{self, Dims, RopeTables};
use super::linear::{self, AdapterSlot, Proj};
use super::{cpu_slice, pool, rms_norm, swiglu, Data};
use crate::model::config::ModelConfig;
use crate::model::kernels::from_vec;
use crate::model::layer::DecoderLayer;
use crate::model::linear::{FusedLinear, ProjWeight};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// A projection as the op holds it.
struct ProjMeta {
    /// Dense (contiguous) or quantized: a quantized weight is dequantized into a pooled
    /// buffer for the duration of each forward or backward call (QLoRA).
    weight: ProjWeight,
    bias: Option<Tensor>,
    in_dim: usize,
    out_dim: usize,
    adapters: Vec<AdapterSlot>,
}

#[derive(Default)]
struct Saved {
    h1: Vec<f32>,
    qkv_lows: Vec<f32>,
    attn_state: attention::Saved,
    attn: Vec<f32>,
    o_lows: Vec<f32>,
    x2: Vec<f32>,
    h2: Vec<f32>,
    gu: Vec<f32>,
    gu_lows: Vec<f32>,
    act: Vec<f32>,
    down_lows: Vec<f32>,
}

impl Saved {
    fn release(self) {
        for b in [
            self.h1,
            self.qkv_lows,
            self.attn,
            self.o_lows,
            self.x2,
            self.h2,
            self.gu,
            self.gu_lows,
            self.act,
            self.down_lows,
        ] {
            pool::give(b);
        }
        self.attn_state.release();
    }
}

struct LayerOp {
    ln1: Tensor,
    ln2: Tensor,
    eps: f32,
    qkv: ProjMeta,
    o: ProjMeta,
    gu: ProjMeta,
    down: ProjMeta,
    dims: Dims,
    inter: usize,
    rope: RopeTables,
    n_params: usize,
    saved: Mutex<Option<Saved>>,
}

/// A projection's weight values for one call: a read lock on a dense tensor, or the
/// dequantized values of a quantized one.
enum WeightData<'a> {
    Locked(Data<'a>),
    Dequantized(Vec<f32>),
}

/// Borrowed views of a projection's weights (read locks held for the duration of a call).
struct ProjData<'a> {
    w: WeightData<'a>,
    b: Option<Data<'a>>,
    meta: &'a ProjMeta,
}

impl<'a> ProjData<'a> {
    fn new(meta: &'a ProjMeta) -> Result<Self> {
        let w = match &meta.weight {
            ProjWeight::Dense(t) => WeightData::Locked(Data::new(t)?),
            ProjWeight::Quantized { blocks, .. } => {
                let mut values = pool::take(meta.out_dim * meta.in_dim);
                blocks
                    .dequantize_rows(0..meta.out_dim, &mut values)
                    .map_err(candle_core::Error::wrap)?;
                WeightData::Dequantized(values)
            }
        };
        Ok(Self {
            w,
            b: meta.bias.as_ref().map(Data::new).transpose()?,
            meta,
        })
    }
    fn proj(&self) -> Result<Proj<'_>> {
        Ok(Proj {
            w: match &self.w {
                WeightData::Locked(d) => d.slice()?,
                WeightData::Dequantized(v) => v,
            },
            bias: self.b.as_ref().map(|b| b.slice()).transpose()?,
            in_dim: self.meta.in_dim,
            out_dim: self.meta.out_dim,
            adapters: &self.meta.adapters,
        })
    }
}

impl Drop for ProjData<'_> {
    fn drop(&mut self) {
        if let WeightData::Dequantized(v) = &mut self.w {
            pool::give(std::mem::take(v));
        }
    }
}

impl LayerOp {
    fn rows(&self) -> usize {
        self.dims.batch * self.dims.tokens
    }
}

impl CustomOp2 for LayerOp {
    fn name(&self) -> &'static str {
        "train-decoder-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice(s1, l1)?;
        let params = cpu_slice(s2, l2)?;
        let n = self.rows();
        let h = self.o.out_dim;
        if x.len() != n * h || params.len() < self.n_params {
            bail!("train-decoder-layer: unexpected input sizes")
        }
        let (ln1, ln2) = (Data::new(&self.ln1)?, Data::new(&self.ln2)?);
        let (pqkv, po, pgu, pdown) = (
            ProjData::new(&self.qkv)?,
            ProjData::new(&self.o)?,
            ProjData::new(&self.gu)?,
            ProjData::new(&self.down)?,
        );
        let mut h1 = pool::take(n * h);
        rms_norm::forward(x, ln1.slice()?, self.eps, &mut h1);
        let mut qkv = pool::take(n * self.qkv.out_dim);
        let qkv_lows = linear::forward(&pqkv.proj()?, params, &h1, n, &mut qkv)?;
        let mut attn = pool::take(n * self.dims.q_dim());
        let attn_state = attention::forward(&qkv, self.dims, &self.rope, &mut attn)?;
        pool::give(qkv);
        let mut x2 = pool::take(n * h);
        let o_lows = linear::forward(&po.proj()?, params, &attn, n, &mut x2)?;
        x2.iter_mut().zip(x).for_each(|(a, b)| *a += b);
        let mut h2 = pool::take(n * h);
        rms_norm::forward(&x2, ln2.slice()?, self.eps, &mut h2);
        let mut gu = pool::take(n * 2 * self.inter);
        let gu_lows = linear::forward(&pgu.proj()?, params, &h2, n, &mut gu)?;
        let mut act = pool::take(n * self.inter);
        swiglu::forward(&gu, self.inter, &mut act);
        let mut y = vec![0f32; n * h];
        let down_lows = linear::forward(&pdown.proj()?, params, &act, n, &mut y)?;
        y.iter_mut().zip(&x2).for_each(|(a, b)| *a += b);
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Saved {
            h1,
            qkv_lows,
            attn_state,
            attn,
            o_lows,
            x2,
            h2,
            gu,
            gu_lows,
            act,
            down_lows,
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x_t: &Tensor,
        p_t: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(s) = self.saved.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            bail!("train-decoder-layer: backward called twice or without forward")
        };
        let n = self.rows();
        let h = self.o.out_dim;
        let (x_c, p_c, g_c) = (x_t.contiguous()?, p_t.contiguous()?, grad.contiguous()?);
        let (xd, pd, gd) = (Data::new(&x_c)?, Data::new(&p_c)?, Data::new(&g_c)?);
        let (x, params, dy) = (xd.slice()?, pd.slice()?, gd.slice()?);
        let (ln1, ln2) = (Data::new(&self.ln1)?, Data::new(&self.ln2)?);
        let (pqkv, po, pgu, pdown) = (
            ProjData::new(&self.qkv)?,
            ProjData::new(&self.o)?,
            ProjData::new(&self.gu)?,
            ProjData::new(&self.down)?,
        );
        let mut dparams = vec![0f32; params.len()];
        // y = x2 + down(act): dx2 = dy, d act = down^T dy.
        let mut dact = pool::take(n * self.inter);
        linear::backward(
            &pdown.proj()?,
            params,
            &s.act,
            &s.down_lows,
            dy,
            n,
            Some(&mut dact),
            &mut dparams,
        )?;
        let mut dgu = pool::take(n * 2 * self.inter);
        swiglu::backward(&s.gu, self.inter, &dact, &mut dgu);
        pool::give(dact);
        let mut dh2 = pool::take(n * h);
        linear::backward(
            &pgu.proj()?,
            params,
            &s.h2,
            &s.gu_lows,
            &dgu,
            n,
            Some(&mut dh2),
            &mut dparams,
        )?;
        pool::give(dgu);
        let mut dx2 = pool::take(n * h);
        dx2.copy_from_slice(dy);
        rms_norm::backward(&s.x2, ln2.slice()?, self.eps, &dh2, &mut dx2, true);
        pool::give(dh2);
        // x2 = x + o(attn).
        let mut dattn = pool::take(n * self.dims.q_dim());
        linear::backward(
            &po.proj()?,
            params,
            &s.attn,
            &s.o_lows,
            &dx2,
            n,
            Some(&mut dattn),
            &mut dparams,
        )?;
        let mut dqkv = pool::take(n * self.qkv.out_dim);
        attention::backward(&s.attn_state, self.dims, &self.rope, &dattn, &mut dqkv)?;
        pool::give(dattn);
        let want_dx = x_t.track_op();
        let mut dh1 = if want_dx {
            pool::take(n * h)
        } else {
            Vec::new()
        };
        linear::backward(
            &pqkv.proj()?,
            params,
            &s.h1,
            &s.qkv_lows,
            &dqkv,
            n,
            want_dx.then_some(dh1.as_mut_slice()),
            &mut dparams,
        )?;
        pool::give(dqkv);
        let dx = if want_dx {
            let mut dx = vec![0f32; n * h];
            dx.copy_from_slice(&dx2);
            rms_norm::backward(x, ln1.slice()?, self.eps, &dh1, &mut dx, true);
            Some(from_vec(dx, x_t.dims())?)
        } else {
            None
        };
        pool::give(dx2);
        pool::give(dh1);
        s.release();
        let dp = if p_t.track_op() {
            Some(from_vec(dparams, p_t.dims())?)
        } else {
            None
        };
        Ok((dx, dp))
    }
}

/// The adapters of `lin` as slots in the flat vector (appending their tensors to `flat`).
fn meta(lin: &FusedLinear, flat: &mut Vec<Tensor>, offset: &mut usize) -> Result<Option<ProjMeta>> {
    let in_dim = lin.in_dim()?;
    let mut adapters = Vec::new();
    for (part, lora) in lin.parts.iter().zip(&lin.lora) {
        let Some(l) = lora else { continue };
        let (r, i) = l.a.dims2()?;
        let (o, r2) = l.b.dims2()?;
        if r != r2
            || i != in_dim
            || o != part.rows.len()
            || !super::usable(&l.a)
            || !super::usable(&l.b)
        {
            return Ok(None);
        }
        let a_off = *offset;
        let b_off = a_off + r * i;
        *offset = b_off + o * r;
        flat.push(l.a.flatten_all()?);
        flat.push(l.b.flatten_all()?);
        adapters.push(AdapterSlot {
            rows: part.rows.clone(),
            rank: r,
            scale: l.scale as f32,
            dropout: l.dropout,
            seed: l.dropout_seed,
            a_off,
            b_off,
        });
    }
    Ok(Some(ProjMeta {
        weight: match &lin.weight {
            ProjWeight::Dense(t) => ProjWeight::Dense(t.contiguous()?),
            quantized => quantized.clone(),
        },
        bias: lin.bias.as_ref().map(|b| b.contiguous()).transpose()?,
        in_dim,
        out_dim: lin.out_dim(),
        adapters,
    }))
}

impl DecoderLayer {
    /// Training forward with the fused layer kernel; `None` when this layer's adapters do not
    /// fit it (the caller then uses the composable path). `x`: `[b, t, hidden]` at positions
    /// `0..t`.
    pub fn forward_train(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: &RopeTables,
    ) -> Result<Option<Tensor>> {
        let (b, t, hidden) = x.dims3()?;
        let mut flat = Vec::new();
        let mut n_params = 0;
        let mut metas = Vec::with_capacity(4);
        for lin in [&self.qkv, &self.o_proj, &self.gate_up, &self.down_proj] {
            match meta(lin, &mut flat, &mut n_params)? {
                Some(m) => metas.push(m),
                None => return Ok(None),
            }
        }
        let params = if flat.is_empty() {
            Tensor::zeros(1, DType::F32, x.device())?
        } else {
            Tensor::cat(&flat, 0)?
        };
        let down = metas.pop();
        let gu = metas.pop();
        let o = metas.pop();
        let qkv = metas.pop();
        let (Some(qkv), Some(o), Some(gu), Some(down)) = (qkv, o, gu, down) else {
            bail!("train-decoder-layer: missing projection")
        };
        if o.out_dim != hidden {
            bail!("train-decoder-layer: hidden size mismatch")
        }
        let op = LayerOp {
            ln1: self.input_layernorm.contiguous()?,
            ln2: self.post_attention_layernorm.contiguous()?,
            eps: cfg.rms_norm_eps as f32,
            qkv,
            o,
            gu,
            down,
            dims: Dims {
                batch: b,
                tokens: t,
                q_heads: cfg.num_attention_heads,
                kv_heads: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
            },
            inter: cfg.intermediate_size,
            rope: rope.clone(),
            n_params,
            saved: Mutex::new(None),
        };
        Ok(Some(x.contiguous()?.apply_op2(&params, op)?))
    }
}
