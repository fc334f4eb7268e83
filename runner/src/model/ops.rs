//! Composable (autograd-capable, any device) versions of the model's building blocks. The
//! fused CPU kernels in [`super::kernels`] must agree with these (tested).

use candle_core::{DType, Device, Result, Tensor, D};

/// `x * rsqrt(mean(x^2) + eps) * w`, computed in f32.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.to_dtype(dtype)?.broadcast_mul(w)
}

/// Inference RMSNorm on any device and dtype: candle's fused kernel (f32 accumulation, one
/// rounding to the input dtype; no gradient).
///
/// candle's CPU kernel rounds the scale and each product to a half-precision input dtype, so
/// on the CPU half precision goes through f32 (one rounding at the end, as the CUDA kernel).
pub fn rms_norm_infer(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    if x.device().is_cpu() && dtype != DType::F32 {
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        let wf = w.to_dtype(DType::F32)?;
        return candle_nn::ops::rms_norm(&xf, &wf, eps as f32)?.to_dtype(dtype);
    }
    let x = x.contiguous()?;
    let w = w.to_dtype(dtype)?;
    candle_nn::ops::rms_norm(&x, &w, eps as f32)
}

/// Inference RoPE on any device and dtype: candle's fused kernel (`rotate_half` layout) with
/// `cos`/`sin` `[b, t, d/2]` (f32) cast to the input dtype; on the CPU half precision goes
/// through f32 (candle's CPU kernel rounds every product).
pub fn rope_infer(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    if x.device().is_cpu() && dtype != DType::F32 {
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        let (c, s) = (cos.to_dtype(DType::F32)?, sin.to_dtype(DType::F32)?);
        return candle_nn::rotary_emb::rope(&xf, &c, &s)?.to_dtype(dtype);
    }
    let (c, s) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
    candle_nn::rotary_emb::rope(&x.contiguous()?, &c, &s)
}

/// RoPE in the `rotate_half` layout. `x`: `[b, heads, t, d]`; `cos`/`sin`: `[b, t, d/2]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let half = d / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let cos = cos.unsqueeze(1)?.to_dtype(x.dtype())?;
    let sin = sin.unsqueeze(1)?.to_dtype(x.dtype())?;
    let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Tensor::cat(&[r1, r2], D::Minus1)
}

/// Repeats each KV head `groups` times: `[b, kv, t, d]` → `[b, kv * groups, t, d]`.
pub fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kv, groups, t, d))?
        .reshape((b, kv * groups, t, d))
}

/// Additive causal mask `[b, 1, tq, tk]`: query `i` of row `r` (absolute position
/// `starts[r] + i`) sees keys `0..=starts[r] + i`.
pub fn causal_mask(starts: &[usize], tq: usize, tk: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(starts.len() * tq * tk);
    for &s in starts {
        for i in 0..tq {
            for j in 0..tk {
                data.push(if j <= s + i { 0f32 } else { f32::NEG_INFINITY });
            }
        }
    }
    Tensor::from_vec(data, (starts.len(), 1, tq, tk), device)
}

/// Scaled dot-product attention with an additive mask. `q`: `[b, h, tq, d]`, `k`/`v`:
/// `[b, h, tk, d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax(&scores, D::Minus1)?.to_dtype(v.dtype())?;
    probs.matmul(&v.contiguous()?)
}

/// [`attention`] for inference on any device: scores and softmax in f32 with candle's fused
/// last-dimension softmax (no gradient).
pub fn attention_infer(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = scores.to_dtype(DType::F32)?.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    probs.matmul(&v.contiguous()?)
}

/// `silu(gate) * up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(gate)? * up
}
