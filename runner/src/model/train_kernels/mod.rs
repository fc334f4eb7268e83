//! CPU training kernels: the training forward (`ForwardOptions { train: true }`) of the model
//! on CPU in f32, with hand-written backward passes, as candle custom ops.
//!
//! candle's generic autograd computes a gradient for every argument of every op (including
//! the frozen base weights of a LoRA model, which doubles the backward GEMM work), allocates a
//! zero tensor plus a sum for every gradient it accumulates, and runs composite ops (RMSNorm,
//! RoPE, softmax attention) as many small nodes. Here a whole decoder layer is one autograd
//! node ([`layer`]) whose backward computes only what LoRA training needs: the gradient of the
//! layer input and of the layer's adapters, from activations kept in the forward pass. It is
//! built from plain slice kernels:
//! - [`linear`]: a frozen (fused) projection plus its LoRA adapters (deterministic dropout);
//! - [`rms_norm`]: RMSNorm with a frozen weight (also a standalone op, for the final norm);
//! - [`attention`]: RoPE + causal grouped-query attention, probabilities kept for backward;
//! - [`swiglu`]: `silu(gate) * up` on a fused gate|up projection;
//! - [`gemm`]: bounds-checked strided GEMM; [`dropout`]: counter-based dropout masks;
//!   [`pool`]: reused activation buffers.
//!
//! The kernel path agrees with the composable path in [`super::ops`] (values and gradients;
//! tested in `tests/finetune.rs`).

pub mod attention;
pub mod dropout;
pub mod gemm;
pub mod layer;
pub mod linear;
pub mod pool;
pub mod rms_norm;
pub mod swiglu;

use candle_core::{bail, CpuStorage, DType, Layout, Result, Storage, StorageRef, Tensor};

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

/// A read lock on a contiguous f32 CPU tensor, for borrowing its values.
pub(crate) struct Data<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> Data<'a> {
    pub fn new(t: &'a Tensor) -> Result<Self> {
        if t.dtype() != DType::F32 {
            bail!("training kernel expects f32, got {:?}", t.dtype())
        }
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("training kernel expects a contiguous tensor")
        };
        Ok(Self { guard, start, end })
    }

    pub fn slice(&self) -> Result<&[f32]> {
        match &*self.guard {
            Storage::Cpu(c) => Ok(&c.as_slice::<f32>()?[self.start..self.end]),
            _ => bail!("training kernel expects a CPU tensor"),
        }
    }
}

/// `e^x`, branch-free so that loops over it vectorise: range reduction by powers of two and
/// a degree-6 polynomial (relative error about 2e-7); inputs are clamped to [-87, 88], so
/// very negative inputs give `e^-87 ≈ 1.6e-38` instead of a denormal or 0.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer.
    let x = x.clamp(-87.0, 88.0);
    let k = (x * LOG2E + ROUND) - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    p * scale
}
