//! Persistent raft log: one append-only file of CRC-framed entries, plus the vote
//! (`vote_file`) and the purge point in small files.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is one
//! `Entry` in the store's binary encoding (`codec`; logs of JSON frames still
//! read). `append` writes the frames and hands openraft's callback to a
//! flusher thread, which `fdatasync`s and only then tells openraft the entries are
//! durable. Appends that arrive while a sync runs share the next one (group commit),
//! so throughput is not bounded by one fsync per write. On open, frames are read until the first one that is short
//! (a torn write), fails its CRC, does not parse, or breaks the index sequence; that tail
//! is reported with a `tracing` warning and cut off the file, so it is never served.
//!
//! A purge only forgets entries in memory: openraft calls it on its core task,
//! where a write to disk would hold up every request. A compactor thread then
//! records the purge point durably and, once purged frames are most of the
//! file, copies the live frames (one contiguous tail) to a new file and swaps
//! it in, holding the lock only to copy what was appended meanwhile.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::Serialize;

use crate::atomic_file::{free_gradually, read_json, write_atomic};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::vote_file::VoteFile;

pub(crate) const LOG_FILE: &str = "raft.log";
const PURGED_FILE: &str = "purged.json";

/// What opening the log found at its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// File offset where the first bad frame started (the new file length).
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Where one entry's frame is in the file.
#[derive(Clone, Copy, Debug)]
struct Placed {
    offset: u64,
    /// The whole frame, header included.
    len: u64,
    log_id: LogId,
}

/// Most bytes of recent entries kept decoded in memory: replication and the
/// state machine read an entry right after it is appended; older ones are
/// read back from the file (the page cache, mostly) when a slow follower
/// needs them.
const CACHE_BYTES: u64 = 16 << 20;

/// An entry kept decoded, and the size of its frame (what the cache counts).
struct Cached {
    entry: Entry,
    frame_len: u64,
}

/// Drops the oldest cached entries until their frames are at most
/// [`CACHE_BYTES`].
fn trim_cache(cache: &mut BTreeMap<u64, Cached>, cache_bytes: &mut u64) {
    while *cache_bytes > CACHE_BYTES {
        let Some((_, old)) = cache.pop_first() else {
            break;
        };
        *cache_bytes = cache_bytes.saturating_sub(old.frame_len);
    }
}

/// What a purge took out of memory: dropped by the compactor thread, not on
/// openraft's core task, which every request waits for (a purge after a
/// snapshot of a minute of etcd's `check perf` forgets some 50 000 entries,
/// 12 000 of them cached: 9 ms to free).
struct Forgotten {
    _entries: BTreeMap<u64, Placed>,
    _cache: BTreeMap<u64, Cached>,
}

struct Inner {
    dir: PathBuf,
    file: File,
    file_len: u64,
    /// index -> where its frame is, in index order in the file after the
    /// purged frames. Entries themselves are not kept: memory follows the
    /// cache, not the log.
    entries: BTreeMap<u64, Placed>,
    /// The newest entries, decoded, at most [`CACHE_BYTES`] of frames.
    cache: BTreeMap<u64, Cached>,
    cache_bytes: u64,
    last_purged: Option<LogId>,
    /// The last purge point the compactor is done with: recorded on disk, and
    /// the file compacted if that was due.
    purge_done: Option<LogId>,
    /// Purged frames may be dropped from the file once they are this many
    /// bytes and most of it.
    compact_after: u64,
    /// Counts truncations: a copy the compactor made before one is stale.
    truncations: u64,
    /// Counts swaps of `file` for a compacted copy: a sync of the file taken
    /// before one does not cover frames only in the new file.
    swaps: u64,
    /// The last swap's rename may not be on disk yet: a crash would come back
    /// to the old file, without the frames appended since.
    swap_unsynced: bool,
    /// Callbacks of appends written but not yet synced.
    unsynced: Vec<LogFlushed<TypeConfig>>,
    /// Bytes appended since the last purge, and how many ask for a snapshot:
    /// `snapshot_after`, or the last snapshot's size if larger.
    appended: u64,
    snapshot_after: u64,
    snapshot_bytes: Arc<AtomicU64>,
    wants_snapshot: Arc<tokio::sync::Notify>,
}

/// Most purged bytes the file keeps before they are dropped (if they are
/// also most of it). Every start reads the whole file, and a one-shot run
/// from cron appends about 0.5 KB to it: at 4 MiB, each start read and
/// checked some 7 000 frames of earlier runs.
const COMPACT_AFTER: u64 = 1 << 20;

/// The log storage handed to openraft; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The vote: apart from `inner`, so that appends and syncs of the log
    /// do not wait for a vote's save, nor it for them.
    vote: Arc<Mutex<VoteFile>>,
    /// How long each sync of the log took (`/metrics`).
    fsyncs: Arc<crate::histogram::Histogram>,
    /// Wakes the flusher; it exits once every clone is gone.
    flush: mpsc::Sender<()>,
    /// Wakes the compactor after a purge; it exits once every clone is gone.
    compact: mpsc::Sender<Forgotten>,
    /// Held while a purge is recorded: by the compactor, or by
    /// [`LogStore::settle_purges`] as the member stops.
    recording: Arc<Mutex<()>>,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

/// Syncs the log and completes the callbacks of every append written before the sync.
fn flusher(
    inner: Arc<Mutex<Inner>>,
    wake: mpsc::Receiver<()>,
    fsyncs: Arc<crate::histogram::Histogram>,
) {
    while wake.recv().is_ok() {
        while wake.try_recv().is_ok() {}
        let (callbacks, file, swaps) = {
            let mut g = lock(&inner);
            if g.unsynced.is_empty() {
                continue;
            }
            (std::mem::take(&mut g.unsynced), g.file.try_clone(), g.swaps)
        };
        // Every frame of these callbacks was written before we took them, so one
        // sync of the file (outside the lock: appends go on meanwhile) covers them.
        let started = std::time::Instant::now();
        let mut synced = file.as_ref().map_err(clone_err).and_then(|f| f.sync_data());
        fsyncs.observe(started.elapsed());
        // The compactor swapped files: those frames may live only in the new
        // file (copied, not synced), whose rename may not be on disk yet.
        let swapped = {
            let g = lock(&inner);
            (g.swaps != swaps || g.swap_unsynced)
                .then(|| (g.swaps, g.file.try_clone(), g.dir.clone()))
        };
        if let Some((swaps, new, dir)) = &swapped {
            synced = synced
                .and(new.as_ref().map_err(clone_err))
                .and_then(|f| f.sync_data())
                .and_then(|()| File::open(dir)?.sync_all());
            let mut g = lock(&inner);
            if synced.is_ok() && g.swaps == *swaps {
                g.swap_unsynced = false;
            }
        }
        complete(callbacks, synced);
        // Only now: if the compactor swapped files, this may be the old one's
        // last close, which frees what of its blocks the compactor has not
        // freed yet.
        drop((file, swapped));
    }
}

fn clone_err(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Records each purge point and compacts the file when a purge asks.
fn compactor(inner: Arc<Mutex<Inner>>, wake: mpsc::Receiver<Forgotten>, recording: Arc<Mutex<()>>) {
    while let Ok(forgotten) = wake.recv() {
        drop(forgotten);
        while wake.try_recv().is_ok() {}
        if let Err(e) = record_purge_and_compact(&inner, &recording, true) {
            // The file keeps its purged frames (harmless: they are skipped on
            // open) until a later purge tries again.
            tracing::warn!(error = %e, "cannot compact the raft log");
        }
    }
}

/// Writes the purge point to disk, then drops the frames at or below it from
/// the file if they are most of it. Appends go on meanwhile: the lock is held
/// only to copy the frames appended since the bulk copy and to swap files.
/// `recording` is held throughout: the compactor and
/// [`LogStore::settle_purges`] never record at once. The old file's blocks are
/// freed [`gradually`](free_gradually) if asked (by the compactor thread,
/// beside which the log goes on).
fn record_purge_and_compact(
    inner: &Mutex<Inner>,
    recording: &Mutex<()>,
    gradually: bool,
) -> io::Result<()> {
    let _recording = recording.lock().unwrap_or_else(|e| e.into_inner());
    let (purged, dir, start, end, truncations, file) = {
        let g = lock(inner);
        if g.last_purged == g.purge_done {
            return Ok(());
        }
        let start = g.first_live_offset();
        let compact = start >= g.compact_after && start * 2 >= g.file_len;
        let file = if compact {
            Some(g.file.try_clone()?)
        } else {
            None
        };
        let (purged, dir) = (g.last_purged, g.dir.clone());
        (purged, dir, start, g.file_len, g.truncations, file)
    };
    // The purge point is on disk before any frame below it leaves the file:
    // the log on disk always starts right after it.
    write_atomic(&dir, PURGED_FILE, &json(&purged))?;
    let Some(file) = file else {
        lock(inner).purge_done = purged;
        return Ok(());
    };
    let tmp = dir.join(format!("{LOG_FILE}.tmp"));
    let mut out = File::create(&tmp)?;
    copy_range(&file, start, end, &mut out)?;
    out.sync_data()?;
    let mut g = lock(inner);
    if g.truncations != truncations {
        // A truncation rewrote frames we copied: leave it to the next purge.
        drop(g);
        return fs::remove_file(&tmp);
    }
    let file_len = g.file_len;
    copy_range(&g.file, end, file_len, &mut out)?;
    // Opened before the rename: once the new file is the log, appends must
    // go to it, whatever fails.
    let new = OpenOptions::new().read(true).append(true).open(&tmp)?;
    fs::rename(&tmp, dir.join(LOG_FILE))?;
    // Never under the lock: the old file's blocks are freed below, and
    // appends would wait for it.
    let old = std::mem::replace(&mut g.file, new);
    for placed in g.entries.values_mut() {
        placed.offset -= start;
    }
    g.file_len -= start;
    g.swaps += 1;
    g.swap_unsynced = true;
    let swaps = g.swaps;
    drop(g);
    // Until the rename is on disk, a crash comes back to the old file, which
    // holds every frame the new one had when swapped in; the flusher syncs the
    // directory too before it acknowledges frames appended after the swap.
    File::open(&dir)?.sync_all()?;
    {
        let mut g = lock(inner);
        if g.swaps == swaps {
            g.swap_unsynced = false;
        }
        g.purge_done = purged;
    }
    // Only now that no name leads to it on disk either. Freed at once by
    // the last close, its blocks held the disk and every log sync for tens
    // of ms; a member that stops has no syncs left to wait.
    drop(file);
    if gradually {
        free_gradually(old);
    }
    Ok(())
}

/// Copies the bytes `start..end` of `from` to the end of `to`.
fn copy_range(from: &File, start: u64, end: u64, to: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; (end - start).min(1 << 20) as usize];
    let mut at = start;
    while at < end {
        let n = buf.len().min((end - at) as usize);
        from.read_exact_at(&mut buf[..n], at)?;
        to.write_all(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Tells openraft how the sync covering these appends went.
fn complete(callbacks: Vec<LogFlushed<TypeConfig>>, result: io::Result<()>) {
    for callback in callbacks {
        callback.log_io_completed(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(clone_err(e)),
        });
    }
}

/// Whether a whole frame with a matching CRC starts at `pos`.
fn valid_frame_at(bytes: &[u8], pos: usize) -> bool {
    let Some(header) = bytes.get(pos..pos + 8) else {
        return false;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    len > 0
        && bytes
            .get(pos + 8..pos + 8 + len)
            .is_some_and(|p| crc32fast::hash(p) == crc)
}

fn frame(entry: &Entry) -> io::Result<Vec<u8>> {
    let payload = crate::codec::encode(entry)?;
    let mut buf = Vec::with_capacity(payload.len() + 8);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    Ok(buf)
}

impl LogStore {
    /// Open (or create) the log in `dir`. Returns the torn tail it cut, if any.
    /// Without `flusher_thread`, each append syncs before it returns (no group
    /// commit), for runtimes where OS threads would escape a simulated clock.
    pub fn open(
        dir: &Path,
        flusher_thread: bool,
        snapshot_after: u64,
    ) -> io::Result<(LogStore, Option<TornTail>)> {
        fs::create_dir_all(dir)?;
        // A restarted member does not know how far its old term committed: load the
        // vote as not committed, so it rejoins as a follower and a leader is elected
        // in a new term (whose first entry fixes the commit index) before any
        // linearizable read is answered.
        let mut vote = VoteFile::open(dir)?;
        vote.hold_uncommitted();
        let last_purged: Option<LogId> = read_json(&dir.join(PURGED_FILE))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;

        let mut entries = BTreeMap::new();
        let (mut cache, mut cache_bytes) = (BTreeMap::new(), 0u64);
        let mut pos: usize = 0;
        let mut expect: Option<u64> = last_purged.map(|l| l.index + 1);
        let mut torn = None;
        while pos < bytes.len() {
            let bad = |reason: &str| TornTail {
                offset: pos as u64,
                dropped_bytes: (bytes.len() - pos) as u64,
                reason: reason.to_string(),
            };
            if bytes.len() - pos < 8 {
                torn = Some(bad("short frame header"));
                break;
            }
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
            if bytes.len() - pos - 8 < len {
                torn = Some(bad("short frame payload"));
                break;
            }
            let payload = &bytes[pos + 8..pos + 8 + len];
            if crc32fast::hash(payload) != crc {
                // A torn write is the last thing in the file. A bad frame with a
                // good one after it is corruption in the middle: cutting there
                // would drop acknowledged entries, so refuse to open.
                if valid_frame_at(&bytes, pos + 8 + len) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: corrupt frame at offset {pos} with valid frames after it; \
                             refusing to open (restore the data directory or remove this member's state)",
                            path.display()
                        ),
                    ));
                }
                torn = Some(bad("CRC mismatch"));
                break;
            }
            // A frame the purge left is decoded whole (a bad one is a torn
            // tail) and kept in the cache: raft's start reads the log's
            // membership and leader changes right after (a one-shot run's
            // store, restarted each time, decoded its entries twice over).
            // Of a purged frame only the log ID that leads the entry: until
            // the file is compacted, purged frames are most of it.
            let decoded = match crate::codec::decode_prefix::<LogId>(payload) {
                Ok(Some(id)) if last_purged.is_some_and(|p| id.index <= p.index) => Ok((id, None)),
                Ok(_) => crate::codec::decode::<Entry>(payload).map(|e| (e.log_id, Some(e))),
                Err(e) => Err(e),
            };
            let (log_id, entry) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    torn = Some(bad(&format!("undecodable entry: {e}")));
                    break;
                }
            };
            let index = log_id.index;
            if last_purged.is_none_or(|p| index > p.index) {
                if let Some(want) = expect
                    && index != want
                {
                    torn = Some(bad(&format!("entry index {index}, expected {want}")));
                    break;
                }
                expect = Some(index + 1);
                let placed = Placed {
                    offset: pos as u64,
                    len: (len + 8) as u64,
                    log_id,
                };
                entries.insert(index, placed);
                if let Some(entry) = entry {
                    let frame_len = placed.len;
                    cache.insert(index, Cached { entry, frame_len });
                    cache_bytes += frame_len;
                    // The newest entries stay, as appends would have left them.
                    trim_cache(&mut cache, &mut cache_bytes);
                }
            }
            pos += 8 + len;
        }
        if let Some(t) = &torn {
            tracing::warn!(
                log = %path.display(),
                offset = t.offset,
                dropped_bytes = t.dropped_bytes,
                reason = %t.reason,
                "raft log has a torn or corrupt tail; truncating it"
            );
            file.set_len(t.offset)?;
            file.sync_all()?;
        }
        let file_len = torn.as_ref().map_or(bytes.len() as u64, |t| t.offset);
        let inner = Arc::new(Mutex::new(Inner {
            dir: dir.to_path_buf(),
            file,
            file_len,
            entries,
            cache,
            cache_bytes,
            last_purged,
            purge_done: last_purged,
            compact_after: COMPACT_AFTER,
            truncations: 0,
            swaps: 0,
            swap_unsynced: false,
            unsynced: Vec::new(),
            appended: 0,
            snapshot_after,
            snapshot_bytes: Arc::default(),
            wants_snapshot: Arc::new(tokio::sync::Notify::new()),
        }));
        let (flush, wake) = mpsc::channel();
        let (compact, wake_compactor) = mpsc::channel();
        let recording = Arc::new(Mutex::new(()));
        let fsyncs = Arc::new(crate::histogram::Histogram::wal_fsync());
        if flusher_thread {
            let (for_flusher, timed) = (inner.clone(), fsyncs.clone());
            std::thread::Builder::new()
                .name("raft-log-flush".into())
                .spawn(move || flusher(for_flusher, wake, timed))?;
            let (for_compactor, its_lock) = (inner.clone(), recording.clone());
            std::thread::Builder::new()
                .name("raft-log-compact".into())
                .spawn(move || compactor(for_compactor, wake_compactor, its_lock))?;
        }
        Ok((
            LogStore {
                inner,
                vote: Arc::new(Mutex::new(vote)),
                fsyncs,
                flush,
                compact,
                recording,
            },
            torn,
        ))
    }

    /// Records the last purge now, if the compactor has not (waiting for it
    /// if it is at it). A member that stops right after a purge would
    /// otherwise leave it unrecorded: a one-shot run purges as it starts
    /// (after loading its snapshot) and is gone a few milliseconds later, so
    /// every start purged again, the file was never compacted, and each start
    /// read every frame of every earlier run. Blocking (file writes and syncs).
    pub fn settle_purges(&self) -> io::Result<()> {
        record_purge_and_compact(&self.inner, &self.recording, false)
    }

    /// A purge the compactor has not recorded on disk yet (what
    /// [`LogStore::settle_purges`] would do now).
    pub(crate) fn purge_unrecorded(&self) -> bool {
        let g = self.lock();
        g.last_purged != g.purge_done
    }

    /// How long the log's syncs took.
    pub(crate) fn fsync_durations(&self) -> &crate::histogram::Histogram {
        &self.fsyncs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// Notified once `snapshot_after` bytes (or the last snapshot's size, if
    /// larger) were appended since the last purge: a snapshot (and the purge
    /// after it) keeps the log's size, on disk, bounded by bytes written,
    /// whatever the entries' sizes, and writes at most as much as the log.
    pub fn wants_snapshot(&self) -> Arc<tokio::sync::Notify> {
        self.lock().wants_snapshot.clone()
    }

    /// Follows the state machine's last snapshot size, kept in `bytes`.
    pub fn follow_snapshot_size(&self, bytes: Arc<AtomicU64>) {
        self.lock().snapshot_bytes = bytes;
    }

    /// The highest index the log may be purged up to and still hold, after
    /// it, at most `bytes` of frames (for followers that lag a little); none
    /// if all of it fits.
    pub fn purge_point(&self, bytes: u64) -> Option<u64> {
        let g = self.lock();
        let mut kept = 0;
        for (index, placed) in g.entries.iter().rev() {
            kept += placed.len;
            if kept > bytes {
                return Some(*index);
            }
        }
        None
    }

    /// The id of the last entry in the log (or of the last purged), if any.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.lock().last_log_id()
    }

    /// Index of the last entry in the log, if any.
    pub fn last_index(&self) -> Option<u64> {
        let g = self.lock();
        g.entries
            .keys()
            .next_back()
            .copied()
            .or(g.last_purged.map(|l| l.index))
    }
}

impl Inner {
    /// Writes the entries' frames at the end of the file (not synced).
    fn write_frames(&mut self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut placed = Vec::new();
        for entry in entries {
            let offset = self.file_len + buf.len() as u64;
            buf.extend_from_slice(&frame(&entry)?);
            let len = self.file_len + buf.len() as u64 - offset;
            placed.push((
                Placed {
                    offset,
                    len,
                    log_id: entry.log_id,
                },
                entry,
            ));
        }
        if let Err(e) = self.file.write_all(&buf) {
            // The file may hold part of the batch; restore the known-good length.
            let _ = self.file.set_len(self.file_len);
            return Err(e);
        }
        self.file_len += buf.len() as u64;
        let before = self.appended;
        self.appended += buf.len() as u64;
        let after = (self.snapshot_bytes.load(Ordering::Relaxed)).max(self.snapshot_after);
        if before < after && self.appended >= after {
            self.wants_snapshot.notify_one();
        }
        for (p, entry) in placed {
            let index = p.log_id.index;
            self.entries.insert(index, p);
            self.cache(index, entry, p.len);
        }
        Ok(())
    }

    /// Where the first entry not purged starts: every byte before it is a
    /// purged frame.
    fn first_live_offset(&self) -> u64 {
        self.entries
            .values()
            .next()
            .map_or(self.file_len, |p| p.offset)
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|p| p.log_id)
            .or(self.last_purged)
    }

    /// The bytes of one frame, header included.
    fn read_frame(&self, placed: &Placed) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; placed.len as usize];
        self.file.read_exact_at(&mut buf, placed.offset)?;
        Ok(buf)
    }

    fn entry(&self, index: u64) -> io::Result<Option<Entry>> {
        if let Some(c) = self.cache.get(&index) {
            return Ok(Some(c.entry.clone()));
        }
        let Some(placed) = self.entries.get(&index) else {
            return Ok(None);
        };
        let frame = self.read_frame(placed)?;
        let payload = &frame[8..];
        let crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(payload) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("raft log entry {index}: CRC mismatch on read"),
            ));
        }
        Ok(Some(crate::codec::decode(payload)?))
    }

    fn cache(&mut self, index: u64, entry: Entry, frame_len: u64) {
        self.cache.insert(index, Cached { entry, frame_len });
        self.cache_bytes += frame_len;
        trim_cache(&mut self.cache, &mut self.cache_bytes);
    }

    /// Takes the entries from `index` on out of memory, cached or not.
    fn forget_from(&mut self, index: u64) -> Forgotten {
        let cache = self.cache.split_off(&index);
        self.uncounted(&cache);
        Forgotten {
            _entries: self.entries.split_off(&index),
            _cache: cache,
        }
    }

    /// Takes the entries before `index` out of memory, cached or not.
    fn forget_before(&mut self, index: u64) -> Forgotten {
        let kept = self.cache.split_off(&index);
        let cache = std::mem::replace(&mut self.cache, kept);
        self.uncounted(&cache);
        let kept = self.entries.split_off(&index);
        Forgotten {
            _entries: std::mem::replace(&mut self.entries, kept),
            _cache: cache,
        }
    }

    fn uncounted(&mut self, gone: &BTreeMap<u64, Cached>) {
        let bytes: u64 = gone.values().map(|c| c.frame_len).sum();
        self.cache_bytes = self.cache_bytes.saturating_sub(bytes);
    }
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("raft metadata serializes")
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let g = self.lock();
        let indexes: Vec<u64> = g.entries.range(range).map(|(i, _)| *i).collect();
        let mut out = Vec::with_capacity(indexes.len());
        for i in indexes {
            match g.entry(i) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(e) => return Err(StorageIOError::read_logs(&e).into()),
            }
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let g = self.lock();
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: g.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.vote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .save(vote)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.vote.lock().unwrap_or_else(|e| e.into_inner()).vote())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.lock();
        match g.write_frames(entries) {
            Ok(()) => {
                g.unsynced.push(callback);
                drop(g);
                if self.flush.send(()).is_err() {
                    // No flusher thread: sync here, before returning.
                    let mut g = self.lock();
                    let result = g.file.sync_data();
                    complete(std::mem::take(&mut g.unsynced), result);
                }
                Ok(())
            }
            Err(e) => {
                drop(g);
                let err = write_err(io::Error::new(e.kind(), e.to_string()));
                callback.log_io_completed(Err(e));
                Err(err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut g = self.lock();
        let Some(offset) = g.entries.get(&log_id.index).map(|p| p.offset) else {
            return Ok(());
        };
        g.file
            .set_len(offset)
            .and_then(|_| g.file.sync_all())
            .map_err(write_err)?;
        g.file_len = offset;
        g.truncations += 1;
        let forgotten = g.forget_from(log_id.index);
        drop(g);
        drop(forgotten);
        Ok(())
    }

    /// Forgets the entries up to `log_id` at once; the compactor records the
    /// purge on disk and drops their frames later (until then a restart just
    /// finds more log than it needs).
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let forgotten = {
            let mut g = self.lock();
            g.last_purged = Some(log_id);
            g.appended = 0;
            g.forget_before(log_id.index + 1)
        };
        if let Err(mpsc::SendError(forgotten)) = self.compact.send(forgotten) {
            // No compactor thread: do its work here.
            drop(forgotten);
            self.settle_purges().map_err(write_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_core::kv::{Command, PutRequest, Timed};
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Normal(Timed {
                now_ms: index,
                command: Command::Put(PutRequest {
                    key: format!("k{index}").into_bytes(),
                    value: vec![index as u8; 300],
                    ..Default::default()
                }),
            }),
        }
    }

    /// An entry of a 64 KiB value.
    fn big(index: u64) -> Entry {
        let mut e = entry(index);
        if let EntryPayload::Normal(Timed {
            command: Command::Put(p),
            ..
        }) = &mut e.payload
        {
            p.value = vec![index as u8; 64 << 10];
        }
        e
    }

    /// Waits, bounded, for the compactor thread to be done with the last
    /// purge (its compaction included) before the files are read again: the
    /// thread has no completion to wait on but the state it leaves.
    async fn compactor_caught_up(log: &LogStore) {
        let done = || {
            let g = log.lock();
            g.purge_done == g.last_purged
        };
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the compactor never caught up");
    }

    fn purge_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 7), index)
    }

    /// Reads every entry after the purge point back from the file alone.
    async fn reopened_entries(dir: &Path) -> (Option<LogId>, Vec<Entry>) {
        let (mut log, torn) = LogStore::open(dir, false, 64 << 20).unwrap();
        assert_eq!(torn, None);
        let state = log.get_log_state().await.unwrap();
        (
            state.last_purged_log_id,
            log.try_get_log_entries(..).await.unwrap(),
        )
    }

    /// A reopened log keeps its newest entries decoded, as its appends had
    /// (raft's start reads them at once), within the cache's budget; older
    /// ones are read back from the file.
    #[tokio::test]
    async fn a_reopened_log_keeps_its_newest_entries_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = LogStore::open(dir.path(), false, 64 << 20).unwrap();
        // About 19 MiB of frames: more than the cache holds.
        let n = 300;
        log.lock().write_frames((1..=n).map(big)).unwrap();
        drop(log);
        let (mut log, torn) = LogStore::open(dir.path(), false, 64 << 20).unwrap();
        assert_eq!(torn, None);
        {
            let inner = log.lock();
            assert!(
                inner.cache.contains_key(&n),
                "the newest entry is in memory"
            );
            assert!(
                !inner.cache.contains_key(&1),
                "the oldest is left to the file"
            );
            assert_cache_counted(&inner);
            assert!(
                inner.cache_bytes > CACHE_BYTES - (80 << 10),
                "the budget is used"
            );
        }
        let all = log.try_get_log_entries(1..=n).await.unwrap();
        assert_eq!(all, (1..=n).map(big).collect::<Vec<_>>());

        // A purge and a truncation take their entries out of the cache too,
        // and the count follows.
        log.purge(purge_id(280)).await.unwrap();
        log.truncate(purge_id(296)).await.unwrap();
        {
            let inner = log.lock();
            assert_eq!(
                inner.cache.keys().copied().collect::<Vec<_>>(),
                (281..=295).collect::<Vec<_>>()
            );
            assert_cache_counted(&inner);
        }
        let left = log.try_get_log_entries(1..=n).await.unwrap();
        assert_eq!(left, (281..=295).map(big).collect::<Vec<_>>());
    }

    /// The cache counts the frames of exactly the entries it holds.
    fn assert_cache_counted(inner: &Inner) {
        for (i, c) in &inner.cache {
            assert_eq!(c.frame_len, inner.entries[i].len, "entry {i}");
        }
        let cached: u64 = inner.cache.values().map(|c| c.frame_len).sum();
        assert_eq!(cached, inner.cache_bytes);
        assert!(inner.cache_bytes <= CACHE_BYTES);
    }

    /// Purged frames leave the file once they are most of it; what is left
    /// reads back whole after a restart, and appends after the swap land in
    /// the new file.
    #[tokio::test]
    async fn a_purge_compacts_the_file_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), false, 64 << 20).unwrap();
        log.lock().compact_after = 4096;
        log.lock().write_frames((1..=100).map(entry)).unwrap();
        let before = log.lock().file_len;
        log.purge(purge_id(80)).await.unwrap();
        let after = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(after * 4 < before, "{after} bytes left of {before}");
        log.lock().write_frames((101..=110).map(entry)).unwrap();
        assert_eq!(
            log.try_get_log_entries(81..=81).await.unwrap(),
            vec![entry(81)]
        );
        drop(log);
        let (purged, entries) = reopened_entries(dir.path()).await;
        assert_eq!(purged, Some(purge_id(80)));
        assert_eq!(entries, (81..=110).map(entry).collect::<Vec<_>>());
    }

    /// A member that stops right after a purge records it before it goes,
    /// whatever the compactor thread has done of it: the next start reads
    /// from the purge point on.
    #[tokio::test]
    async fn a_purge_is_recorded_before_the_member_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), true, 64 << 20).unwrap();
        log.lock().write_frames((1..=50).map(entry)).unwrap();
        log.purge(purge_id(40)).await.unwrap();
        log.settle_purges().unwrap();
        assert_eq!(log.lock().purge_done, Some(purge_id(40)));
        drop(log);
        let (purged, entries) = reopened_entries(dir.path()).await;
        assert_eq!(purged, Some(purge_id(40)));
        assert_eq!(entries, (41..=50).map(entry).collect::<Vec<_>>());
    }

    /// A compaction on the compactor's thread frees the old file a step at a
    /// time while appends go on: what it kept, and what came meanwhile, reads
    /// back after a restart.
    #[tokio::test]
    async fn a_large_log_compacted_on_its_thread_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), true, 64 << 20).unwrap();
        // About 8 MiB: the old file is freed in several steps.
        log.lock().write_frames((1..=120).map(big)).unwrap();
        log.purge(purge_id(100)).await.unwrap();
        for i in 121..=140 {
            log.lock().write_frames([big(i)]).unwrap();
        }
        compactor_caught_up(&log).await;
        assert!(log.lock().swaps > 0, "no compaction ran");
        let on_disk = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        assert!(on_disk < 3 << 20, "{on_disk} bytes left");
        drop(log);
        let (purged, entries) = reopened_entries(dir.path()).await;
        assert_eq!(purged, Some(purge_id(100)));
        assert_eq!(entries, (101..=140).map(big).collect::<Vec<_>>());
    }

    /// With the compactor on its own thread, appends and purges go on while
    /// it copies and swaps files: nothing after the last purge point is lost.
    #[tokio::test]
    async fn appends_during_compaction_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = LogStore::open(dir.path(), true, 64 << 20).unwrap();
        log.lock().compact_after = 16 << 10;
        for i in 1..=3000 {
            log.lock().write_frames([entry(i)]).unwrap();
            if i % 250 == 0 {
                log.purge(purge_id(i - 100)).await.unwrap();
            }
        }
        compactor_caught_up(&log).await;
        assert!(log.lock().swaps > 0, "no compaction ran");
        drop(log);
        let (purged, entries) = reopened_entries(dir.path()).await;
        assert_eq!(purged, Some(purge_id(2900)));
        assert_eq!(entries, (2901..=3000).map(entry).collect::<Vec<_>>());
    }

    /// A log written before the binary encoding (JSON frames) opens and reads
    /// back whole; entries appended after it are binary, in the same file.
    #[tokio::test]
    async fn a_log_of_json_frames_from_an_older_version_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 1..=3 {
            let payload = serde_json::to_vec(&entry(i)).unwrap();
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let (mut log, torn) = LogStore::open(dir.path(), false, 64 << 20).unwrap();
        assert_eq!(torn, None);
        let got = log.try_get_log_entries(1..=3).await.unwrap();
        assert_eq!(got, vec![entry(1), entry(2), entry(3)]);
        // Read back from the file, not a cache.
        let (mut again, _) = LogStore::open(dir.path(), false, 64 << 20).unwrap();
        assert_eq!(
            again.try_get_log_entries(2..=2).await.unwrap(),
            vec![entry(2)]
        );
        assert_eq!(again.last_index(), Some(3));
    }
}
