//! The `hostname` kind: the static host name in `/etc/hostname` and the
//! kernel's (`/proc/sys/kernel/hostname`, this UTS namespace's). The file
//! is watched through inotify, the kernel's name by its `POLLPRI` change
//! event (`procwatch`): a `hostname other` or an edit of the file is
//! repaired at once, without polling.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::file::{Durability, FileError, write_atomically};

pub const ETC_HOSTNAME: &str = "/etc/hostname";
pub const KERNEL_HOSTNAME: &str = "/proc/sys/kernel/hostname";

#[derive(Debug, thiserror::Error)]
pub enum HostnameError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Write(#[from] FileError),
}

fn io_err(path: &'static str, op: &'static str) -> impl FnOnce(io::Error) -> HostnameError {
    move |source| HostnameError::Io {
        path: PathBuf::from(path),
        op,
        source,
    }
}

/// The name `/etc/hostname` gives: its first line that is not a comment
/// (hostname(5)); empty when there is none or no file.
fn static_name() -> Result<String, HostnameError> {
    match fs::read_to_string(ETC_HOSTNAME) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
            .to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_err(ETC_HOSTNAME, "read")(e)),
    }
}

/// Checks both names and, with `apply`, sets them. Blocking (small files).
pub fn check_apply(name: &str, apply: bool) -> Result<Vec<String>, HostnameError> {
    let mut changes = Vec::new();
    let have = static_name()?;
    if have != name {
        changes.push(format!("static {have:?} -> {name:?}"));
        if apply {
            let path = Path::new(ETC_HOSTNAME);
            let mode = fs::metadata(path).map_or(0o644, |m| m.mode() & 0o7777);
            write_atomically(
                path,
                format!("{name}\n").as_bytes(),
                mode,
                None,
                Durability::PerFile,
            )?;
        }
    }
    let kernel = fs::read_to_string(KERNEL_HOSTNAME).map_err(io_err(KERNEL_HOSTNAME, "read"))?;
    let kernel = kernel.trim_end();
    if kernel != name {
        changes.push(format!("kernel {kernel:?} -> {name:?}"));
        if apply {
            // sethostname(2) of this UTS namespace, as `hostname NAME` does.
            fs::write(KERNEL_HOSTNAME, name).map_err(io_err(KERNEL_HOSTNAME, "write"))?;
        }
    }
    Ok(changes)
}
