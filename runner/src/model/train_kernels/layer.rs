//! A decoder layer's training forward built from the training kernels.

use super::attention::{attention, Dims, RopeTables};
use super::{linear, rms_norm::rms_norm, swiglu::swiglu};
use crate::model::config::ModelConfig;
use crate::model::layer::DecoderLayer;
use crate::model::linear::FusedLinear;
use candle_core::{Result, Tensor};

/// The projection in training mode: the fused kernel, or the composable path for adapters
/// the kernel does not cover.
fn project(lin: &FusedLinear, x: &Tensor) -> Result<Tensor> {
    match linear::forward(lin, x)? {
        Some(y) => Ok(y),
        None => lin.forward(x, true),
    }
}

impl DecoderLayer {
    /// `x`: `[b, t, hidden]` at positions `0..t`.
    pub fn forward_train(
        &self,
        x: &Tensor,
        cfg: &ModelConfig,
        rope: &RopeTables,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let eps = cfg.rms_norm_eps;
        let h = rms_norm(x, &self.input_layernorm, eps)?;
        let qkv = project(&self.qkv, &h)?;
        let dims = Dims {
            batch: b,
            tokens: t,
            q_heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim,
        };
        let attn = attention(&qkv, dims, rope)?;
        let x = (x + project(&self.o_proj, &attn)?)?;
        let h = rms_norm(&x, &self.post_attention_layernorm, eps)?;
        let gu = project(&self.gate_up, &h)?;
        let act = swiglu(&gu, cfg.intermediate_size)?;
        x + project(&self.down_proj, &act)?
    }
}
