//! I/O adapters for mgmt: the real resources (file, exec, noop, pkg, svc, timer, msg, user, group, line, sysctl, mount, hostname) and the async
//! driver that runs the pure `mgmt-core` engine against them.
//!
//! Nothing here makes scheduling decisions: the engine decides, the driver
//! does. See ARCHITECTURE.md for the flow of one event.

pub mod account;
mod check_apply_error;
pub mod copy;
pub mod dpkg;
pub mod driver;
pub mod exec;
pub mod facts;
pub mod file;
pub mod fswatch;
pub mod hostname;
pub mod line;
pub mod mount;
pub mod msg;
mod own_writes;
pub mod packagekit;
pub mod pkg;
pub mod procwatch;
pub mod svc;
pub mod sysctl;
pub mod tool;

pub use check_apply_error::CheckApplyError;
pub use own_writes::OwnWrites;

pub use driver::{
    DriverError, Observer, Progress, Reload, ResourceRun, RunOptions, RunReport, run,
};

/// The CPUs this process may use (its affinity and cgroup quota), asked of
/// the kernel once: each ask reads a few cgroup files.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `f` of every item, on `threads` threads that each take the next item from
/// a shared counter; in the items' order. An item whose worker thread
/// panicked has `None`.
pub(crate) fn map_on_threads<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    map_on_threads_with(items, threads, || (), |(), item| f(item))
}

/// [`map_on_threads`], each thread keeping a state of its own from `init`
/// for the items it takes (a directory it holds open, say).
pub(crate) fn map_on_threads_with<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        let mut state = init();
        loop {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(k) else {
                return out;
            };
            out.push((k, f(&mut state, item)));
        }
    };
    let done = if threads <= 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut out = work();
            for h in helpers {
                // A helper that panicked leaves its items without a result.
                if let Ok(d) = h.join() {
                    out.extend(d);
                }
            }
            out
        })
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    for (k, r) in done {
        results[k] = Some(r);
    }
    results
}
