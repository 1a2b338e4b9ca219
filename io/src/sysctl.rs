//! The `sysctl` kind: a kernel parameter under `/proc/sys` and the file in
//! `/etc/sysctl.d/` that sets it at boot.
//!
//! `/proc/sys` gives no events (inotify sees nothing there, and a value can
//! change without any write from user space), so the live value is checked
//! every `interval` seconds by the engine's timer; the persisted file is
//! watched with inotify like any file, and repaired at once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use mgmt_core::resource::SysctlParams;

use crate::file::{Durability, FileError, write_atomically};

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("{key}: no such kernel parameter ({path} does not exist)")]
    Unknown { key: String, path: String },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{key}: the kernel kept {have:?} after writing {want:?}")]
    Refused {
        key: String,
        want: String,
        have: String,
    },
    #[error(transparent)]
    Persist(#[from] FileError),
}

/// A value with runs of whitespace as one space (the kernel separates
/// fields with tabs; users write spaces).
fn normal(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_live(p: &SysctlParams) -> Result<String, SysctlError> {
    let path = p.proc_path();
    match fs::read_to_string(&path) {
        Ok(v) => Ok(normal(&v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SysctlError::Unknown {
            key: p.key.clone(),
            path,
        }),
        Err(source) => Err(SysctlError::Io {
            path: path.into(),
            op: "read",
            source,
        }),
    }
}

/// The persisted file's content: one `key = value` line.
fn persisted(p: &SysctlParams) -> String {
    format!("{} = {}\n", p.key, p.value)
}

/// Checks the live value and the persisted file and, with `apply`, sets
/// both. Blocking (small reads and writes): run it off the runtime.
pub fn check_apply(p: &SysctlParams, apply: bool) -> Result<Vec<String>, SysctlError> {
    let mut changes = Vec::new();
    let live = read_live(p)?;
    if live != p.value {
        changes.push(format!("live value {live:?} -> {:?}", p.value));
        if apply {
            let path = p.proc_path();
            fs::write(&path, format!("{}\n", p.value)).map_err(|source| SysctlError::Io {
                path: path.into(),
                op: "write",
                source,
            })?;
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
                    fs::create_dir_all(dir).map_err(|source| SysctlError::Io {
                        path: dir.to_path_buf(),
                        op: "create directory",
                        source,
                    })?;
                }
                write_atomically(path, want.as_bytes(), 0o644, None, Durability::PerFile)?;
            }
        }
    }
    Ok(changes)
}
