//! Fused CPU kernels for inference (no autograd): RMSNorm, RoPE + KV write, causal attention
//! over a (possibly ragged) KV buffer, and SwiGLU. Each works on contiguous f32 slices and is
//! parallelised with rayon; candle's own ops are used for everything that needs gradients or
//! runs on another device.

pub mod attention;
pub mod logsumexp;
pub mod rms_norm;
pub mod rope;
pub mod skinny;
pub mod skinny_int8;
pub mod softmax;
pub mod swiglu;
pub mod widest;

use candle_core::{bail, DType, Device, Result, Storage, Tensor};

/// Runs `f` on the contiguous f32 CPU data of `t`.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if t.dtype() != DType::F32 {
        bail!("fused kernel expects f32, got {:?}", t.dtype())
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("fused kernel expects a CPU tensor")
    };
    let data = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("fused kernel expects a contiguous tensor")
    };
    Ok(f(&data[start..end]))
}

/// Wraps a computed buffer as a CPU tensor without copying.
pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// A raw pointer that may be shared between rayon tasks writing disjoint regions.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// # Safety
    /// The caller guarantees `offset..offset + len` is in bounds and not written concurrently.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

/// Whether the fused kernels can run on this tensor's device and dtype.
pub fn usable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}
