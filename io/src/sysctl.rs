//! The `sysctl` kind: a kernel parameter under `/proc/sys` and the file in
//! `/etc/sysctl.d/` that sets it at boot.
//!
//! `/proc/sys` gives no events (inotify sees nothing there, and a value can
//! change without any write from user space), so the live value is checked
//! every `interval` seconds by the engine's timer; the persisted file is
//! watched with inotify like any file, and repaired at once.

use std::fs;
use std::io;
use std::path::Path;

use mgmt_core::resource::SysctlParams;

use crate::OwnWrites;
use crate::file::{Durability, FileError, io_err, write_atomically};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{key}: no such kernel parameter ({path} does not exist)")]
    Unknown { key: String, path: String },
    #[error("{key}: the kernel kept {have:?} after writing {want:?}")]
    Refused {
        key: String,
        want: String,
        have: String,
    },
    #[error(transparent)]
    File(#[from] FileError),
}

fn read_live(p: &SysctlParams) -> Result<String, SysctlError> {
    let path = p.proc_path();
    match fs::read_to_string(&path) {
        Ok(v) => Ok(SysctlParams::normal(&v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SysctlError::Unknown {
            key: p.key.clone(),
            path,
        }),
        Err(e) => Err(io_err(Path::new(&path), "read")(e).into()),
    }
}

/// The persisted file's content: one `key = value` line.
fn persisted(p: &SysctlParams) -> String {
    format!("{} = {}\n", p.key, p.value)
}

/// Checks the live value and the persisted file and, with `apply`, sets
/// both. Blocking (small reads and writes): run it off the runtime.
pub fn check_apply(
    p: &SysctlParams,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, SysctlError> {
    let mut changes = Vec::new();
    let live = read_live(p)?;
    if live != p.value {
        changes.push(format!("live value {live:?} -> {:?}", p.value));
        if apply {
            let path = p.proc_path();
            fs::write(&path, format!("{}\n", p.value))
                .map_err(io_err(Path::new(&path), "write"))?;
            let now = read_live(p)?;
            if now != p.value {
                return Err(SysctlError::Refused {
                    key: p.key.clone(),
                    want: p.value.clone(),
                    have: now,
                });
            }
        }
    }
    if let Some(file) = &p.persist {
        let want = persisted(p);
        let path = Path::new(file);
        let have = fs::read_to_string(path).ok();
        if have.as_deref() != Some(want.as_str()) {
            changes.push(format!("persisted in {file}"));
            if apply {
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
                }
                write_atomically(path, want.as_bytes(), 0o644, None, Durability::PerFile, own)?;
            }
        }
    }
    Ok(changes)
}
