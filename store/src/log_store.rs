//! Persistent raft log: one append-only file of CRC-framed entries, plus the vote and
//! the purge point in small files replaced atomically.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload` where the payload is one
//! `Entry` in the store's binary encoding (`codec`; logs of JSON frames still
//! read). `append` writes the frames and hands openraft's callback to a
//! flusher thread, which `fdatasync`s and only then tells openraft the entries are
//! durable. Appends that arrive while a sync runs share the next one (group commit),
//! so throughput is not bounded by one fsync per write. On open, frames are read until the first one that is short
//! (a torn write), fails its CRC, does not parse, or breaks the index sequence; that tail
//! is reported with a `tracing` warning and cut off the file, so it is never served.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use serde::{Serialize, de::DeserializeOwned};

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

pub(crate) const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
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

struct Inner {
    dir: PathBuf,
    file: File,
    file_len: u64,
    /// index -> where its frame is. Entries themselves are not kept: memory
    /// follows the cache, not the log.
    entries: BTreeMap<u64, Placed>,
    /// The newest entries, decoded, at most [`CACHE_BYTES`] of frames.
    cache: BTreeMap<u64, Entry>,
    cache_bytes: u64,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    /// Bytes of frames at or below the purge point still in the file.
    dead_bytes: u64,
    /// Callbacks of appends written but not yet synced.
    unsynced: Vec<LogFlushed<TypeConfig>>,
    /// Bytes appended since the last purge, and how many ask for a snapshot.
    appended: u64,
    snapshot_after: u64,
    wants_snapshot: Arc<tokio::sync::Notify>,
}

/// The log storage handed to openraft; cheap to clone (the reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// How long each sync of the log took (`/metrics`).
    fsyncs: Arc<crate::histogram::Histogram>,
    /// Wakes the flusher; it exits once every clone is gone.
    flush: mpsc::Sender<()>,
}

/// Syncs the log and completes the callbacks of every append written before the sync.
fn flusher(
    inner: Arc<Mutex<Inner>>,
    wake: mpsc::Receiver<()>,
    fsyncs: Arc<crate::histogram::Histogram>,
) {
    while wake.recv().is_ok() {
        while wake.try_recv().is_ok() {}
        let (callbacks, file) = {
            let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.unsynced.is_empty() {
                continue;
            }
            (std::mem::take(&mut g.unsynced), g.file.try_clone())
        };
        // Every frame of these callbacks was written before we took them, so one
        // sync of the file (outside the lock: appends go on meanwhile) covers them.
        let started = std::time::Instant::now();
        let synced = file.and_then(|f| f.sync_data());
        fsyncs.observe(started.elapsed());
        complete(callbacks, synced);
    }
}

/// Tells openraft how the sync covering these appends went.
fn complete(callbacks: Vec<LogFlushed<TypeConfig>>, result: io::Result<()>) {
    for callback in callbacks {
        callback.log_io_completed(match &result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        });
    }
}

/// Write `data` to `dir/name` crash-safely: temp file, fsync, rename, fsync the dir.
pub(crate) fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
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
        let vote: Option<Vote> = read_json::<Vote>(&dir.join(VOTE_FILE))?
            .map(|v| Vote::new(v.leader_id.term, v.leader_id.node_id));
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
        let mut pos: usize = 0;
        let mut dead_bytes = 0u64;
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
            let entry: Entry = match crate::codec::decode(payload) {
                Ok(e) => e,
                Err(e) => {
                    torn = Some(bad(&format!("undecodable entry: {e}")));
                    break;
                }
            };
            let index = entry.log_id.index;
            if last_purged.is_some_and(|p| index <= p.index) {
                dead_bytes += (len + 8) as u64;
            } else {
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
                    log_id: entry.log_id,
                };
                entries.insert(index, placed);
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
            cache: BTreeMap::new(),
            cache_bytes: 0,
            last_purged,
            vote,
            dead_bytes,
            unsynced: Vec::new(),
            appended: 0,
            snapshot_after,
            wants_snapshot: Arc::new(tokio::sync::Notify::new()),
        }));
        let (flush, wake) = mpsc::channel();
        let fsyncs = Arc::new(crate::histogram::Histogram::wal_fsync());
        if flusher_thread {
            let (for_flusher, timed) = (inner.clone(), fsyncs.clone());
            std::thread::Builder::new()
                .name("raft-log-flush".into())
                .spawn(move || flusher(for_flusher, wake, timed))?;
        }
        Ok((
            LogStore {
                inner,
                fsyncs,
                flush,
            },
            torn,
        ))
    }

    /// How long the log's syncs took.
    pub(crate) fn fsync_durations(&self) -> &crate::histogram::Histogram {
        &self.fsyncs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notified once `snapshot_after` bytes were appended since the last
    /// purge: a snapshot (and the purge after it) keeps the log's size, on
    /// disk, bounded by bytes written, whatever the entries' sizes.
    pub fn wants_snapshot(&self) -> Arc<tokio::sync::Notify> {
        self.lock().wants_snapshot.clone()
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
        if let Some(e) = self.cache.get(&index) {
            return Ok(Some(e.clone()));
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

    fn cache(&mut self, index: u64, entry: Entry, len: u64) {
        self.cache.insert(index, entry);
        self.cache_bytes += len;
        while self.cache_bytes > CACHE_BYTES {
            let Some((old, _)) = self.cache.pop_first() else {
                break;
            };
            let len = self.entries.get(&old).map_or(0, |p| p.len);
            self.cache_bytes = self.cache_bytes.saturating_sub(len);
        }
    }

    /// Forget the cached entries whose index `keep` refuses.
    fn uncache(&mut self, keep: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.cache.keys().copied().filter(|i| !keep(*i)).collect();
        for i in gone {
            self.cache.remove(&i);
            let len = self.entries.get(&i).map_or(0, |p| p.len);
            self.cache_bytes = self.cache_bytes.saturating_sub(len);
        }
    }

    /// Rewrite the file without the purged frames once they are most of it.
    fn maybe_compact_file(&mut self) -> io::Result<()> {
        if self.dead_bytes < 4 << 20 || self.dead_bytes * 2 < self.file_len {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let mut out = File::create(&tmp)?;
        let mut offset = 0u64;
        let mut new_entries = BTreeMap::new();
        for (index, placed) in std::mem::take(&mut self.entries) {
            let buf = self.read_frame(&placed)?;
            out.write_all(&buf)?;
            new_entries.insert(index, Placed { offset, ..placed });
            offset += buf.len() as u64;
        }
        out.sync_all()?;
        drop(out);
        fs::rename(&tmp, self.dir.join(LOG_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(self.dir.join(LOG_FILE))?;
        self.entries = new_entries;
        self.file_len = offset;
        self.dead_bytes = 0;
        Ok(())
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
        let mut g = self.lock();
        write_atomic(&g.dir, VOTE_FILE, &json(vote))
            .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
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
        let mut buf = Vec::new();
        let mut placed = Vec::new();
        for entry in entries {
            let offset = g.file_len + buf.len() as u64;
            buf.extend_from_slice(&frame(&entry).map_err(write_err)?);
            let len = g.file_len + buf.len() as u64 - offset;
            placed.push((
                Placed {
                    offset,
                    len,
                    log_id: entry.log_id,
                },
                entry,
            ));
        }
        match g.file.write_all(&buf) {
            Ok(()) => {
                g.file_len += buf.len() as u64;
                let before = g.appended;
                g.appended += buf.len() as u64;
                if before < g.snapshot_after && g.appended >= g.snapshot_after {
                    g.wants_snapshot.notify_one();
                }
                for (p, entry) in placed {
                    let index = p.log_id.index;
                    g.entries.insert(index, p);
                    g.cache(index, entry, p.len);
                }
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
                // The file may hold part of the batch; restore the known-good length.
                let len = g.file_len;
                let _ = g.file.set_len(len);
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
        g.uncache(|i| i < log_id.index);
        g.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut g = self.lock();
        write_atomic(&g.dir, PURGED_FILE, &json(&log_id)).map_err(write_err)?;
        g.last_purged = Some(log_id);
        g.appended = 0;
        g.uncache(|i| i > log_id.index);
        let keep = g.entries.split_off(&(log_id.index + 1));
        let gone = std::mem::replace(&mut g.entries, keep);
        g.dead_bytes += gone.values().map(|p| p.len).sum::<u64>();
        g.maybe_compact_file().map_err(write_err)?;
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
