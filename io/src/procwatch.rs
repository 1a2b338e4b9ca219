//! Watches of the `/proc` files the kernel flags with `POLLPRI` when what
//! they show changes: `/proc/self/mountinfo` (the mount table of this
//! namespace) and `/proc/sys/kernel/hostname` (sethostname). inotify sees
//! nothing in `/proc`; this is the kernel's own change event (what systemd
//! and libmount wait on), so no polling.

use std::fs;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Calls `on_change` each time the kernel flags `path`; returns why it
/// stopped.
pub async fn watch(path: &str, on_change: impl Fn()) -> String {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("{path}: {e}"),
    };
    // SAFETY: the `File` is owned by the `AsyncFd` from here on, so its
    // descriptor stays open and the same until the `AsyncFd` is dropped.
    let fd = match unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) } {
        Ok(fd) => fd,
        Err(e) => return format!("{path}: cannot poll: {e}"),
    };
    loop {
        match fd.ready(Interest::PRIORITY).await {
            Ok(mut guard) => {
                guard.clear_ready();
                on_change();
            }
            Err(e) => return format!("{path}: poll: {e}"),
        }
    }
}
