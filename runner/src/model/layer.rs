//! One decoder layer: pre-norm attention and pre-norm SwiGLU MLP with residuals.

use super::config::ModelConfig;
use super::kernels::{self, rope::AttnShape};
use super::kv_buffer::KvBuffer;
use super::linear::FusedLinear;
use super::ops;
use candle_core::{Result, Tensor, D};

/// The projections' HF groups, in forward order.
const PROJECTION_NAMES: [&str; 4] = [
    "self_attn.q|k|v_proj",
    "self_attn.o_proj",
    "mlp.gate|up_proj",
    "mlp.down_proj",
];

#[derive(Clone, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: Tensor,
    pub post_attention_layernorm: Tensor,
    /// q_proj | k_proj | v_proj.
    pub qkv: FusedLinear,
    pub o_proj: FusedLinear,
    /// gate_proj | up_proj.
    pub gate_up: FusedLinear,
    pub down_proj: FusedLinear,
}

impl DecoderLayer {
    /// The four (fused) projections, in forward order, with their HF group and name.
    pub fn projections(&self) -> [(&'static str, &FusedLinear); 4] {
        let [q, o, g, d] = PROJECTION_NAMES;
        [
            (q, &self.qkv),
            (o, &self.o_proj),
            (g, &self.gate_up),
            (d, &self.down_proj),
        ]
    }

    /// [`DecoderLayer::projections`], mutable.
    pub fn projections_mut(&mut self) -> [(&'static str, &mut FusedLinear); 4] {
        let [q, o, g, d] = PROJECTION_NAMES;
        [
            (q, &mut self.qkv),
            (o, &mut self.o_proj),
            (g, &mut self.gate_up),
            (d, &mut self.down_proj),
        ]
    }

    /// Keeps every projection's weight as blocks of `format` (QLoRA); `prefix` (e.g.
    /// `model.layers.3`) names the weights in errors.
    pub fn quantize_projections(
        &mut self,
        format: super::quant::BaseQuantization,
        prefix: &str,
    ) -> crate::model::error::Result<()> {
        for (name, lin) in self.projections_mut() {
            lin.quantize(format, &format!("{prefix}.{name}.weight"))?;
        }
        Ok(())
    }
}

/// A point inside a decoder layer whose activations an observer can read (activation
/// importance for width pruning, Minitron): each is `[b, t, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// Output of `input_layernorm` (width `hidden_size`).
    InputNorm,
    /// Attention output entering `o_proj` (width `num_attention_heads * head_dim`).
    AttnOut,
    /// Output of `post_attention_layernorm` (width `hidden_size`).
    PostAttnNorm,
    /// SwiGLU activation entering `down_proj` (width `intermediate_size`).
    MlpAct,
}

/// Reads activations at each [`Site`] of a layer during an inference forward pass.
pub type Observer<'a> = &'a mut dyn FnMut(Site, &Tensor) -> Result<()>;

/// Reads activations at each [`Site`] of every layer (the layer's index first).
pub type ModelObserver<'a> = &'a mut dyn FnMut(usize, Site, &Tensor) -> Result<()>;

/// How attention reads and stores keys and values for one layer.
pub enum AttnIo<'a> {
    /// Fused CPU path: the input's tokens are batch rows of `lens[b]` tokens packed one after
    /// another (`Σ lens` = batch × tokens of the input; a right-padded block has equal
    /// lengths). Keys/values go to `kv` at row `rows[b]`, positions `starts[b] + t`.
    Fused {
        kv: &'a mut KvBuffer,
        lens: &'a [usize],
        rows: &'a [usize],
        starts: &'a [usize],
        cos: &'a [f32],
        sin: &'a [f32],
    },
    /// Composable path (autograd, any device). `past` is this layer's cached (k, v).
    Generic {
        cos: &'a Tensor,
        sin: &'a Tensor,
        mask: &'a Tensor,
        past: Option<&'a mut Option<(Tensor, Tensor)>>,
    },
}

impl DecoderLayer {
    pub fn forward(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        io: AttnIo<'_>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_observed(x, cfg, io, train, None)
    }

    /// [`DecoderLayer::forward`], handing the activations at every [`Site`] to `observer`.
    pub fn forward_observed(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        io: AttnIo<'_>,
        train: bool,
        mut observer: Option<Observer<'_>>,
    ) -> Result<Tensor> {
        let mut observe = |site: Site, t: &Tensor| match observer.as_mut() {
            Some(f) => f(site, t),
            None => Ok(()),
        };
        let eps = cfg.rms_norm_eps;
        let fused = matches!(io, AttnIo::Fused { .. });
        let h = if fused {
            kernels::rms_norm::rms_norm(x, &self.input_layernorm, eps as f32)?
        } else if train {
            ops::rms_norm(x, &self.input_layernorm, eps)?
        } else {
            ops::rms_norm_infer(x, &self.input_layernorm, eps)?
        };
        observe(Site::InputNorm, &h)?;
        let attn = self.attention(&h, cfg, io, train)?;
        observe(Site::AttnOut, &attn)?;
        let x = (x + self.o_proj.forward(&attn, train)?)?;
        let h = if fused {
            kernels::rms_norm::rms_norm(&x, &self.post_attention_layernorm, eps as f32)?
        } else if train {
            ops::rms_norm(&x, &self.post_attention_layernorm, eps)?
        } else {
            ops::rms_norm_infer(&x, &self.post_attention_layernorm, eps)?
        };
        observe(Site::PostAttnNorm, &h)?;
        let gu = self.gate_up.forward(&h, train)?;
        let act = if fused {
            kernels::swiglu::swiglu(&gu, cfg.intermediate_size)?
        } else {
            let inter = cfg.intermediate_size;
            ops::swiglu(
                &gu.narrow(D::Minus1, 0, inter)?,
                &gu.narrow(D::Minus1, inter, inter)?,
            )?
        };
        observe(Site::MlpAct, &act)?;
        x + self.down_proj.forward(&act, train)?
    }

    /// `h`: `[b, t, hidden]` → `[b, t, q_heads * head_dim]`.
    fn attention(
        &self,
        h: &Tensor,
        cfg: &ModelConfig,
        io: AttnIo<'_>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t, _) = h.dims3()?;
        let qkv = self.qkv.forward(h, train)?;
        let (q_heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        match io {
            AttnIo::Fused {
                kv,
                lens,
                rows,
                starts,
                cos,
                sin,
            } => {
                let shape = AttnShape::packed(lens, q_heads, kv_heads, cfg.head_dim);
                if shape.total() != b * t || rows.len() != lens.len() || starts.len() != lens.len()
                {
                    return Err(candle_core::Error::Msg(format!(
                        "fused attention: {} packed tokens in {} rows ({} cache rows, {} starts) \
                         for an input of {b} × {t} tokens",
                        shape.total(),
                        lens.len(),
                        rows.len(),
                        starts.len()
                    )));
                }
                let qkv = qkv.contiguous()?;
                let q = kernels::with_f32(&qkv, |data| {
                    kernels::rope::rope_qkv_into(data, &shape, rows, starts, cos, sin, kv)
                })?;
                let out = kernels::attention::causal_attention(&q, &shape, rows, starts, kv);
                kernels::from_vec(out, &[b, t, cfg.q_dim()])
            }
            AttnIo::Generic {
                cos,
                sin,
                mask,
                past,
            } => {
                let (qd, kvd, d) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
                let q = qkv
                    .narrow(D::Minus1, 0, qd)?
                    .reshape((b, t, q_heads, d))?
                    .transpose(1, 2)?;
                let k = qkv
                    .narrow(D::Minus1, qd, kvd)?
                    .reshape((b, t, kv_heads, d))?
                    .transpose(1, 2)?;
                let v = qkv
                    .narrow(D::Minus1, qd + kvd, kvd)?
                    .reshape((b, t, kv_heads, d))?
                    .transpose(1, 2)?;
                let (q, k) = if train {
                    (
                        ops::rope(&q.contiguous()?, cos, sin)?,
                        ops::rope(&k.contiguous()?, cos, sin)?,
                    )
                } else {
                    (
                        ops::rope_infer(&q, cos, sin)?,
                        ops::rope_infer(&k, cos, sin)?,
                    )
                };
                let v = v.contiguous()?;
                let (k, v) = match past {
                    Some(slot) => {
                        let kv = match slot.take() {
                            Some((pk, pv)) => {
                                (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?)
                            }
                            None => (k, v),
                        };
                        *slot = Some(kv.clone());
                        kv
                    }
                    None => (k, v),
                };
                let groups = q_heads / kv_heads;
                let k = ops::repeat_kv(&k, groups)?;
                let v = ops::repeat_kv(&v, groups)?;
                let y = if train {
                    ops::attention(&q, &k, &v, mask)?
                } else {
                    ops::attention_infer(&q, &k, &v, mask)?
                };
                y.transpose(1, 2)?.reshape((b, t, qd))
            }
        }
    }
}
