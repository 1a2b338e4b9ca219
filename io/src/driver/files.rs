//! File resources, a batch at a time: checked on a thread per core, repaired
//! on one thread, and for a batch written first, fsynced together (or one
//! `syncfs`), then renamed into place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mgmt_core::resource::FileParams;

use crate::CheckApplyError;
use crate::{OwnWrites, copy, file};

/// A file resource's CheckApply: a copy of its `source`, or its own content.
fn check_apply_file(
    p: &FileParams,
    apply: bool,
    durability: file::Durability,
    own: &OwnWrites,
) -> Result<(Vec<String>, Option<file::PendingWrite>), file::FileError> {
    match &p.source {
        Some(source) => copy::check_apply(p, source, apply, own).map(|c| (c, None)),
        None => file::check_apply_with(p, apply, durability, own),
    }
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

/// Checks files on a few threads (taking the next file from a shared
/// counter), then repairs the ones that differ on this thread, then, for a
/// batch, fsyncs every temp file on several threads and renames each into
/// place. Checking is CPU and page-cache work and
/// spreads over cores; creating files in one directory does not (perf: a
/// second writer thread spun on the directory lock and the inode allocator,
/// and made applying 1 000 files slower). Blocking: call it from a blocking task.
pub(super) fn check_apply_files(
    files: &[(usize, Arc<FileParams>)],
    apply: bool,
    own: &OwnWrites,
) -> Vec<FileOutcome> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut out: Vec<FileOutcome> = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some((i, p)) = files.get(k) else {
                return out;
            };
            let started = Instant::now();
            let r = check_apply_file(p, false, file::Durability::PerFile, own)
                .map(|(changes, _)| changes)
                .map_err(CheckApplyError::from);
            out.push((*i, r, started.elapsed().as_secs_f64() * 1000.0));
        }
    };
    let threads = file_threads(files.len());
    let mut checked = if threads == 1 {
        work()
    } else {
        std::thread::scope(|s| {
            let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
            let mut out = work();
            for h in helpers {
                // A helper that panicked leaves its files without an outcome;
                // they are reported as failed below.
                if let Ok(done) = h.join() {
                    out.extend(done);
                }
            }
            out
        })
    };
    if checked.len() < files.len() {
        let have: BTreeSet<usize> = checked.iter().map(|o| o.0).collect();
        for (i, _) in files {
            if !have.contains(i) {
                let lost = CheckApplyError::Task {
                    what: "file",
                    reason: "a worker thread panicked".into(),
                };
                checked.push((*i, Err(lost), 0.0));
            }
        }
    }
    if !apply {
        return checked;
    }
    let params: BTreeMap<usize, &FileParams> = files.iter().map(|(i, p)| (*i, &**p)).collect();
    let to_fix = checked
        .iter()
        .filter(|(_, r, _)| r.as_ref().is_ok_and(|c| !c.is_empty()))
        .count();
    let durability = if to_fix >= BATCH_SYNC_MIN_FILES {
        file::Durability::Batched
    } else {
        file::Durability::PerFile
    };
    // Repair what differs; this checks again, so what it reports is what it did.
    let staged: Vec<Staged> = checked
        .into_iter()
        .map(|(i, r, ms)| match r {
            Ok(changes) if !changes.is_empty() => {
                let started = Instant::now();
                let r = check_apply_file(params[&i], true, durability, own)
                    .map_err(CheckApplyError::from);
                (i, r, ms + started.elapsed().as_secs_f64() * 1000.0)
            }
            r => (i, r.map(|c| (c, None)), ms),
        })
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
    let next = AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(w) = pending.get(k) else {
                return out;
            };
            out.push((k, w.sync().map_err(CheckApplyError::from)));
        }
    };
    let mut done: Vec<(usize, Result<(), CheckApplyError>)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..SYNC_THREADS.min(pending.len()))
            .map(|_| s.spawn(work))
            .collect();
        let mut out = work();
        for h in helpers {
            if let Ok(d) = h.join() {
                out.extend(d);
            }
        }
        out
    });
    done.sort_by_key(|(k, _)| *k);
    let lost = CheckApplyError::Task {
        what: "fsync",
        reason: "a worker thread panicked".into(),
    };
    let mut results = vec![Err(lost); pending.len()];
    for (k, r) in done {
        results[k] = r;
    }
    results
}
