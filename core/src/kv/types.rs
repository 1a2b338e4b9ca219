//! Request, response and event types of the key space. They mirror etcd v3's messages
//! but are plain Rust data: the gRPC layer in `mgmt-store` converts to and from protobuf.

use serde::{Deserialize, Serialize};

/// One key with its metadata, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of puts since the key was (re)created; 1 after creation.
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change to one key. For a delete, `kv` holds the key and the deleting revision as
/// `mod_revision` (everything else zero), as etcd does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's previous value, if it had one that is not compacted away.
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// A read of one key (`range_end` empty), a range `[key, range_end)`, or every key
/// `>= key` (`range_end == [0]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// At most this many keys; 0 means no limit.
    pub limit: i64,
    /// Read at this revision; 0 or negative means the current one.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed.
    pub more: bool,
    /// Number of keys that matched, before `limit`.
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    /// Compare every key in `[key, range_end)`; all must hold.
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// Remaining life of a lease, as answered by `LeaseTimeToLive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLive {
    pub id: i64,
    /// Seconds left (rounded up), -1 once expired.
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

/// A write: everything that changes the key space goes through the replicated log as
/// one of these, so every replica applies the same sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact {
        revision: i64,
    },
    /// `id == 0` picks an unused ID deterministically.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    LeaseKeepAlive {
        id: i64,
    },
    /// Revoke every lease whose deadline is at or before the command's `now_ms`.
    ExpireLeases,
    /// Record the cluster ID (sent once by the member that bootstraps the cluster).
    SetClusterId {
        cluster_id: u64,
    },
    /// Several clients' commands proposed as one raft entry (the store batches
    /// writes that arrive together): each applies in order, as if alone, with
    /// its own revision and result ([`Output::Batch`]).
    Batch(Vec<Command>),
    /// Raise or clear an alarm (etcd's `Alarm` with `ACTIVATE` or `DEACTIVATE`).
    Alarm {
        activate: bool,
        member_id: u64,
        alarm: Alarm,
    },
    /// A client's command with who sent it: applied only if the auth state
    /// at apply time allows it (while auth is on), so a right revoked
    /// between a check and the apply still counts.
    As {
        who: super::auth::Identity,
        command: Box<Command>,
    },
    /// A change to users, roles or the enabled flag (send it wrapped in `As`).
    Auth(super::auth::AuthCommand),
}

/// etcd's alarm types. While `NoSpace` is raised anywhere, writes that would
/// grow the store are refused ([`super::KvError::NoSpace`]); deletes and
/// compaction still work, so an operator can make room and disarm it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Alarm {
    NoSpace,
    Corrupt,
}

/// A command with the time at which the leader proposed it. Lease deadlines are
/// computed from `now_ms`, never from a local clock, so replicas agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed {
    pub now_ms: u64,
    pub command: Command,
}

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact,
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke,
    LeaseKeepAlive {
        id: i64,
        ttl: i64,
    },
    ExpireLeases {
        revoked: Vec<i64>,
    },
    SetClusterId,
    /// The alarms raised after the command: (member ID, alarm).
    Alarm {
        alarms: Vec<(u64, Alarm)>,
    },
    /// What each command of a [`Command::Batch`] gave, in order.
    Batch(Vec<super::Applied>),
    Auth,
}
