//! The element-wise loops of the fused kernels (softmax, SiLU, RMSNorm) compiled for the widest
//! vector unit the CPU has, chosen at run time: the binary is built for baseline x86-64 (SSE2),
//! where these loops would run four lanes wide on a CPU with sixteen.

/// Defines `fn name(args)` whose body is compiled three times: for AVX-512F, for AVX2 + FMA
/// and for the baseline; each call runs the widest one the CPU has (a cached feature check).
/// Only the lane width changes, and with it the order of some float sums (within rounding).
/// The body is an `#[inline(always)]` function called from `#[target_feature]` wrappers, so
/// it (and what it inlines, such as `fast_exp`) is vectorised at that width.
macro_rules! widest_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use widest_fn;
