//! CPU training kernels: candle custom ops with hand-written backward passes for the
//! training forward (`ForwardOptions { train: true }`) of the model on CPU in f32.
//!
//! candle's generic autograd computes a gradient for every argument of every op (including
//! the frozen base weights of a LoRA model, which doubles the backward GEMM work) and
//! materialises many temporaries for composite ops (RMSNorm, RoPE, softmax attention). These
//! ops fuse each building block into one graph node whose backward computes only what LoRA
//! training needs:
//! - [`linear`]: a frozen projection with its LoRA adapters (deterministic dropout), gradients
//!   for the input and for the adapters only;
//! - [`rms_norm`]: RMSNorm with a frozen weight;
//! - [`attention`]: RoPE + causal grouped-query attention, probabilities kept for backward;
//! - [`swiglu`]: `silu(gate) * up` on a fused gate|up projection;
//! - [`layer`]: a decoder layer built from them.
//!
//! Every op agrees with the composable path in [`super::ops`] (values and gradients; tested).

pub mod attention;
pub mod dropout;
pub mod gemm;
pub mod layer;
pub mod linear;
pub mod rms_norm;
pub mod swiglu;

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor};

/// Whether the training kernels can run on this tensor's device and dtype.
pub fn usable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The contiguous f32 data of a custom-op argument.
pub(crate) fn cpu_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("training kernel expects a contiguous tensor")
    };
    Ok(&data[start..end])
}

/// Copies a (possibly strided) tensor's f32 values out, contiguous.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.contiguous()?;
    super::kernels::with_f32(&t, |s| s.to_vec())
}
