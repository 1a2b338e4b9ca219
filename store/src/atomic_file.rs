//! Small files replaced whole and crash-safely (the snapshot, the purge
//! point, the member ID, the members once known), and the JSON ones read back;
//! and large files freed a few MiB at a time ([`free_gradually`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// The most a write of [`write_atomic`] leaves to be written back at once.
const WRITE_BACK_EVERY_BYTES: usize = 1 << 20;

/// The most [`free_gradually`] frees at once, and its pause after each step.
/// On a disk mounted with `discard`, ext4 without a journal trims the blocks
/// of a file as it frees them, before the call returns: the 64 MiB of a
/// compacted raft log, freed at its last close, held the disk for 44 ms, and
/// the log syncs queued behind it (every write waits for one) as long.
const FREE_STEP_BYTES: u64 = 2 << 20;
const FREE_PAUSE: Duration = Duration::from_millis(2);

/// Write `data` to `dir/name` crash-safely: temp file, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        // A large file (a snapshot) goes to disk a MiB at a time: written
        // back all at once, tens of MiB would queue ahead of the log's next
        // sync, which every write waits for. Only its data, without flushing
        // the disk's cache (what `fdatasync` adds, and the log's syncs wait
        // for too): the one `sync_all` below makes all of it durable.
        for (i, chunk) in data.chunks(WRITE_BACK_EVERY_BYTES).enumerate() {
            f.write_all(chunk)?;
            if data.len() > WRITE_BACK_EVERY_BYTES {
                write_back(&f, (i * WRITE_BACK_EVERY_BYTES) as u64, chunk.len())?;
            }
        }
        f.sync_all()?;
    }
    let path = dir.join(name);
    // Held across the rename: its blocks are freed here, after the new file
    // is durably in its place, not all at once inside the rename.
    let replaced = OpenOptions::new().write(true).open(&path).ok();
    fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    if let Some(replaced) = replaced {
        free_gradually(replaced);
    }
    Ok(())
}

/// Writes `len` bytes of `file` from `offset` to the disk and waits for them,
/// without the metadata or a flush of the disk's cache (`sync_file_range`).
fn write_back(file: &File, offset: u64, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range takes a descriptor `file` keeps open and plain
    // integers; it touches no memory of ours.
    let done = unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, flags) };
    if done == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Frees the blocks of `file` (open for writing), which no name leads to
/// any more (replaced or removed), from its end a few MiB at a time with a
/// pause after each step, so that the disk serves the syncs queued
/// meanwhile; a reader that still has it open sees it shrink. A small file
/// is just closed, and so is one that refuses a step (the close frees the
/// rest). Blocks the calling thread: never call it on a runtime thread or
/// under a lock that writes wait for.
pub(crate) fn free_gradually(file: File) {
    let Ok(mut len) = file.metadata().map(|m| m.len()) else {
        return;
    };
    while len > FREE_STEP_BYTES {
        len -= FREE_STEP_BYTES;
        if file.set_len(len).is_err() {
            return;
        }
        std::thread::sleep(FREE_PAUSE);
    }
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A large file replaced whole reads back as written, and the old one's
    /// blocks are freed before the write returns, even while something still
    /// has it open (its last close would have freed them all at once).
    #[test]
    fn a_large_file_replaced_reads_back_new_and_frees_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * WRITE_BACK_EVERY_BYTES + 123;
        let old: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let new: Vec<u8> = (0..size + 7).map(|i| (i % 241) as u8).collect();
        write_atomic(dir.path(), "snap", &old).unwrap();
        let held = File::open(dir.path().join("snap")).unwrap();
        assert_eq!(held.metadata().unwrap().len(), size as u64);

        write_atomic(dir.path(), "snap", &new).unwrap();
        assert_eq!(fs::read(dir.path().join("snap")).unwrap(), new);
        assert!(!dir.path().join("snap.tmp").exists());
        let left = held.metadata().unwrap();
        assert!(left.len() <= FREE_STEP_BYTES, "{} bytes left", left.len());
        assert!(left.blocks() * 512 <= FREE_STEP_BYTES + 4096);
    }

    /// A small file replaced is just replaced.
    #[test]
    fn a_small_file_replaced_reads_back_new() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "id", b"1").unwrap();
        write_atomic(dir.path(), "id", b"22").unwrap();
        assert_eq!(fs::read(dir.path().join("id")).unwrap(), b"22");
    }
}
