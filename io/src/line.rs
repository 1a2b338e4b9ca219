//! The `line` kind: every `line` resource of one file (a vertex, grouped by
//! AutoGroup) is applied with one read and one atomic write. What to write
//! is decided by `mgmt_core::line::edit`; this reads and writes.
//!
//! A file is written through a temp file and a rename, like `file`'s
//! content, keeping its mode and owner. A symbolic link is followed (its
//! target is rewritten, as Ansible's `lineinfile` does); the watch is on the
//! path the graph names.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use mgmt_core::line::{Edited, LineError, edit};
use mgmt_core::resource::LineParams;

use crate::OwnWrites;
use crate::file::{Durability, FileError, io_err, write_atomically};

/// A new file's mode (as `file` creates them).
const NEW_FILE_MODE: u32 = 0o644;

/// Why a file's lines could not be checked or written: the whole file's
/// trouble, shared by all its members (a member's own is a [`LineError`]).
#[derive(Debug, thiserror::Error)]
pub enum LineIoError {
    #[error("{0}: is not a regular file")]
    NotAFile(PathBuf),
    #[error(transparent)]
    File(#[from] FileError),
}

/// The file, read: where it really is (links followed), its text (`None`:
/// missing) and, if it exists, its mode and owner.
struct Current {
    real: PathBuf,
    text: Option<String>,
    like: Option<(u32, (u32, u32))>,
}

fn read(path: &Path) -> Result<Current, LineIoError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Current {
                real: path.to_path_buf(),
                text: None,
                like: None,
            });
        }
        Err(e) => return Err(io_err(path, "stat")(e).into()),
    };
    if !meta.is_file() {
        return Err(LineIoError::NotAFile(path.to_path_buf()));
    }
    let real = fs::canonicalize(path).map_err(io_err(path, "resolve"))?;
    let bytes = fs::read(&real).map_err(io_err(path, "read"))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        io_err(path, "read")(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
    })?;
    Ok(Current {
        real,
        text: Some(text),
        like: Some((meta.mode() & 0o7777, (meta.uid(), meta.gid()))),
    })
}

/// Checks the `line` resources of `path` and, if `apply`, writes the file
/// once with all of them. One result per member, in order: what it changed
/// (or would have), or why it could not; `Err` when the file itself could
/// not be read or written. Blocking: run it off the runtime.
pub fn check_apply(
    path: &str,
    members: &[&LineParams],
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<Result<Vec<String>, LineError>>, LineIoError> {
    let current = read(Path::new(path))?;
    let Edited { text, outcomes } = edit(current.text.as_deref(), members);
    let Some(text) = text.filter(|_| apply) else {
        return Ok(outcomes);
    };
    let (mode, owner) = match current.like {
        Some((mode, owner)) => (mode, Some(owner)),
        None => (NEW_FILE_MODE, None),
    };
    write_atomically(
        &current.real,
        text.as_bytes(),
        mode,
        owner,
        Durability::PerFile,
        own,
    )?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_core::resource::Presence;
    use std::os::unix::fs::PermissionsExt;

    fn line(path: &Path, text: &str) -> LineParams {
        LineParams {
            path: path.display().to_string(),
            line: text.into(),
            matches: None,
            state: Presence::Present,
            after: None,
            before: None,
            create: false,
        }
    }

    #[test]
    fn lines_are_written_once_keeping_mode_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.conf");
        fs::write(&real, "a\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (b, c) = (line(&link, "b"), line(&link, "c"));
        let path = link.display().to_string();
        let dry = check_apply(&path, &[&b, &c], false, &OwnWrites::default()).unwrap();
        assert!(dry.iter().all(|o| o.as_ref().is_ok_and(|c| c.len() == 1)));
        assert_eq!(fs::read_to_string(&real).unwrap(), "a\n");
        let done = check_apply(&path, &[&b, &c], true, &OwnWrites::default()).unwrap();
        assert!(done.iter().all(|o| o.is_ok()), "{done:?}");
        assert_eq!(fs::read_to_string(&real).unwrap(), "a\nb\nc\n");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::metadata(&real).unwrap().mode() & 0o7777, 0o600);
        let again = check_apply(&path, &[&b, &c], true, &OwnWrites::default()).unwrap();
        assert!(again.iter().all(|o| o.as_ref().is_ok_and(|c| c.is_empty())));
    }

    #[test]
    fn a_missing_file_is_an_error_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("new.conf");
        let mut a = line(&f, "x");
        let path = f.display().to_string();
        let r = check_apply(&path, &[&a], true, &OwnWrites::default()).unwrap();
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        a.create = true;
        assert!(check_apply(&path, &[&a], true, &OwnWrites::default()).unwrap()[0].is_ok());
        assert_eq!(fs::read_to_string(&f).unwrap(), "x\n");
    }
}
