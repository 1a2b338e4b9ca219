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
