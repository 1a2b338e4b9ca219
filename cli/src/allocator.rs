//! The process's allocator: mimalloc, with memory handed back soon after it
//! is freed.
//!
//! Why not glibc's malloc: the store's threads serialise on its arena locks,
//! and it slows as the heap grows; at a million keys puts ran 20 % below an
//! empty store with it, and every figure rose by about half with mimalloc
//! (store/README.md). Why the purge delay: mimalloc 3 keeps freed pages for a
//! second, which after a burst of 100 KiB values held RSS at 216 MiB where
//! 10 ms (mimalloc 2's default) gives 83 MiB, at no cost to throughput.
//!
//! Also compiled into the store's bench (`#[path]`), so it measures what `mgmt`
//! runs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's headers (the same in 2 and 3); the
/// Rust bindings name no constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets the allocator's options. Call first thing in `main`, before any thread
/// starts: mimalloc's option setter is not thread-safe.
pub fn configure() {
    // SAFETY: an integer option set while the process has one thread.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) }
}
