//! Small files replaced whole and crash-safely (the snapshot, the purge
//! point, the member ID, the members once known), and the JSON ones read back.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;

/// The most a write of [`write_atomic`] leaves unsynced.
const SYNC_EVERY_BYTES: usize = 4 << 20;

/// Write `data` to `dir/name` crash-safely: temp file, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        // A large file (a snapshot) goes to disk a few MiB at a time: one
        // sync of all of it would queue tens of MiB ahead of the log's next
        // sync, which every write waits for.
        for chunk in data.chunks(SYNC_EVERY_BYTES) {
            f.write_all(chunk)?;
            if data.len() > SYNC_EVERY_BYTES {
                f.sync_data()?;
            }
        }
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
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
