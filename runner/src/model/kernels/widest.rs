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

            match $crate::model::kernels::widest::VectorPath::detect() {
                // SAFETY: `detect` saw AVX-512F on this CPU.
                #[cfg(target_arch = "x86_64")]
                $crate::model::kernels::widest::VectorPath::Avx512 => return unsafe { avx512($($arg),*) },
                // SAFETY: `detect` saw AVX2 and FMA on this CPU.
                #[cfg(target_arch = "x86_64")]
                $crate::model::kernels::widest::VectorPath::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::model::kernels::widest::VectorPath::Portable => {}
            }
            body($($arg),*)
        }
    };
}

pub(crate) use widest_fn;

/// The widest vector path this CPU has, in one place for every run-time dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VectorPath {
    /// AVX-512F (16 f32 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA (8 lanes).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// What the target was compiled for (SSE2 on x86-64).
    Portable,
}

impl VectorPath {
    /// The widest path the CPU supports (std caches the feature checks).
    /// Every path this CPU can run, the portable one first (tests compare them all).
    pub fn available() -> Vec<Self> {
        let mut paths = vec![VectorPath::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if VectorPath::detect() == VectorPath::Avx512 {
                paths.push(VectorPath::Avx512);
            }
            if VectorPath::detect() != VectorPath::Portable {
                paths.push(VectorPath::Avx2);
            }
        }
        paths
    }

    /// The path's name as reports give it (`Avx512`, `Avx2`, `Portable`): bench JSON's
    /// `cpu_vector_path`, which `scripts/bench-vs-pytorch.sh --isa` checks.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx512 => "Avx512",
            #[cfg(target_arch = "x86_64")]
            VectorPath::Avx2 => "Avx2",
            VectorPath::Portable => "Portable",
        }
    }

    /// The widest path this CPU has and this build allows: AVX-512F only with the crate's
    /// `avx512` feature (on by default), so that a build without it runs as an AVX2 CPU would.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                return VectorPath::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return VectorPath::Avx2;
            }
        }
        VectorPath::Portable
    }
}

#[cfg(test)]
mod tests {
    use super::VectorPath;

    #[test]
    fn reports_name_each_path_as_its_variant() {
        // bench-vs-pytorch.sh --isa compares these names with the variant it asked for.
        for path in VectorPath::available() {
            assert_eq!(path.name(), format!("{path:?}"));
        }
    }
}
