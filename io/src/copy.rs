//! The file resource with a `source`: the target takes the source's content.
//! A file source is compared and copied like `content`; a directory source
//! with `recurse: true` keeps the whole tree in sync: every directory and file
//! of the source exists in the target with the same content and mode, and
//! whatever else is in the target tree is removed.
//!
//! Files are compared by content (a size check first, then the bytes, on one
//! thread per core), never by time stamps. Copies are atomic (temp file and
//! rename); many at once are written first and made durable together before
//! their renames. Symbolic links and special files in the source are refused:
//! what a link should become in the target is not ours to guess.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mgmt_core::resource::FileParams;

use crate::OwnWrites;
use crate::file::{self, Durability, FileError, io_err};

/// The mode bits a copy keeps: not setuid or setgid, since a copy belongs to
/// the agent's user (root, often), not to the source's owner: a user's own
/// setuid binary in a source tree must not become a root one.
const COPIED_MODE_BITS: u32 = 0o1777;

/// From this many copies in one run, they are written first and synced once.
const BATCH_MIN_FILES: usize = 8;

/// How many changed paths a change line lists before it just counts them.
const LISTED: usize = 3;

fn source_err(msg: String) -> FileError {
    FileError::Source(msg)
}

/// Checks a file resource with a source and, if `apply`, repairs it.
/// Blocking: run it off the async runtime.
pub fn check_apply(
    p: &FileParams,
    source: &str,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, FileError> {
    let src = trimmed(source);
    let meta = match fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(source_err(format!(
                "source {} does not exist",
                src.display()
            )));
        }
        Err(e) => return Err(source_err(format!("source {}: {e}", src.display()))),
    };
    if meta.file_type().is_symlink() {
        return Err(source_err(format!(
            "source {} is a symbolic link; mgmt copies files and directories, not links",
            src.display()
        )));
    }
    if meta.is_file() {
        if p.is_dir() {
            return Err(source_err(format!(
                "source {} is a file, but the path ends in '/' (a directory)",
                src.display()
            )));
        }
        let bytes =
            fs::read(src).map_err(|e| source_err(format!("source {}: {e}", src.display())))?;
        // The target takes the source's mode too, unless the graph sets one.
        let (changes, _) = file::check_apply_bytes(
            p,
            Some(&bytes),
            p.mode.or(Some(meta.mode() & COPIED_MODE_BITS)),
            apply,
            Durability::PerFile,
            own,
            None,
        )?;
        return Ok(changes);
    }
    if !meta.is_dir() {
        return Err(source_err(format!(
            "source {} is neither a file nor a directory",
            src.display()
        )));
    }
    if !p.is_dir() {
        return Err(source_err(format!(
            "source {} is a directory: end the path in '/'",
            src.display()
        )));
    }
    // The top directory itself, as any directory resource (mode, owner, force).
    let (mut changes, _) = file::check_apply_bytes(
        p,
        None,
        p.mode.or(Some(meta.mode() & COPIED_MODE_BITS)),
        apply,
        Durability::PerFile,
        own,
        None,
    )?;
    if p.recurse {
        changes.extend(sync_tree(src, trimmed(&p.path), p.force, apply, own)?);
    }
    Ok(changes)
}

fn trimmed(p: &str) -> &Path {
    let t = p.trim_end_matches('/');
    Path::new(if t.is_empty() { "/" } else { t })
}

/// What the source tree holds, relative to its root.
struct Listing {
    dirs: Vec<(PathBuf, u32)>,
    files: Vec<(PathBuf, u32, u64)>,
}

fn list_source(root: &Path) -> Result<Listing, FileError> {
    let mut out = Listing {
        dirs: Vec::new(),
        files: Vec::new(),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries =
            fs::read_dir(&dir).map_err(|e| source_err(format!("source {}: {e}", dir.display())))?;
        for e in entries {
            let e = e.map_err(|e| source_err(format!("source {}: {e}", dir.display())))?;
            let path = e.path();
            let m = fs::symlink_metadata(&path)
                .map_err(|e| source_err(format!("source {}: {e}", path.display())))?;
            let rel = rel.join(e.file_name());
            if m.file_type().is_symlink() {
                return Err(source_err(format!(
                    "source {} is a symbolic link; mgmt copies files and directories, not links",
                    path.display()
                )));
            } else if m.is_dir() {
                out.dirs.push((rel.clone(), m.mode() & COPIED_MODE_BITS));
                stack.push(rel);
            } else if m.is_file() {
                out.files.push((rel, m.mode() & COPIED_MODE_BITS, m.len()));
            } else {
                return Err(source_err(format!(
                    "source {} is neither a file nor a directory",
                    path.display()
                )));
            }
        }
    }
    out.dirs.sort();
    out.files.sort();
    Ok(out)
}

/// What one sync found to do.
#[derive(Default)]
struct Plan {
    mkdirs: Vec<(PathBuf, u32)>,
    copies: Vec<(PathBuf, u32)>,
    chmods: Vec<(PathBuf, u32)>,
    removals: Vec<PathBuf>,
}

fn sync_tree(
    src: &Path,
    dst: &Path,
    force: bool,
    apply: bool,
    own: &OwnWrites,
) -> Result<Vec<String>, FileError> {
    let listing = list_source(src)?;
    let mut plan = Plan::default();
    let wanted: BTreeSet<&Path> = listing
        .dirs
        .iter()
        .map(|(r, _)| r.as_path())
        .chain(listing.files.iter().map(|(r, _, _)| r.as_path()))
        .collect();
    let wanted_dirs: BTreeSet<&Path> = listing.dirs.iter().map(|(r, _)| r.as_path()).collect();

    // Extras first: what the source lacks goes, and a mismatched type is
    // replaced only with force.
    if dst.is_dir() {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = dst.join(&rel);
            // A directory that cannot be read could hide extras: say so,
            // rather than report the tree in sync.
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, "read directory")(e)),
            };
            for e in entries {
                let e = e.map_err(io_err(&dir, "read directory"))?;
                let rel = rel.join(e.file_name());
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                if !wanted.contains(rel.as_path()) {
                    plan.removals.push(rel);
                } else if is_dir != wanted_dirs.contains(rel.as_path()) {
                    if !force {
                        let (has, wants) = if is_dir {
                            ("a directory", "a file")
                        } else {
                            ("not a directory", "a directory")
                        };
                        return Err(source_err(format!(
                            "{} is {has}, but the source has {wants} there (force: true replaces it)",
                            dst.join(&rel).display()
                        )));
                    }
                    plan.removals.push(rel);
                } else if is_dir {
                    stack.push(rel);
                }
            }
        }
    }
    plan.removals.sort();
    let removed: BTreeSet<&Path> = plan.removals.iter().map(PathBuf::as_path).collect();
    let gone = |rel: &Path| rel.ancestors().any(|a| removed.contains(a));

    for (rel, mode) in &listing.dirs {
        let t = dst.join(rel);
        match fs::symlink_metadata(&t) {
            Ok(m) if m.is_dir() && !gone(rel) => {
                if m.mode() & 0o7777 != *mode {
                    plan.chmods.push((rel.clone(), *mode));
                }
            }
            _ => plan.mkdirs.push((rel.clone(), *mode)),
        }
    }
    let differs = compare_all(src, dst, &listing.files, &gone);
    for ((rel, mode, _), (content_differs, mode_now)) in listing.files.iter().zip(differs) {
        if content_differs {
            plan.copies.push((rel.clone(), *mode));
        } else if mode_now != Some(*mode) {
            plan.chmods.push((rel.clone(), *mode));
        }
    }

    let changes = describe(&plan);
    if apply && !changes.is_empty() {
        carry_out(src, dst, &plan, own)?;
    }
    Ok(changes)
}

/// Per source file: whether the target's content differs (or is missing),
/// and the target's mode if it exists. On one thread per core.
fn compare_all(
    src: &Path,
    dst: &Path,
    files: &[(PathBuf, u32, u64)],
    gone: &(dyn Fn(&Path) -> bool + Sync),
) -> Vec<(bool, Option<u32>)> {
    let one = |(rel, _, len): &(PathBuf, u32, u64)| -> (bool, Option<u32>) {
        let t = dst.join(rel);
        if gone(rel) {
            return (true, None);
        }
        match fs::symlink_metadata(&t) {
            Ok(m) if m.is_file() => {
                let mode = Some(m.mode() & 0o7777);
                if m.len() != *len {
                    return (true, mode);
                }
                let same =
                    matches!((fs::read(src.join(rel)), fs::read(&t)), (Ok(a), Ok(b)) if a == b);
                (!same, mode)
            }
            _ => (true, None),
        }
    };
    let threads = files.len().div_ceil(256).clamp(1, crate::cores());
    // A file whose comparison was lost (its thread panicked) is copied again.
    crate::map_on_threads(files, threads, one)
        .into_iter()
        .map(|r| r.unwrap_or((true, None)))
        .collect()
}

fn describe(plan: &Plan) -> Vec<String> {
    let list = |verb: &str, what: &str, paths: Vec<&Path>| -> Option<String> {
        if paths.is_empty() {
            return None;
        }
        let shown: Vec<String> = paths
            .iter()
            .take(LISTED)
            .map(|p| p.display().to_string())
            .collect();
        let more = if paths.len() > LISTED {
            format!(" and {} more", paths.len() - LISTED)
        } else {
            String::new()
        };
        Some(format!(
            "{verb} {} {what}: {}{more}",
            paths.len(),
            shown.join(", ")
        ))
    };
    [
        list(
            "removed",
            "extra",
            plan.removals.iter().map(PathBuf::as_path).collect(),
        ),
        list(
            "created",
            "directories",
            plan.mkdirs.iter().map(|(p, _)| p.as_path()).collect(),
        ),
        list(
            "copied",
            "files",
            plan.copies.iter().map(|(p, _)| p.as_path()).collect(),
        ),
        list(
            "changed the mode of",
            "paths",
            plan.chmods.iter().map(|(p, _)| p.as_path()).collect(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Makes the directories above `rel` in `dst` that are missing, each with its
/// source directory's mode.
fn recreate_parents(src: &Path, dst: &Path, rel: &Path) -> Result<(), FileError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() || dst.join(parent).is_dir() {
        return Ok(());
    }
    let mut missing: Vec<&Path> = parent
        .ancestors()
        .filter(|a| !a.as_os_str().is_empty() && !dst.join(a).is_dir())
        .collect();
    missing.reverse();
    for a in missing {
        let t = dst.join(a);
        let mode = fs::symlink_metadata(src.join(a)).map_or(0o755, |m| m.mode() & COPIED_MODE_BITS);
        match fs::create_dir(&t) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io_err(&t, "mkdir")(e));
            }
            _ => {}
        }
        fs::set_permissions(&t, fs::Permissions::from_mode(mode)).map_err(io_err(&t, "chmod"))?;
    }
    Ok(())
}

fn carry_out(src: &Path, dst: &Path, plan: &Plan, own: &OwnWrites) -> Result<(), FileError> {
    for rel in &plan.removals {
        let t = dst.join(rel);
        match fs::symlink_metadata(&t) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&t).map_err(io_err(&t, "remove"))?,
            Ok(_) => fs::remove_file(&t).map_err(io_err(&t, "remove"))?,
            Err(_) => {}
        }
    }
    for (rel, mode) in &plan.mkdirs {
        let t = dst.join(rel);
        fs::create_dir_all(&t).map_err(io_err(&t, "mkdir"))?;
        fs::set_permissions(&t, fs::Permissions::from_mode(*mode)).map_err(io_err(&t, "chmod"))?;
    }
    let durability = if plan.copies.len() >= BATCH_MIN_FILES {
        Durability::Batched
    } else {
        Durability::PerFile
    };
    let mut pending = Vec::new();
    for (rel, mode) in &plan.copies {
        let from = src.join(rel);
        let bytes = fs::read(&from).map_err(io_err(&from, "read"))?;
        let t = dst.join(rel);
        // Someone may have removed its directory since the plan was made.
        recreate_parents(src, dst, rel)?;
        if let Some(w) = file::write_atomically(&t, &bytes, *mode, None, durability, own)? {
            pending.push(w);
        }
    }
    if !pending.is_empty() {
        // Durable first, then visible: one syncfs covers the batch.
        file::sync_fs(dst)?;
        for w in pending {
            w.commit()?;
        }
    }
    for (rel, mode) in &plan.chmods {
        let t = dst.join(rel);
        fs::set_permissions(&t, fs::Permissions::from_mode(*mode)).map_err(io_err(&t, "chmod"))?;
    }
    Ok(())
}
