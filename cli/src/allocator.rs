//! The process's allocator: mimalloc, with memory handed back soon after it
//! is freed.
//!
//! Why not glibc's malloc: the store's threads serialise on its arena locks,
//! and it slows as the heap grows; at a million keys puts ran 20 % below an
//! empty store with it, and every figure rose by about half with mimalloc
//! (store/README.md). Why the purge delay: mimalloc 3 keeps freed pages for a
//! second, which after a burst of 100 KiB values held RSS at 216 MiB where
//! 10 ms (mimalloc 2's default) gives 83 MiB, at no cost to throughput.
//! Why no eager arena commit: mimalloc commits (and so touches) its first
//! arena chunk whole on an overcommitting kernel, about 9 MiB, where a
//! client-only agent's heap peaks near 2 MiB: committed on demand its RSS
//! is 13 MiB instead of 23 (a fleet runs one on every host).
//! Why a 64 MiB first arena (mimalloc's default is 1 GiB of address space):
//! its bitmaps are set up at every start, 40 of the ~380 page faults of
//! `mgmt --version`; a bigger heap reserves more arenas as it grows.
//! Why that first arena is mapped here, readable and writable from the
//! start: an arena reserved by mimalloc is committed 64 KiB at a time, an
//! `mprotect` each, and each takes the address space's lock for writing,
//! which stalls every other thread's page faults meanwhile (a one-shot check
//! of 1 000 files with the store: 124 `mprotect`s, 24 with this arena; see
//! [`map_first_arena`]).
//!
//! `--features system-allocator` builds with glibc's malloc instead, for heap
//! profilers that intercept malloc (heaptrack, valgrind's massif).
//!
//! Also compiled into the store's bench (`#[path]`), so it measures what `mgmt`
//! runs.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's headers (the same in 2 and 3); the
/// Rust bindings name no constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// `mi_option_arena_eager_commit` (the same in 2 and 3); 0: commit on demand.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_arena_reserve` (the same in 2 and 3), in KiB.
const ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;
const ARENA_RESERVE_KIB: std::ffi::c_long = 64 * 1024;

/// Sets the allocator's options before Rust's runtime allocates anything
/// (mimalloc reads them when it first sets up its arena): a constructor in
/// `.init_array`, which the loader runs before `main`'s runtime starts, with
/// one thread.
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE_EARLY: extern "C" fn() = configure_early;

extern "C" fn configure_early() {
    // SAFETY: integer options set while the process has one thread and
    // before mimalloc served its first allocation.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(ARENA_RESERVE, ARENA_RESERVE_KIB);
    }
    map_first_arena();
}

/// Gives mimalloc its first arena (the size it would reserve, see
/// [`ARENA_RESERVE_KIB`]) mapped readable and writable whole, so that the
/// heap grows within it without a system call: on an overcommitting kernel
/// a page costs nothing until it is touched (`MAP_NORESERVE`: nor does the
/// mapping count against the commit limit where that is heuristic). A
/// one-shot check of 1 000 files with the store, `perf stat` alternating
/// 8 x 20 runs: 18.9 -> 17.9 ms, 24.2 -> 22.3 ms of CPU; `mprotect`s 124 -> 24.
/// `MADV_NOHUGEPAGE`: mimalloc's own eager commit asks for huge pages, and a
/// 2 MiB page at each first touch took a client agent from 13 to 23 MiB; a
/// kernel whose THP is `always` would do the same unasked. Should the
/// mapping fail, mimalloc reserves its arenas itself, as before.
fn map_first_arena() {
    let size = usize::try_from(ARENA_RESERVE_KIB).unwrap_or(0) * 1024;
    // SAFETY: a fresh anonymous mapping, handed whole to mimalloc (which
    // aligns its start to its 64 KiB slices) or unmapped.
    unsafe {
        let start = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if start == libc::MAP_FAILED {
            return;
        }
        libc::madvise(start, size, libc::MADV_NOHUGEPAGE);
        let (committed, large, zeroed, any_numa_node, exclusive) = (true, false, true, -1, false);
        let arena_id = std::ptr::null_mut();
        if !libmimalloc_sys::mi_manage_os_memory_ex(
            start,
            size,
            committed,
            large,
            zeroed,
            any_numa_node,
            exclusive,
            arena_id,
        ) {
            libc::munmap(start, size);
        }
    }
}

/// Hands the pages this thread freed back to the kernel now. mimalloc
/// purges a thread's freed pages only when that thread allocates or frees
/// again: the compile's garbage, freed on the main thread just before it
/// waits on the runtime for the rest of a daemon's life, would stay resident.
#[allow(
    dead_code,
    reason = "the store's bench includes this file and has no compile to release"
)]
pub fn release_freed() {
    // A process that keeps what it frees until it exits would only fault
    // the same pages in again.
    if KEEP_FREED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // SAFETY: mi_collect only walks this thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// For a process about to exit (a single pass): freed memory stays with
/// the process, which hands it all back at once when it ends, rather than
/// being purged page range by page range as it goes (each purge an madvise
/// and, with several threads, a TLB flush on every core); idle threads no
/// longer collect, nor does [`release_freed`]. Call it before the runtime
/// starts.
#[allow(
    dead_code,
    reason = "the store's bench includes this file and has no single pass"
)]
pub fn keep_freed_until_exit() {
    KEEP_FREED.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: an integer option; mimalloc reads it each time it would purge.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// Set by [`keep_freed_until_exit`]: idle threads do not collect.
static KEEP_FREED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How long a blocking thread of the runtime waits for more work before it
/// ends (tokio's default: 10 s). Starting one costs tens of microseconds.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_millis(250);

/// Least time between two collections on one worker.
const IDLE_COLLECT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Memory the runtime's threads freed goes back to the kernel once they are
/// idle, not when they next work: a thread's freed pages are purged only by
/// that thread, so a daemon whose threads checked 10 000 files and went idle
/// held several MiB more, or not, depending on which thread last woke.
/// Workers collect as they park (at most four times a second each, so a
/// busy store pays nothing), and a blocking thread (file batches, compiles)
/// ends after a quarter second without work, its heap handed back with it.
#[allow(
    dead_code,
    reason = "the store's bench includes this file and builds its own runtime"
)]
pub fn release_when_idle(builder: &mut tokio::runtime::Builder) {
    use std::cell::Cell;
    thread_local! {
        static LAST_COLLECT: Cell<Option<std::time::Instant>> = const { Cell::new(None) };
    }
    builder
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .on_thread_park(|| {
            if KEEP_FREED.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let now = std::time::Instant::now();
            let due = LAST_COLLECT
                .get()
                .is_none_or(|t| now - t >= IDLE_COLLECT_EVERY);
            if due {
                LAST_COLLECT.set(Some(now));
                // SAFETY: mi_collect only walks this thread's own heap.
                unsafe { libmimalloc_sys::mi_collect(false) }
            }
        });
}
