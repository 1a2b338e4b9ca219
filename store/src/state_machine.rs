//! The raft state machine: the pure [`KvStore`] plus what raft needs (last applied log
//! ID, membership) and the watch hub that fans applied events out to watchers.
//!
//! A snapshot is [`SmData`] in the store's binary encoding (`codec`), kept on
//! disk only, in `snapshot.bin` with its metadata, replaced atomically (a
//! `snapshot.json` of an older version is still read).

use std::collections::BTreeMap;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use mgmt_core::kv::{Applied, Event, EventKind, KvError, KvStore};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::atomic_file::{read_json, write_atomic};
use crate::types::{Entry, LogId, MemberNode, NodeId, StorageError, StoredMembership, TypeConfig};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const LEGACY_SNAPSHOT_FILE: &str = "snapshot.json";

/// The replicated state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmData {
    pub kv: KvStore,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, MemberNode>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

impl StoredSnapshot {
    fn read(dir: &Path) -> io::Result<Option<StoredSnapshot>> {
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => Ok(Some(crate::codec::decode(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                read_json(&dir.join(LEGACY_SNAPSHOT_FILE))
            }
            Err(e) => Err(e),
        }
    }

    fn write(&self, dir: &Path) -> io::Result<()> {
        write_atomic(dir, SNAPSHOT_FILE, &crate::codec::encode(self)?)?;
        match std::fs::remove_file(dir.join(LEGACY_SNAPSHOT_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Events for one watcher, from one applied command (or from history on creation).
#[derive(Debug)]
pub struct WatchMsg {
    pub watch_id: i64,
    pub revision: i64,
    pub events: Vec<Event>,
    /// Set when the watcher was dropped by the server (e.g. snapshot install).
    pub canceled: Option<String>,
}

/// Messages a watch stream may have queued before its watchers fall behind.
pub const WATCH_BUFFER: usize = 128;

pub struct Watcher {
    pub watch_id: i64,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
    /// The stream's queue, [`WATCH_BUFFER`] deep.
    pub tx: mpsc::Sender<WatchMsg>,
    /// Set when the queue was full: the first revision it has not been sent.
    /// Nothing more is queued for it until its stream catches it up from the
    /// key space's history (etcd's unsynced watchers).
    pub behind: Option<i64>,
    /// Shared by the watchers of one stream: set when one of them fell behind
    /// (or was ended without word), so the stream catches up only then.
    pub lagging: Arc<std::sync::atomic::AtomicBool>,
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        let k = e.kv.key.as_slice();
        let in_range = if self.range_end.is_empty() {
            k == self.key.as_slice()
        } else if self.range_end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < self.range_end.as_slice()
        };
        in_range
            && !(self.no_put && e.kind == EventKind::Put)
            && !(self.no_delete && e.kind == EventKind::Delete)
    }

    /// The events of `events` this watcher is to be sent, as it is to see them.
    pub fn mine(&self, events: &[Event]) -> Vec<Event> {
        let mut mine: Vec<Event> = events.iter().filter(|e| self.wants(e)).cloned().collect();
        if !self.prev_kv {
            for e in &mut mine {
                e.prev_kv = None;
            }
        }
        mine
    }

    /// Queue the events this watcher wants; false if its stream is gone.
    pub fn send(&mut self, revision: i64, events: &[Event]) -> bool {
        if self.behind.is_some() {
            return !self.tx.is_closed();
        }
        let mine = self.mine(events);
        if mine.is_empty() {
            return !self.tx.is_closed();
        }
        let msg = WatchMsg {
            watch_id: self.watch_id,
            revision,
            events: mine,
            canceled: None,
        };
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind = Some(revision);
                self.lagging
                    .store(true, std::sync::atomic::Ordering::Release);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

pub struct SmState {
    pub data: SmData,
    pub watchers: BTreeMap<u64, Watcher>,
    next_watcher: u64,
    /// The last snapshot's metadata; its data is read from disk when asked.
    snapshot: Option<SnapshotMeta<NodeId, MemberNode>>,
    snapshot_seq: u64,
    /// Counts installed snapshots: a snapshot being read in slices started
    /// from data that one replaced must start again.
    generation: u64,
}

impl SmState {
    /// Register a watcher; history (events from its start revision) must already have
    /// been sent by the caller while holding the same lock. Returns its hub key.
    pub fn add_watcher(&mut self, w: Watcher) -> u64 {
        self.next_watcher += 1;
        self.watchers.insert(self.next_watcher, w);
        self.next_watcher
    }
}

/// Shared state machine; the raft side and the gRPC side both hold it.
pub struct Shared {
    dir: PathBuf,
    /// Snapshot files are written on a blocking thread, not on the runtime
    /// (a simulator that must stay deterministic writes them inline).
    threads: bool,
    state: Mutex<SmState>,
    /// The earliest lease deadline (`now_ms` of the leader's clock), kept
    /// current after every apply: the expiry timer sleeps until it.
    lease_deadline: watch::Sender<Option<u64>>,
    /// Held while a snapshot is read in slices: one at a time.
    building: tokio::sync::Mutex<()>,
    /// The size of the last snapshot written or installed, in bytes: the log
    /// grows by at least as much before the next (see `LogStore`).
    pub snapshot_bytes: Arc<AtomicU64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, SmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever the earliest lease deadline does.
    pub fn lease_deadline(&self) -> watch::Receiver<Option<u64>> {
        self.lease_deadline.subscribe()
    }

    fn publish_lease_deadline(&self, g: &SmState) {
        let next = g.data.kv.next_lease_deadline_ms();
        self.lease_deadline.send_if_modified(|d| {
            let changed = *d != next;
            *d = next;
            changed
        });
    }
}

#[derive(Clone)]
pub struct StateMachine {
    pub shared: Arc<Shared>,
}

impl StateMachine {
    /// Load the last snapshot from `dir`, if any. `threads`: whether the
    /// store may write snapshots on threads of its own (see `Net::allows_threads`).
    pub fn open(dir: &Path, threads: bool) -> io::Result<StateMachine> {
        std::fs::create_dir_all(dir)?;
        let stored = StoredSnapshot::read(dir)?;
        let data = match &stored {
            Some(s) => decode_data(&s.data)?,
            None => SmData::default(),
        };
        let snapshot_bytes = stored.as_ref().map_or(0, |s| s.data.len() as u64);
        let stored = stored.map(|s| s.meta);
        let lease_deadline = watch::Sender::new(data.kv.next_lease_deadline_ms());
        Ok(StateMachine {
            shared: Arc::new(Shared {
                lease_deadline,
                dir: dir.to_path_buf(),
                threads,
                state: Mutex::new(SmState {
                    data,
                    watchers: BTreeMap::new(),
                    next_watcher: 0,
                    snapshot: stored,
                    snapshot_seq: 0,
                    generation: 0,
                }),
                building: tokio::sync::Mutex::new(()),
                snapshot_bytes: Arc::new(AtomicU64::new(snapshot_bytes)),
            }),
        })
    }
}

/// First byte of snapshot bytes read in slices: the head, the auth state,
/// then slices of keys (others are one `codec` value).
const SLICED: u8 = 3;
/// The same without the auth state, as written before auth existed.
const SLICED_NO_AUTH: u8 = 2;

/// Keys per slice: the lock is held for one slice at a time, and every
/// apply waits for it. A slice of 4096 keys of etcd's `check perf` (1.3 KB
/// each, copied) held it long enough to show in the slowest writes.
const SLICE_KEYS: usize = 512;

/// The head of sliced snapshot bytes; the slices of keys follow it.
#[derive(Serialize, Deserialize)]
struct SlicedHead {
    kv: mgmt_core::kv::KvHead,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// Appends one length-prefixed `codec` value.
fn push_part<T: Serialize>(out: &mut Vec<u8>, v: &T) -> io::Result<()> {
    let bytes = crate::codec::encode(v)?;
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

impl Shared {
    /// The state machine as snapshot bytes, read a slice of keys at a time
    /// under the lock ([`KvStore::begin_snapshot`]): applies go on between
    /// slices, so a large key space never holds writes up for long.
    ///
    /// [`KvStore::begin_snapshot`]: mgmt_core::kv::KvStore::begin_snapshot
    pub async fn snapshot_bytes(
        self: &Arc<Self>,
    ) -> io::Result<(Option<LogId>, StoredMembership, Vec<u8>)> {
        let _one = self.building.lock().await;
        let me = self.clone();
        self.in_background(move || me.read_snapshot()).await
    }

    /// Runs `work` (reading or encoding the whole state) on a thread of its
    /// own at a lower CPU priority: on a busy machine the requests' threads
    /// go first. Inline where the store may not start threads (the simulator).
    pub(crate) async fn in_background<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        if !self.threads {
            return work();
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("store-snapshot".into())
            .spawn(move || {
                lower_cpu_priority();
                let _ = tx.send(work());
            })?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the snapshot thread panicked")))
    }

    fn read_snapshot(&self) -> io::Result<(Option<LogId>, StoredMembership, Vec<u8>)> {
        'again: loop {
            let (head, generation, last_applied, membership) = {
                let mut g = self.lock();
                let head = g.data.kv.begin_snapshot();
                let d = &g.data;
                (head, g.generation, d.last_applied, d.membership.clone())
            };
            let mut out = vec![SLICED];
            let sliced = SlicedHead {
                kv: head.clone(),
                last_applied,
                membership: membership.clone(),
            };
            push_part(&mut out, &sliced)?;
            push_part(&mut out, head.auth())?;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let slice = {
                    let g = self.lock();
                    if g.generation != generation {
                        continue 'again;
                    }
                    g.data
                        .kv
                        .snapshot_slice(&head, after.as_deref(), SLICE_KEYS)
                };
                let Some(last) = slice.last() else { break };
                after = Some(last.key().to_vec());
                push_part(&mut out, &slice)?;
            }
            let mut g = self.lock();
            if g.generation != generation {
                continue 'again;
            }
            g.data.kv.end_snapshot();
            return Ok((last_applied, membership, out));
        }
    }
}

/// Nice value of the threads that read and write snapshots.
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority (on Linux, nice is per thread).
fn lower_cpu_priority() {
    // SAFETY: setpriority takes plain integers and touches no memory of ours;
    // PRIO_PROCESS with `who` 0 names the calling thread. Failing leaves the
    // thread at its priority, which is only slower for the others.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS as _, 0, BACKGROUND_NICE);
    }
}

/// Snapshot bytes back into a state machine.
pub fn decode_data(bytes: &[u8]) -> io::Result<SmData> {
    let with_auth = bytes.first() == Some(&SLICED);
    if !with_auth && bytes.first() != Some(&SLICED_NO_AUTH) {
        let mut data: SmData = crate::codec::decode(bytes)?;
        data.kv = std::mem::take(&mut data.kv).recount();
        return Ok(data);
    }
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "snapshot cut short");
    let mut parts = &bytes[1..];
    let mut next = || -> io::Result<Option<&[u8]>> {
        if parts.is_empty() {
            return Ok(None);
        }
        let len = parts.get(..4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let part = parts.get(4..4 + len).ok_or_else(bad)?;
        parts = &parts[4 + len..];
        Ok(Some(part))
    };
    let mut head: SlicedHead = crate::codec::decode(next()?.ok_or_else(bad)?)?;
    if with_auth {
        head.kv
            .set_auth(crate::codec::decode(next()?.ok_or_else(bad)?)?);
    }
    let mut keys = Vec::new();
    while let Some(part) = next()? {
        let slice: Vec<mgmt_core::kv::KeyHistory> = crate::codec::decode(part)?;
        keys.extend(slice);
    }
    Ok(SmData {
        kv: mgmt_core::kv::KvStore::from_snapshot(head.kv, keys),
        last_applied: head.last_applied,
        membership: head.membership,
    })
}

/// First bytes of a file written by `etcdctl snapshot save` from this store.
const SNAPSHOT_FILE_MAGIC: &[u8; 8] = b"MGMTSNP1";

/// The state machine as the file `etcdctl snapshot save` writes: magic, the
/// length, the snapshot bytes, zeros up to a multiple of 512 bytes, and the
/// SHA-256 of all that. etcdctl only keeps a file whose size is a multiple of
/// 512 plus 32 (etcd's bbolt pages, then their checksum).
pub fn snapshot_file(body: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(body.len() + 1024);
    out.extend_from_slice(SNAPSHOT_FILE_MAGIC);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    let sum = sha2::Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// A file made by [`snapshot_file`], checked and decoded.
pub fn read_snapshot_file(bytes: &[u8]) -> io::Result<SmData> {
    use sha2::Digest;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    let (content, sum) = bytes
        .split_at_checked(bytes.len().saturating_sub(32))
        .filter(|(c, _)| c.len() >= 16 && c.starts_with(SNAPSHOT_FILE_MAGIC))
        .ok_or_else(|| bad("not a snapshot of an mgmt store"))?;
    if sha2::Sha256::digest(content).as_slice() != sum {
        return Err(bad("snapshot checksum mismatch: the file is damaged"));
    }
    let len = u64::from_le_bytes(content[8..16].try_into().expect("8 bytes")) as usize;
    let body = content
        .get(16..16 + len)
        .ok_or_else(|| bad("snapshot shorter than it says"))?;
    decode_data(body)
}

/// Hands the events of one applied command (each of a batch's, in order) to
/// the watchers that want them.
fn notify_watchers(g: &mut SmState, applied: &Applied) {
    if let Ok(mgmt_core::kv::Output::Batch(each)) = &applied.result {
        return each.iter().for_each(|a| notify_watchers(g, a));
    }
    if !applied.events.is_empty() {
        let revision = applied.revision;
        g.watchers.retain(|_, w| w.send(revision, &applied.events));
    }
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (last_applied, membership, data) =
            self.shared.snapshot_bytes().await.map_err(sm_err)?;
        let meta = {
            let mut g = self.shared.lock();
            g.snapshot_seq += 1;
            SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id: format!("{}-{}", last_applied.map_or(0, |l| l.index), g.snapshot_seq),
            }
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Encoding and syncing megabytes takes a while (tens of ms for the
        // keys of a minute of etcd's `check perf`): never on a runtime
        // thread, where the requests it holds up would wait for it.
        let dir = self.shared.dir.clone();
        let written = (self.shared)
            .in_background(move || stored.write(&dir).map(|()| stored))
            .await;
        let stored =
            written.map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        self.shared
            .snapshot_bytes
            .store(stored.data.len() as u64, Ordering::Relaxed);
        self.shared.lock().snapshot = Some(meta.clone());
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = self.shared.lock();
        Ok((g.data.last_applied, g.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<Applied>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.shared.lock();
        let mut out = Vec::new();
        for entry in entries {
            g.data.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(None),
                EntryPayload::Membership(m) => {
                    g.data.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(None);
                }
                EntryPayload::Normal(cmd) => {
                    let applied = g.data.kv.apply(&cmd);
                    notify_watchers(&mut g, &applied);
                    out.push(Some(applied));
                }
            }
        }
        self.shared.publish_lease_deadline(&g);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, MemberNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data = decode_data(&bytes)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        stored
            .write(&self.shared.dir)
            .map_err(|e| StorageError::from(StorageIOError::write_snapshot(None, &e)))?;
        self.shared
            .snapshot_bytes
            .store(stored.data.len() as u64, Ordering::Relaxed);
        let mut g = self.shared.lock();
        g.data = data;
        g.generation += 1;
        g.snapshot = Some(stored.meta);
        self.shared.publish_lease_deadline(&g);
        // Watchers cannot be told what changed across a snapshot: end them, clients
        // re-watch from a revision they know.
        for (_, w) in std::mem::take(&mut g.watchers) {
            let told = w.tx.try_send(WatchMsg {
                watch_id: w.watch_id,
                revision: g.data.kv.revision(),
                events: Vec::new(),
                canceled: Some(
                    KvError::Compacted {
                        compact_revision: g.data.kv.compact_revision(),
                    }
                    .to_string(),
                ),
            });
            if told.is_err() {
                // Its stream finds it gone when it catches up.
                w.lagging.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.shared.lock().snapshot.is_none() {
            return Ok(None);
        }
        let stored = StoredSnapshot::read(&self.shared.dir)
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgmt_core::kv::{Command, PutRequest, Timed};
    use openraft::CommittedLeaderId;

    fn data() -> SmData {
        let mut d = SmData::default();
        for i in 0..5u8 {
            d.kv.apply(&Timed {
                now_ms: 0,
                command: Command::Put(PutRequest {
                    key: vec![b'k', i],
                    value: vec![i; 100],
                    ..Default::default()
                }),
            });
        }
        d.last_applied = Some(LogId::new(CommittedLeaderId::new(2, 9), 41));
        d
    }

    /// A `snapshot.json` written before the binary encoding still opens, with
    /// every key; the next snapshot is written as `snapshot.bin`.
    #[test]
    fn a_json_snapshot_from_an_older_version_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let d = data();
        let old = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: d.last_applied,
                last_membership: d.membership.clone(),
                snapshot_id: "41-1".into(),
            },
            data: serde_json::to_vec(&d).unwrap(),
        };
        std::fs::write(
            dir.path().join(LEGACY_SNAPSHOT_FILE),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let sm = StateMachine::open(dir.path(), true).unwrap();
        let g = sm.shared.lock();
        assert_eq!(g.data.kv, d.kv);
        assert_eq!(g.data.last_applied, d.last_applied);
    }

    /// Sliced snapshot bytes decode to the state they were taken from.
    #[tokio::test]
    async fn sliced_snapshot_bytes_decode_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::open(dir.path(), true).unwrap();
        sm.shared.lock().data = data();
        let (applied, _, bytes) = sm.shared.snapshot_bytes().await.unwrap();
        assert_eq!(applied, data().last_applied);
        let back = decode_data(&bytes).unwrap();
        assert_eq!(back.kv, data().kv);
        let file = read_snapshot_file(&snapshot_file(&bytes)).unwrap();
        assert_eq!(file.kv, data().kv);
    }
}
