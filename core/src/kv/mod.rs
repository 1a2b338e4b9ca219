//! Pure MVCC key space with etcd v3 semantics.
//!
//! [`KvStore`] is a deterministic state machine: the replicated store applies each
//! committed [`Timed`] command with [`KvStore::apply`] and serves reads with
//! [`KvStore::range`]. It never reads a clock; lease deadlines are arithmetic on the
//! `now_ms` carried by each command (chosen by the raft leader when it proposes).
//!
//! Model: every key keeps the list of its versions (`Record`s) tagged with the
//! revision `(main, sub)` that wrote them; a delete writes a tombstone. The store's
//! revision starts at 1 and grows by one for each command that changes something (a
//! txn with several writes is one revision, each write a sub-revision). Reads at an old
//! revision and watch history both come from these lists, so nothing is stored twice.
//! [`KvStore::compact`] drops versions older than a revision.
//!
//! All maps are `BTreeMap`s: iteration order, events and snapshots are deterministic.
//! The whole store is `serde`-serializable for raft snapshots.

pub mod auth;
mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

pub use types::*;

/// Largest lease TTL etcd accepts, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Errors a command or read can answer. The texts are etcd's, so clients print what
/// operators expect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: i64 },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
}

/// What one stored version costs in [`KvStore::size_bytes`] beyond its key and
/// value (revision, versions, lease), as a B-tree node and a `Vec` slot hold it.
pub const RECORD_OVERHEAD: u64 = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Rev {
    main: i64,
    sub: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    rev: Rev,
    create_revision: i64,
    version: i64,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    lease: i64,
    tombstone: bool,
}

impl Record {
    fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.rev.main,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ttl: i64,
    deadline_ms: u64,
    keys: BTreeSet<Vec<u8>>,
}

/// The result of applying one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The store's revision after the command.
    pub revision: i64,
    pub result: Result<Output, KvError>,
    /// Changes made by the command, in order, for watchers.
    pub events: Vec<Event>,
}

/// The MVCC key space. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    revision: i64,
    compact_revision: i64,
    #[serde(with = "seq_map")]
    keys: BTreeMap<Vec<u8>, Vec<Record>>,
    leases: BTreeMap<i64, Lease>,
    lease_seq: u64,
    cluster_id: u64,
    /// Raised alarms: (member ID, alarm).
    #[serde(default)]
    alarms: BTreeSet<(u64, Alarm)>,
    /// Bytes of every stored version (history included): the quota's measure.
    /// Snapshots from before it was kept lack it: [`KvStore::recount`].
    #[serde(default)]
    size_bytes: u64,
    /// While a snapshot as of this revision is being taken
    /// ([`KvStore::begin_snapshot`]), compaction keeps every version at or
    /// below it in place (hidden: nothing reads below the compaction
    /// revision), so the snapshot can be read in slices without the lock.
    #[serde(skip)]
    hold: Option<i64>,
    /// Compaction left versions in place for the hold: prune them after it.
    #[serde(skip)]
    held_back: bool,
    /// Users, roles and whether auth is on. Not in this serde form, which
    /// only legacy snapshots use (they had none): a snapshot carries it as
    /// its own part ([`KvHead::auth`]).
    #[serde(skip)]
    auth: auth::AuthState,
}

/// Everything of a [`KvStore`] but its keys, as of one revision: the head of
/// a snapshot taken in slices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHead {
    revision: i64,
    compact_revision: i64,
    leases: BTreeMap<i64, Lease>,
    lease_seq: u64,
    cluster_id: u64,
    alarms: BTreeSet<(u64, Alarm)>,
    /// Encoded by the store as a part of its own, so that snapshots from
    /// before auth, whose heads lack it, still decode.
    #[serde(skip)]
    auth: auth::AuthState,
}

impl KvHead {
    pub fn auth(&self) -> &auth::AuthState {
        &self.auth
    }

    pub fn set_auth(&mut self, auth: auth::AuthState) {
        self.auth = auth;
    }
}

/// One key's stored versions, as a snapshot carries them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHistory {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    records: Vec<Record>,
}

impl KeyHistory {
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// Index of the first version of `records` still there after a compaction at
/// `compact_revision`: the newest at or below it (what a read there sees),
/// or past it if that is a tombstone from before it. Versions before it are
/// gone, or only held for a snapshot.
fn live_from(records: &[Record], compact_revision: i64) -> usize {
    match records.iter().rposition(|r| r.rev.main <= compact_revision) {
        Some(idx) if records[idx].tombstone && records[idx].rev.main < compact_revision => idx + 1,
        Some(idx) => idx,
        None => 0,
    }
}

impl Default for KvStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Serialize a map with byte-string keys as a list of pairs (JSON maps need string keys).
mod seq_map {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

/// Is `key` inside the range given by `start` and `end` (etcd conventions)?
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// Bounds for a BTreeMap range over the etcd range `start..end`.
fn bounds<'a>(start: &'a [u8], end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if end.is_empty() {
        (Bound::Included(start), Bound::Included(start))
    } else if end == [0] {
        (Bound::Included(start), Bound::Unbounded)
    } else if start >= end {
        // Empty range; BTreeMap::range panics on inverted bounds.
        (Bound::Included(start), Bound::Excluded(start))
    } else {
        (Bound::Included(start), Bound::Excluded(end))
    }
}

/// The smallest key greater than every key with this prefix (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What a stored version counts for in [`KvStore::size_bytes`].
fn record_size(key: &[u8], r: &Record) -> u64 {
    (key.len() + r.value.len()) as u64 + RECORD_OVERHEAD
}

/// Does the txn put anything, on either branch (a nested txn included)?
pub fn txn_writes(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Put(_) => true,
        RequestOp::Txn(t) => txn_writes(t),
        RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
    })
}

/// 32-bit FNV-1a: a stable hash that needs no dependency.
struct Fnv1a(u32);

impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    }
    fn finish(&self) -> u32 {
        self.0
    }
}

/// A write in progress: all changes of one command share `main`.
struct Tx {
    main: i64,
    sub: i64,
    events: Vec<Event>,
}

impl Tx {
    fn next(&mut self) -> Rev {
        let rev = Rev {
            main: self.main,
            sub: self.sub,
        };
        self.sub += 1;
        rev
    }
}

impl KvStore {
    /// An empty store at revision 1, like a fresh etcd.
    pub fn new() -> Self {
        KvStore {
            revision: 1,
            compact_revision: 0,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
            lease_seq: 0,
            cluster_id: 0,
            alarms: BTreeSet::new(),
            size_bytes: 0,
            hold: None,
            held_back: false,
            auth: auth::AuthState::default(),
        }
    }

    /// Starts a snapshot as of the current revision: its head, and from now
    /// until [`KvStore::end_snapshot`] compaction keeps every version at or
    /// below that revision, so [`KvStore::snapshot_slice`] reads it as it is
    /// now, whatever is applied in between. One snapshot at a time.
    pub fn begin_snapshot(&mut self) -> KvHead {
        self.hold = Some(self.revision);
        KvHead {
            revision: self.revision,
            compact_revision: self.compact_revision,
            leases: self.leases.clone(),
            lease_seq: self.lease_seq,
            cluster_id: self.cluster_id,
            alarms: self.alarms.clone(),
            auth: self.auth.clone(),
        }
    }

    /// Up to `max` keys after `after` (from the first when `None`), each with
    /// its versions as of `head` (the revision [`KvStore::begin_snapshot`]
    /// gave); keys that did not exist then are skipped.
    pub fn snapshot_slice(
        &self,
        head: &KvHead,
        after: Option<&[u8]>,
        max: usize,
    ) -> Vec<KeyHistory> {
        let from = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.keys
            .range::<[u8], _>((from, Bound::Unbounded))
            .filter_map(|(key, records)| {
                let upto = records.partition_point(|r| r.rev.main <= head.revision);
                let then = &records[..upto];
                let then = &then[live_from(then, head.compact_revision)..];
                (!then.is_empty()).then(|| KeyHistory {
                    key: key.clone(),
                    records: then.to_vec(),
                })
            })
            .take(max)
            .collect()
    }

    /// Ends the snapshot [`KvStore::begin_snapshot`] started: versions that
    /// compaction left in place for it go now.
    pub fn end_snapshot(&mut self) {
        self.hold = None;
        if std::mem::take(&mut self.held_back) {
            let revision = self.compact_revision;
            self.prune(revision);
        }
    }

    /// The store a snapshot's head and keys describe.
    pub fn from_snapshot(head: KvHead, keys: impl IntoIterator<Item = KeyHistory>) -> KvStore {
        KvStore {
            revision: head.revision,
            compact_revision: head.compact_revision,
            keys: keys.into_iter().map(|k| (k.key, k.records)).collect(),
            leases: head.leases,
            lease_seq: head.lease_seq,
            cluster_id: head.cluster_id,
            alarms: head.alarms,
            size_bytes: 0,
            hold: None,
            held_back: false,
            auth: head.auth,
        }
        .recount()
    }

    /// Keys held, with their history (a deleted key's until compacted away).
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Bytes of every stored version, history included (what compaction frees
    /// and what `--quota-backend-bytes` limits); kept current by every write.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Counts [`KvStore::size_bytes`] again: for a store just deserialized.
    pub fn recount(mut self) -> Self {
        self.size_bytes = (self.keys.iter())
            .flat_map(|(k, rs)| rs.iter().map(move |r| record_size(k, r)))
            .sum();
        self
    }

    /// Raised alarms: (member ID, alarm), ascending.
    pub fn alarms(&self) -> Vec<(u64, Alarm)> {
        self.alarms.iter().copied().collect()
    }

    /// A hash of every version at or below `revision` (0: the current one) and
    /// the compaction revision: equal on every replica that applied the same
    /// log, whatever its history of snapshots (etcd's `HashKV`). FNV-1a.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        if at > self.revision {
            return Err(KvError::FutureRevision);
        }
        if at < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut h = Fnv1a::new();
        for (key, records) in &self.keys {
            let live = &records[live_from(records, self.compact_revision)..];
            for r in live.iter().filter(|r| r.rev.main <= at) {
                h.write(&(key.len() as u64).to_le_bytes());
                h.write(key);
                h.write(&r.rev.main.to_le_bytes());
                h.write(&r.rev.sub.to_le_bytes());
                h.write(&[u8::from(r.tombstone)]);
                h.write(&(r.value.len() as u64).to_le_bytes());
                h.write(&r.value);
            }
        }
        Ok((h.finish(), self.compact_revision))
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The last compaction revision (0 if never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The cluster ID recorded by [`Command::SetClusterId`], 0 before.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Earliest lease deadline, if any lease exists. The server proposes
    /// [`Command::ExpireLeases`] once its clock passes it.
    pub fn next_lease_deadline_ms(&self) -> Option<u64> {
        self.leases.values().map(|l| l.deadline_ms).min()
    }

    /// IDs of all leases, ascending.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Remaining time of a lease at `now_ms`.
    pub fn lease_time_to_live(
        &self,
        id: i64,
        with_keys: bool,
        now_ms: u64,
    ) -> Result<LeaseTimeToLive, KvError> {
        let lease = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        let ttl = if lease.deadline_ms <= now_ms {
            -1
        } else {
            (lease.deadline_ms - now_ms).div_ceil(1000) as i64
        };
        Ok(LeaseTimeToLive {
            id,
            ttl,
            granted_ttl: lease.ttl,
            keys: if with_keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Read keys. Answers at `req.revision` if it is positive, else at the current one.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        self.range_inner(req, self.revision)
    }

    /// `range` with `current` as the newest readable revision.
    fn range_inner(&self, req: &RangeRequest, current: i64) -> Result<RangeResponse, KvError> {
        let at = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if at > current {
            return Err(KvError::FutureRevision);
        }
        if at < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut kvs = Vec::new();
        // One key (the common get): one descent of the tree, not a range's two.
        let found: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<Record>)>> = if req.range_end.is_empty()
        {
            Box::new(self.keys.get_key_value(req.key.as_slice()).into_iter())
        } else {
            Box::new(self.keys.range::<[u8], _>(bounds(&req.key, &req.range_end)))
        };
        for (key, records) in found {
            let Some(rec) = records.iter().rev().find(|r| r.rev.main <= at) else {
                continue;
            };
            if rec.tombstone {
                continue;
            }
            let kv = rec.to_kv(key);
            if (req.min_mod_revision > 0 && kv.mod_revision < req.min_mod_revision)
                || (req.max_mod_revision > 0 && kv.mod_revision > req.max_mod_revision)
                || (req.min_create_revision > 0 && kv.create_revision < req.min_create_revision)
                || (req.max_create_revision > 0 && kv.create_revision > req.max_create_revision)
            {
                continue;
            }
            kvs.push(kv);
        }
        let count = kvs.len() as i64;
        if req.sort_order != SortOrder::None {
            kvs.sort_by(|a, b| {
                let ord = match req.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                // Ties keep key order, so the result stays deterministic.
                ord.then_with(|| a.key.cmp(&b.key))
            });
            if req.sort_order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.count_only {
            kvs.clear();
        } else if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse { kvs, more, count })
    }

    /// Changes to keys in `[key, range_end)` at revisions `>= start_revision`, oldest
    /// first, as a watch created with that start revision must replay them. Fails with
    /// [`KvError::Compacted`] if part of that history is gone.
    pub fn events_since(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<Vec<Event>, KvError> {
        if start_revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let mut out: Vec<(Rev, Event)> = Vec::new();
        for (k, records) in self.keys.range::<[u8], _>(bounds(key, range_end)) {
            let records = &records[live_from(records, self.compact_revision)..];
            for (i, rec) in records.iter().enumerate() {
                if rec.rev.main < start_revision {
                    continue;
                }
                let prev_kv = i
                    .checked_sub(1)
                    .map(|p| &records[p])
                    .filter(|p| !p.tombstone)
                    .map(|p| p.to_kv(k));
                out.push((rec.rev, Self::event_of(k, rec, prev_kv)));
            }
        }
        out.sort_by_key(|(rev, _)| *rev);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    fn event_of(key: &[u8], rec: &Record, prev_kv: Option<KeyValue>) -> Event {
        if rec.tombstone {
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: rec.rev.main,
                    ..KeyValue::default()
                },
                prev_kv,
            }
        } else {
            Event {
                kind: EventKind::Put,
                kv: rec.to_kv(key),
                prev_kv,
            }
        }
    }

    /// Drop history older than `revision`: reads and watches below it fail afterwards.
    pub fn compact(&mut self, revision: i64) -> Result<(), KvError> {
        if revision <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        self.compact_revision = revision;
        self.prune(revision);
        Ok(())
    }

    /// Drops the versions a compaction at `revision` ends (see [`live_from`]),
    /// but for those a snapshot in progress holds.
    fn prune(&mut self, revision: i64) {
        let mut freed = 0;
        let hold = self.hold;
        let mut held_back = false;
        self.keys.retain(|key, records| {
            let mut cut = live_from(records, revision);
            if let Some(h) = hold {
                // Versions at or below the hold are a prefix: keep them all.
                let held = records[..cut].partition_point(|r| r.rev.main <= h);
                held_back |= held > 0;
                if held > 0 {
                    cut = 0;
                }
            }
            freed += records
                .drain(..cut)
                .map(|r| record_size(key, &r))
                .sum::<u64>();
            !records.is_empty()
        });
        self.held_back |= held_back;
        self.size_bytes = self.size_bytes.saturating_sub(freed);
    }

    /// Apply one committed command. Deterministic: the same sequence of commands gives
    /// the same store and the same results on every replica.
    pub fn apply(&mut self, cmd: &Timed) -> Applied {
        self.apply_at(&cmd.command, cmd.now_ms)
    }

    fn apply_at(&mut self, command: &Command, now_ms: u64) -> Applied {
        if let Command::Batch(commands) = command {
            let each = commands.iter().map(|c| self.apply_at(c, now_ms)).collect();
            return Applied {
                revision: self.revision,
                result: Ok(Output::Batch(each)),
                events: Vec::new(),
            };
        }
        let mut tx = Tx {
            main: self.revision + 1,
            sub: 0,
            events: Vec::new(),
        };
        let result = self.apply_command(&mut tx, command, now_ms);
        if result.is_ok() && tx.sub > 0 {
            self.revision = tx.main;
        } else if result.is_err() && tx.sub > 0 {
            // Commands validate before writing, so a failed command wrote nothing.
            debug_assert!(false, "a failed command must not write");
        }
        Applied {
            revision: self.revision,
            result,
            events: tx.events,
        }
    }

    fn apply_command(
        &mut self,
        tx: &mut Tx,
        cmd: &Command,
        now_ms: u64,
    ) -> Result<Output, KvError> {
        match cmd {
            Command::Put(req) => {
                self.check_space()?;
                self.check_put(req)?;
                Ok(Output::Put(self.put(tx, req)))
            }
            Command::DeleteRange(req) => {
                if req.key.is_empty() {
                    return Err(KvError::EmptyKey);
                }
                Ok(Output::DeleteRange(self.delete_range(tx, req)))
            }
            Command::Txn(req) => {
                if txn_writes(req) {
                    self.check_space()?;
                }
                self.check_txn(req)?;
                Ok(Output::Txn(self.txn(tx, req)))
            }
            Command::Compact { revision } => {
                self.compact(*revision)?;
                Ok(Output::Compact)
            }
            Command::LeaseGrant { id, ttl } => {
                self.check_space()?;
                if *ttl > MAX_LEASE_TTL {
                    return Err(KvError::LeaseTtlTooLarge);
                }
                let ttl = (*ttl).max(1);
                let id = if *id == 0 { self.fresh_lease_id() } else { *id };
                if self.leases.contains_key(&id) {
                    return Err(KvError::LeaseExists);
                }
                self.leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline_ms: now_ms.saturating_add(ttl as u64 * 1000),
                        keys: BTreeSet::new(),
                    },
                );
                Ok(Output::LeaseGrant { id, ttl })
            }
            Command::LeaseRevoke { id } => {
                self.revoke(tx, *id)?;
                Ok(Output::LeaseRevoke)
            }
            Command::LeaseKeepAlive { id } => {
                let lease = self.leases.get_mut(id).ok_or(KvError::LeaseNotFound)?;
                lease.deadline_ms = now_ms.saturating_add(lease.ttl as u64 * 1000);
                Ok(Output::LeaseKeepAlive {
                    id: *id,
                    ttl: lease.ttl,
                })
            }
            Command::ExpireLeases => {
                let expired: Vec<i64> = self
                    .leases
                    .iter()
                    .filter(|(_, l)| l.deadline_ms <= now_ms)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &expired {
                    self.revoke(tx, *id)?;
                }
                Ok(Output::ExpireLeases { revoked: expired })
            }
            Command::SetClusterId { cluster_id } => {
                self.cluster_id = *cluster_id;
                Ok(Output::SetClusterId)
            }
            Command::Batch(_) => unreachable!("a batch applies in apply_at"),
            Command::As { who, command } => {
                if matches!(**command, Command::As { .. } | Command::Batch(_)) {
                    return Err(auth::AuthError::PermissionDenied.into());
                }
                self.check_command(who, command)?;
                self.apply_command(tx, command, now_ms)
            }
            Command::Auth(change) => {
                self.auth.apply(change)?;
                Ok(Output::Auth)
            }
            Command::Alarm {
                activate,
                member_id,
                alarm,
            } => {
                if *activate {
                    self.alarms.insert((*member_id, *alarm));
                } else {
                    self.alarms.remove(&(*member_id, *alarm));
                }
                Ok(Output::Alarm {
                    alarms: self.alarms(),
                })
            }
        }
    }

    /// Users, roles, and whether auth is on.
    pub fn auth(&self) -> &auth::AuthState {
        &self.auth
    }

    /// May `who` send `cmd` (etcd's auth applier)? Anything while auth is off.
    fn check_command(&self, who: &auth::Identity, cmd: &Command) -> Result<(), KvError> {
        let a = &self.auth;
        if !a.enabled() {
            return Ok(());
        }
        match cmd {
            Command::Put(req) => self.check_put_rights(who, req)?,
            Command::DeleteRange(req) => self.check_delete_rights(who, req)?,
            Command::Txn(req) => self.check_txn_rights(who, req)?,
            Command::LeaseRevoke { id } => {
                if let Some(lease) = self.leases.get(id) {
                    for key in &lease.keys {
                        a.check_write(who, key, &[])?;
                    }
                }
            }
            Command::LeaseGrant { .. } | Command::LeaseKeepAlive { .. } => {}
            Command::Compact { .. } | Command::Alarm { .. } | Command::Auth(_) => {
                a.check_admin(who)?
            }
            // The store's own: never a client's.
            Command::ExpireLeases
            | Command::SetClusterId { .. }
            | Command::Batch(_)
            | Command::As { .. } => return Err(auth::AuthError::PermissionDenied.into()),
        }
        Ok(())
    }

    fn check_txn_rights(&self, who: &auth::Identity, req: &TxnRequest) -> Result<(), KvError> {
        let a = &self.auth;
        for c in &req.compare {
            a.check_read(who, &c.key, &c.range_end)?;
        }
        for op in req.success.iter().chain(&req.failure) {
            match op {
                RequestOp::Range(r) => a.check_read(who, &r.key, &r.range_end)?,
                RequestOp::Put(p) => self.check_put_rights(who, p)?,
                RequestOp::DeleteRange(d) => self.check_delete_rights(who, d)?,
                RequestOp::Txn(t) => self.check_txn_rights(who, t)?,
            }
        }
        Ok(())
    }

    /// A put writes its key, and reads it when it asks for the previous value.
    fn check_put_rights(&self, who: &auth::Identity, req: &PutRequest) -> Result<(), KvError> {
        self.auth.check_write(who, &req.key, &[])?;
        if req.prev_kv {
            self.auth.check_read(who, &req.key, &[])?;
        }
        Ok(())
    }

    fn check_delete_rights(
        &self,
        who: &auth::Identity,
        req: &DeleteRangeRequest,
    ) -> Result<(), KvError> {
        self.auth.check_write(who, &req.key, &req.range_end)?;
        if req.prev_kv {
            self.auth.check_read(who, &req.key, &req.range_end)?;
        }
        Ok(())
    }

    /// etcd's capped applier: nothing grows the store while `NOSPACE` is raised.
    fn check_space(&self) -> Result<(), KvError> {
        match self.alarms.iter().any(|(_, a)| *a == Alarm::NoSpace) {
            true => Err(KvError::NoSpace),
            false => Ok(()),
        }
    }

    fn fresh_lease_id(&mut self) -> i64 {
        loop {
            self.lease_seq += 1;
            // splitmix64: IDs look random (like etcd's) but are deterministic.
            let mut z = self.lease_seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let id = (z & 0x7fff_ffff_ffff_ffff) as i64;
            if id != 0 && !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    fn revoke(&mut self, tx: &mut Tx, id: i64) -> Result<(), KvError> {
        let lease = self.leases.remove(&id).ok_or(KvError::LeaseNotFound)?;
        for key in lease.keys {
            self.delete_key(tx, &key);
        }
        Ok(())
    }

    fn current(&self, key: &[u8]) -> Option<&Record> {
        self.keys
            .get(key)
            .and_then(|r| r.last())
            .filter(|r| !r.tombstone)
    }

    fn check_put(&self, req: &PutRequest) -> Result<(), KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let cur = self.current(&req.key);
        if (req.ignore_value || req.ignore_lease) && cur.is_none() {
            return Err(KvError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    fn put(&mut self, tx: &mut Tx, req: &PutRequest) -> PutResponse {
        let prev = self.current(&req.key).cloned();
        let rev = tx.next();
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (rev.main, 1),
        };
        if let Some(p) = &prev
            && p.lease != lease
            && let Some(l) = self.leases.get_mut(&p.lease)
        {
            l.keys.remove(&req.key);
        }
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.insert(req.key.clone());
        }
        let rec = Record {
            rev,
            create_revision,
            version,
            value,
            lease,
            tombstone: false,
        };
        let prev_kv = prev.map(|p| p.to_kv(&req.key));
        tx.events
            .push(Self::event_of(&req.key, &rec, prev_kv.clone()));
        self.size_bytes += record_size(&req.key, &rec);
        self.keys.entry(req.key.clone()).or_default().push(rec);
        PutResponse {
            prev_kv: if req.prev_kv { prev_kv } else { None },
        }
    }

    fn delete_key(&mut self, tx: &mut Tx, key: &[u8]) -> Option<KeyValue> {
        let prev = self.current(key)?.clone();
        if prev.lease != 0
            && let Some(l) = self.leases.get_mut(&prev.lease)
        {
            l.keys.remove(key);
        }
        let rec = Record {
            rev: tx.next(),
            create_revision: 0,
            version: 0,
            value: Vec::new(),
            lease: 0,
            tombstone: true,
        };
        let prev_kv = prev.to_kv(key);
        tx.events
            .push(Self::event_of(key, &rec, Some(prev_kv.clone())));
        self.size_bytes += record_size(key, &rec);
        self.keys.entry(key.to_vec()).or_default().push(rec);
        Some(prev_kv)
    }

    fn delete_range(&mut self, tx: &mut Tx, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let live: Vec<Vec<u8>> = self
            .keys
            .range::<[u8], _>(bounds(&req.key, &req.range_end))
            .filter(|(_, r)| r.last().is_some_and(|r| !r.tombstone))
            .map(|(k, _)| k.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &live {
            if let Some(prev) = self.delete_key(tx, key)
                && req.prev_kv
            {
                prev_kvs.push(prev);
            }
        }
        DeleteRangeResponse {
            deleted: live.len() as i64,
            prev_kvs,
        }
    }

    /// Validate a txn before it writes anything: the branch that will run must not put
    /// the same key twice, and its puts must be valid. Both branches are checked for
    /// duplicates, as etcd does.
    fn check_txn(&self, req: &TxnRequest) -> Result<(), KvError> {
        fn puts<'a>(ops: &'a [RequestOp], out: &mut Vec<&'a [u8]>) {
            for op in ops {
                match op {
                    RequestOp::Put(p) => out.push(&p.key),
                    RequestOp::Txn(t) => {
                        // Only one nested branch runs; either may hold this key once.
                        let mut a = Vec::new();
                        let mut b = Vec::new();
                        puts(&t.success, &mut a);
                        puts(&t.failure, &mut b);
                        a.extend(b.into_iter().filter(|k| !out.contains(k)));
                        out.extend(a);
                    }
                    _ => {}
                }
            }
        }
        for branch in [&req.success, &req.failure] {
            let mut keys = Vec::new();
            puts(branch, &mut keys);
            let set: BTreeSet<&[u8]> = keys.iter().copied().collect();
            if set.len() != keys.len() {
                return Err(KvError::DuplicateKey);
            }
        }
        let ops = if self.compare_all(&req.compare) {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match op {
                RequestOp::Put(p) => self.check_put(p)?,
                RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(KvError::EmptyKey),
                RequestOp::Range(r) => {
                    if r.revision > self.revision {
                        return Err(KvError::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < self.compact_revision {
                        return Err(KvError::Compacted {
                            compact_revision: self.compact_revision,
                        });
                    }
                }
                RequestOp::Txn(t) => self.check_txn(t)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn compare_all(&self, compares: &[Compare]) -> bool {
        compares.iter().all(|c| self.compare(c))
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<KeyValue> = if c.range_end.is_empty() {
            self.current(&c.key)
                .map(|r| r.to_kv(&c.key))
                .into_iter()
                .collect()
        } else {
            self.keys
                .range::<[u8], _>(bounds(&c.key, &c.range_end))
                .filter(|(k, _)| in_range(k, &c.key, &c.range_end))
                .filter_map(|(k, r)| r.last().filter(|r| !r.tombstone).map(|r| r.to_kv(k)))
                .collect()
        };
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return Self::compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| Self::compare_kv(c, kv))
    }

    fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
        use std::cmp::Ordering;
        let ord: Ordering = match &c.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
            CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match c.result {
            CompareResult::Equal => ord == Ordering::Equal,
            CompareResult::NotEqual => ord != Ordering::Equal,
            CompareResult::Greater => ord == Ordering::Greater,
            CompareResult::Less => ord == Ordering::Less,
        }
    }

    fn txn(&mut self, tx: &mut Tx, req: &TxnRequest) -> TxnResponse {
        let succeeded = self.compare_all(&req.compare);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    // Reads inside a txn see its earlier writes; validated in check_txn.
                    ResponseOp::Range(self.range_current(r, tx.main))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(tx, p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(tx, d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(tx, t)),
            });
        }
        TxnResponse {
            succeeded,
            responses,
        }
    }

    /// A range inside a txn: like [`KvStore::range`] but with the txn's own writes
    /// (at revision `pending`) visible.
    fn range_current(&self, req: &RangeRequest, pending: i64) -> RangeResponse {
        self.range_inner(req, pending).unwrap_or_default()
    }
}
