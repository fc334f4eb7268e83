//! Settings of the C allocator for tensor-sized buffers.
//!
//! Every op of a forward pass allocates its output (a few hundred KiB to tens of MiB) and frees
//! its inputs. glibc's `malloc` serves a request above its mmap threshold (128 KiB at start,
//! raised only as mmapped chunks are freed) with a fresh `mmap`, and hands the top of the heap
//! back to the OS once more than the trim threshold is free. Either way the next pass
//! page-faults and the kernel zeroes those pages again: in a profile of `bench forward` the page
//! faults, page clearing and `memset` took about a tenth of the time. [`keep_freed_memory`]
//! fixes both thresholds high, so freed buffers stay in the process and are reused.
//!
//! The cost is that memory freed after a peak stays mapped (and counted in RSS) until exit,
//! up to [`TRIM_THRESHOLD`] at the heap's top; the peak itself is unchanged. Set
//! `PRUNEFORGE_MALLOC_DEFAULTS=1` to keep glibc's defaults (for comparisons).

/// Largest request served from the heap: glibc's maximum mmap threshold on 64-bit
/// (`DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB); larger requests are still mmapped.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the heap's top that is kept rather than returned to the OS.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocatorTuning {
    /// Both thresholds set.
    Applied,
    /// `PRUNEFORGE_MALLOC_DEFAULTS` asked for glibc's defaults.
    Defaults,
    /// Not glibc (or glibc refused a value): nothing changed.
    Unsupported,
}

/// Sets glibc's mmap and trim thresholds (see the module docs). Call once, early in `main`,
/// before threads start.
pub fn keep_freed_memory() -> AllocatorTuning {
    if std::env::var_os("PRUNEFORGE_MALLOC_DEFAULTS").is_some_and(|v| !v.is_empty() && v != "0") {
        return AllocatorTuning::Defaults;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> AllocatorTuning {
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // allocate, and returns 0 (changing nothing) for a value it refuses.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    };
    if ok {
        AllocatorTuning::Applied
    } else {
        AllocatorTuning::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> AllocatorTuning {
    AllocatorTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_accepts_the_thresholds() {
        // Set in a test process too: both values must be within glibc's accepted ranges
        // (a refused value would silently leave the defaults in place).
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(set_thresholds(), AllocatorTuning::Applied);
        }
    }
}
