//! The `mount` kind: what is mounted at a path (`/proc/self/mountinfo`)
//! and its `/etc/fstab` entry, repaired with mount(8) and umount(8), the
//! steps chosen by `mgmt_core::mounts::plan`.
//!
//! Watched without polling: the kernel flags `/proc/self/mountinfo` with
//! `POLLPRI` whenever the mount table of the namespace changes (what
//! systemd and util-linux's libmount wait on), and `/etc/fstab` is watched
//! through inotify like a file.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use mgmt_core::mounts::{self, MountEntry, Observed, Step};
use mgmt_core::resource::MountParams;

use crate::OwnWrites;
use crate::file::{Durability, FileError, io_err, write_atomically};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error("after mounting, {path} still differs: {left}")]
    NotRepaired { path: String, left: String },
    #[error(transparent)]
    File(#[from] FileError),
}

/// The block device `device` names, if it is one (`UUID=`/`LABEL=` through
/// udev's links), canonical.
fn block_device(device: &str) -> Option<PathBuf> {
    let path = if let Some(uuid) = device.strip_prefix("UUID=") {
        PathBuf::from(format!("/dev/disk/by-uuid/{uuid}"))
    } else if let Some(label) = device.strip_prefix("LABEL=") {
        PathBuf::from(format!("/dev/disk/by-label/{label}"))
    } else {
        PathBuf::from(device)
    };
    let real = fs::canonicalize(&path).ok()?;
    fs::metadata(&real)
        .ok()?
        .file_type()
        .is_block_device()
        .then_some(real)
}

/// The file a loop device reads, from sysfs.
fn loop_backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_str()?;
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim_end()))
}

/// Whether what is mounted is `p`'s device and file system: the same block
/// device, the same image file behind a loop device, or the same name.
fn same_device(p: &MountParams, e: &MountEntry) -> bool {
    if p.fstype != "auto" && p.fstype != e.fstype {
        return false;
    }
    if p.device == e.source {
        return true;
    }
    let mounted = block_device(&e.source);
    if let (Some(want), Some(have)) = (block_device(&p.device), &mounted) {
        return &want == have;
    }
    // An image file is mounted through a loop device.
    let image = fs::canonicalize(&p.device)
        .ok()
        .filter(|f| fs::metadata(f).is_ok_and(|m| m.is_file()));
    match (image, mounted.as_deref().and_then(loop_backing_file)) {
        (Some(image), Some(backing)) => image == backing,
        _ => false,
    }
}

async fn observe(p: &MountParams) -> Result<(Vec<String>, Vec<Step>), MountError> {
    let info = tokio::fs::read_to_string(mounts::MOUNTINFO)
        .await
        .map_err(io_err(Path::new(mounts::MOUNTINFO), "read"))?;
    let fstab = match tokio::fs::read_to_string(mounts::FSTAB).await {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(Path::new(mounts::FSTAB), "read")(e).into()),
    };
    let entries = mounts::parse_mountinfo(&info);
    let mounted = mounts::mounted_at(&entries, &p.path);
    let seen = Observed {
        mounted,
        same_device: mounted.is_some_and(|e| same_device(p, e)),
        fstab: &fstab,
    };
    Ok(mounts::plan(p, &seen))
}

async fn run(cmd: &[&str]) -> Result<(), MountError> {
    Ok(crate::tool::run(cmd, cmd.join(" ")).await?)
}

/// One `mount` resource at a time reads and rewrites the fstab (they all
/// edit the one file: two at once would lose an entry) and changes the
/// mount table (a nested mount waits for its parent anyway).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Checks the mount and its fstab entry and, with `apply`, repairs them.
pub async fn check_apply(
    p: &MountParams,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, MountError> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (changes, steps) = observe(p).await?;
    if !apply || steps.is_empty() {
        return Ok(changes);
    }
    let options = p.options.join(",");
    for step in &steps {
        match step {
            Step::Unmount => run(&["umount", "--", &p.path]).await?,
            Step::Mount => {
                let dir = Path::new(&p.path);
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(io_err(dir, "create mount point"))?;
                run(&[
                    "mount", "-t", &p.fstype, "-o", &options, "--", &p.device, &p.path,
                ])
                .await?;
            }
            Step::Remount => {
                let remount = format!("remount,{options}");
                run(&["mount", "-o", &remount, "--", &p.path]).await?;
            }
            Step::WriteFstab(text) => {
                let fstab = Path::new(mounts::FSTAB);
                let mode = fs::metadata(fstab).map_or(0o644, |m| m.mode() & 0o7777);
                write_atomically(fstab, text.as_bytes(), mode, None, Durability::PerFile, own)?;
            }
        }
    }
    let (left, _) = observe(p).await?;
    if !left.is_empty() {
        return Err(MountError::NotRepaired {
            path: p.path.clone(),
            left: left.join(", "),
        });
    }
    Ok(changes)
}
