//! File resources, a batch at a time: checked, then repaired, on a thread
//! per core; for a batch, the temp files are written first, fsynced together
//! (or one `syncfs`), then renamed into place on one thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mgmt_core::resource::FileParams;

use crate::{CheckApplyError, map_on_threads, map_on_threads_with};
use crate::{OwnWrites, copy, file};

/// A file resource's CheckApply: a copy of its `source`, or its own content
/// (found in `dir` if that is its parent).
fn check_apply_file(
    p: &FileParams,
    apply: bool,
    durability: file::Durability,
    own: &OwnWrites,
    dir: Option<&file::OpenDir>,
) -> Result<(Vec<String>, Option<file::PendingWrite>), file::FileError> {
    match &p.source {
        Some(source) => copy::check_apply(p, source, apply, own).map(|c| (c, None)),
        None => file::check_apply_in(p, apply, durability, own, dir),
    }
}

/// A worker thread's current parent directory, and that directory held
/// open (`None` if it could not be: a missing directory is not tried again
/// for each of its files).
type HeldDir = Option<(PathBuf, Option<file::OpenDir>)>;

/// The parent directory of the file at `path`, from `held` (opened now if
/// that holds another): a batch's files mostly share a few.
fn parent_held<'a>(held: &'a mut HeldDir, path: &str) -> Option<&'a file::OpenDir> {
    let parent = Path::new(path.trim_end_matches('/')).parent()?;
    if held.as_ref().is_none_or(|(p, _)| p != parent) {
        *held = Some((parent.to_path_buf(), file::OpenDir::open(parent)));
    }
    held.as_ref().and_then(|(_, d)| d.as_ref())
}

/// Files per worker thread below which another thread costs more than it saves.
const FILES_PER_THREAD: usize = 64;

/// From this many files to rewrite in one run, they are written first and
/// fsynced together afterwards (see [`file::Durability`]).
const BATCH_SYNC_MIN_FILES: usize = 8;

/// Threads that fsync a batch: each mostly waits on the disk.
const SYNC_THREADS: usize = 8;

/// From this many rewritten files, one `syncfs` per directory replaces the
/// fsyncs. Measured alternating with cf-agent (which leaves its own files
/// dirty), median of 6: 100 files 37 ms with syncfs, 20 ms with fsyncs on 8
/// threads; 1 000 files 108 ms with syncfs, 174 ms with fsyncs. Each fsync of
/// a new file waits for its data and its inode; syncfs merges the writeback
/// but also flushes other processes' dirty data, which matters less the more
/// of the batch is ours.
const SYNCFS_MIN_FILES: usize = 256;

/// How many threads check a batch of files: one per core.
fn file_threads(files: usize) -> usize {
    files.div_ceil(FILES_PER_THREAD).clamp(1, crate::cores())
}

pub(super) type FileOutcome = (usize, Result<Vec<String>, CheckApplyError>, f64);
type Staged = (
    usize,
    Result<(Vec<String>, Option<file::PendingWrite>), CheckApplyError>,
    f64,
);

/// The error of an item a worker thread left behind when it panicked.
fn lost(what: &'static str) -> CheckApplyError {
    CheckApplyError::Task {
        what,
        reason: "a worker thread panicked".into(),
    }
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Checks files on a few threads, then repairs the ones that differ on a few
/// threads too, then, for a batch, makes every temp file durable (fsyncs on
/// several threads, or one `syncfs`) and renames each into place in order.
/// Checking is CPU and page-cache work and spreads over cores; so does a
/// repair's write of its temp file (measured, 1 000 new files in one
/// directory, C: 22 -> 15 ms on two threads). The renames stay on one thread:
/// each holds the directory's lock. Checking every file before repairing any
/// is faster than repairing each as it is checked (1 000 new files: 74 against
/// 65 ms), likely as the first lookup of a missing name takes the
/// directory's lock, which the other thread's creates hold (checked first,
/// each is a cached negative entry). Blocking: call it from a blocking task.
pub(super) fn check_apply_files(
    files: &[(usize, Arc<FileParams>)],
    apply: bool,
    own: &OwnWrites,
) -> Vec<FileOutcome> {
    let threads = file_threads(files.len());
    let checked = map_on_threads_with(
        files,
        threads,
        || None,
        |held, (_, p)| {
            let started = Instant::now();
            // A copy compares with its source, by path.
            let dir = p
                .source
                .is_none()
                .then(|| parent_held(held, &p.path))
                .flatten();
            let r = check_apply_file(p, false, file::Durability::PerFile, own, dir)
                .map(|(changes, _)| changes)
                .map_err(CheckApplyError::from);
            (r, elapsed_ms(started))
        },
    );
    let checked: Vec<FileOutcome> = files
        .iter()
        .zip(checked)
        .map(|((i, _), r)| match r {
            Some((r, ms)) => (*i, r, ms),
            None => (*i, Err(lost("file")), 0.0),
        })
        .collect();
    if !apply {
        return checked;
    }
    let to_fix: Vec<usize> = checked
        .iter()
        .enumerate()
        .filter(|(_, (_, r, _))| r.as_ref().is_ok_and(|c| !c.is_empty()))
        .map(|(k, _)| k)
        .collect();
    let durability = if to_fix.len() >= BATCH_SYNC_MIN_FILES {
        file::Durability::Batched
    } else {
        file::Durability::PerFile
    };
    // Repair what differs; this checks again, so what it reports is what it did.
    let repaired = map_on_threads(&to_fix, file_threads(to_fix.len()), |&k| {
        let started = Instant::now();
        let r = check_apply_file(&files[k].1, true, durability, own, None)
            .map_err(CheckApplyError::from);
        (r, elapsed_ms(started))
    });
    let mut repaired = to_fix.iter().copied().zip(repaired).peekable();
    let staged: Vec<Staged> = checked
        .into_iter()
        .enumerate()
        .map(
            |(k, (i, r, ms))| match repaired.next_if(|(fixed, _)| *fixed == k) {
                Some((_, Some((r, more)))) => (i, r, ms + more),
                Some((_, None)) => (i, Err(lost("file")), ms),
                None => (i, r.map(|c| (c, None)), ms),
            },
        )
        .collect();
    // Durable first, then visible.
    let pending: Vec<&file::PendingWrite> = staged
        .iter()
        .filter_map(|(_, r, _)| r.as_ref().ok()?.1.as_ref())
        .collect();
    let synced = if pending.len() >= SYNCFS_MIN_FILES {
        let mut by_dir: BTreeMap<&Path, Result<(), CheckApplyError>> = BTreeMap::new();
        pending
            .iter()
            .map(|w| {
                let dir = w.path().parent().unwrap_or(Path::new("/"));
                by_dir
                    .entry(dir)
                    .or_insert_with(|| file::sync_fs(dir).map_err(CheckApplyError::from))
                    .clone()
            })
            .collect()
    } else {
        sync_all(&pending)
    };
    let mut synced = synced.into_iter();
    staged
        .into_iter()
        .map(|(i, r, ms)| {
            let r = r.and_then(|(changes, pending)| match pending {
                None => Ok(changes),
                Some(w) => {
                    synced.next().expect("one result per pending write")?;
                    w.commit()?;
                    Ok(changes)
                }
            });
            (i, r, ms)
        })
        .collect()
}

/// fsyncs pending writes on a few threads; one result per write, in order.
fn sync_all(pending: &[&file::PendingWrite]) -> Vec<Result<(), CheckApplyError>> {
    map_on_threads(pending, SYNC_THREADS.min(pending.len()), |w| {
        w.sync().map_err(CheckApplyError::from)
    })
    .into_iter()
    .map(|r| r.unwrap_or_else(|| Err(lost("fsync"))))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(path: &Path, content: &str) -> Arc<FileParams> {
        let mut p = file::tests::params(path, Some(content));
        p.mode = Some(0o640);
        Arc::new(p)
    }

    #[test]
    fn a_batch_of_new_files_in_a_missing_directory_is_written_on_threads_and_reports_it_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("made/here");
        let n = FILES_PER_THREAD * 4;
        let files: Vec<(usize, Arc<FileParams>)> = (0..n)
            .map(|i| {
                (
                    i,
                    new_file(&dir.join(format!("f{i}")), &format!("hello {i}\n")),
                )
            })
            .collect();
        let own = OwnWrites::default();
        let checked = check_apply_files(&files, false, &own);
        assert!(
            checked
                .iter()
                .all(|(_, r, _)| r.as_ref().is_ok_and(|c| !c.is_empty()))
        );
        assert!(!dir.exists(), "a check writes nothing");

        let applied = check_apply_files(&files, true, &own);
        assert_eq!(
            applied.iter().map(|o| o.0).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "one outcome per file, in order"
        );
        let mut made_parent = 0;
        for (i, r, _) in &applied {
            let changes = r.as_ref().unwrap_or_else(|e| panic!("f{i}: {e}"));
            assert_eq!(changes.last().map(String::as_str), Some("created file"));
            made_parent += changes
                .iter()
                .filter(|c| c.starts_with("created parent"))
                .count();
            let f = dir.join(format!("f{i}"));
            assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("hello {i}\n"));
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
                0o640
            );
        }
        assert_eq!(made_parent, 1, "the directory is made, and reported, once");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        let again = check_apply_files(&files, true, &own);
        assert!(
            again
                .iter()
                .all(|(_, r, _)| r.as_ref().is_ok_and(Vec::is_empty))
        );
    }
}
