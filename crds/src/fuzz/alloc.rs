//! The allocation guard of fuzz test binaries.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST_ALLOC: Cell<usize> = const { Cell::new(0) };
}

/// Forgets the largest allocation of this thread.
pub(super) fn reset_largest() {
    LARGEST_ALLOC.with(|l| l.set(0));
}

/// The largest single allocation of this thread since [`reset_largest`] (only allocations of
/// at least 1 MiB are tracked).
pub(super) fn largest() -> usize {
    LARGEST_ALLOC.with(Cell::get)
}

/// A global allocator for fuzz test binaries: the system allocator, plus the size of the
/// largest single allocation per thread (which [`super::run`] checks against
/// [`super::Target::max_alloc`]). Requests above [`REFUSED_ALLOCATION`] are refused, so that a
/// hostile length aborts the test at once (with a note on where to find the input) instead of
/// exhausting the machine.
pub struct GuardedAlloc;

/// Allocations larger than this are refused (the process aborts).
pub const REFUSED_ALLOCATION: usize = 1 << 30;

/// Says why the process is about to abort, without allocating.
fn refuse(size: usize) -> *mut u8 {
    use std::io::Write as _;
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = size;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr();
    let _ = err.write_all(b"pruneforge fuzz: refused an allocation of ");
    let _ = err.write_all(&digits[i..]);
    let _ = err.write_all(
        b" bytes (the process aborts); rerun with PRUNEFORGE_FUZZ_TRACE=1 to keep the input in \
          <crash dir>/<target>/current.bin\n",
    );
    std::ptr::null_mut()
}

fn note_alloc(size: usize) {
    if size >= 1 << 20 {
        let _ = LARGEST_ALLOC.try_with(|l| {
            if size > l.get() {
                l.set(size);
            }
        });
    }
}

// SAFETY: every call is forwarded to `System` unchanged, except requests larger than
// `REFUSED_ALLOCATION`, which report failure with a null pointer as the contract allows.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        if layout.size() > REFUSED_ALLOCATION {
            return refuse(layout.size());
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        if layout.size() > REFUSED_ALLOCATION {
            return refuse(layout.size());
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        if new_size > REFUSED_ALLOCATION {
            return refuse(new_size);
        }
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
