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

    /// The pointer `offset` elements on (a method, so that closures capture the whole
    /// `SendPtr` and not its non-`Sync` field).
    ///
    /// # Safety
    /// `offset` stays inside the allocation.
    pub unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// Dispatches a run-time register-tile shape (`xr` rows of x, `wr` rows of w, each 1..=4) to
/// the kernel `f::<R, C>` compiled for it, passing `args`: the few-row matmuls keep their
/// accumulators in registers, so each shape is its own function.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_by_shape {
    ($f:ident, $xr:expr, $wr:expr, ($($arg:expr),* $(,)?)) => {
        match ($xr, $wr) {
            (1, 1) => $f::<1, 1>($($arg),*),
            (1, 2) => $f::<1, 2>($($arg),*),
            (1, 3) => $f::<1, 3>($($arg),*),
            (1, _) => $f::<1, 4>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, 3) => $f::<2, 3>($($arg),*),
            (2, _) => $f::<2, 4>($($arg),*),
            (3, 1) => $f::<3, 1>($($arg),*),
            (3, 2) => $f::<3, 2>($($arg),*),
            (3, 3) => $f::<3, 3>($($arg),*),
            (3, _) => $f::<3, 4>($($arg),*),
            (_, 1) => $f::<4, 1>($($arg),*),
            (_, 2) => $f::<4, 2>($($arg),*),
            (_, 3) => $f::<4, 3>($($arg),*),
            (_, _) => $f::<4, 4>($($arg),*),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use tile_by_shape;

/// Asks the cache for the 64-byte line holding element `at` of each row of `rows` (rows of
/// `row_len` elements): the few-row matmuls fetch the weight rows they will read next, which
/// are too short for the hardware prefetcher to find in time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_rows<T>(rows: &[T], row_len: usize, at: usize) {
    let mut i = at;
    while i < rows.len() {
        // SAFETY: `i` indexes `rows`, and a prefetch never faults anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                rows.as_ptr().add(i).cast::<i8>(),
            )
        };
        i += row_len.max(1);
    }
}

/// Deterministic test values in [-1, 1] (the kernels' tests share them).
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(13);
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Whether the fused kernels can run on this tensor's device and dtype.
pub fn usable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}
