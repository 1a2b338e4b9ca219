//! mgmt's embedded, replicated key/value store, speaking the etcd v3 gRPC API.
//!
//! Operators keep their tools: stock `etcdctl` (3.4) works against it. The pieces:
//!
//! * The key space is [`mgmt_core::kv::KvStore`], a pure MVCC state machine. Every
//!   write becomes a [`mgmt_core::kv::Timed`] command in the raft log; lease deadlines
//!   are arithmetic on the `now_ms` the leader stamps on each command. A timer on the
//!   leader proposes `ExpireLeases` once a deadline passes, so expiry is replicated.
//! * Replication is openraft 0.9 (`storage-v2`). The log is an append-only file of
//!   CRC-framed entries, `fsync`ed before openraft is told an entry is durable; on open
//!   a torn or corrupt tail is reported (a `tracing` warning and
//!   [`StoreHandle::torn_tail`]) and cut. Only the newest entries stay in memory.
//!   The vote is replaced atomically (temp + fsync + rename); state-machine snapshots
//!   are `snapshot.bin`. Entries, snapshots and peer messages share one binary
//!   encoding (`codec`). All of it lives in `<prefix>/<hostname>/`.
//! * openraft 0.9 syncs each log append before it takes the next, so concurrent
//!   writes are proposed together as one entry (`Command::Batch`, `node::batcher`):
//!   they share one fsync, as etcd's proposals do.
//! * Peers talk gRPC (`mgmtpeer.Peer`) over HTTP/2 on their peer URLs, each RPC with
//!   a deadline. Writes on a follower are forwarded to the leader; reads are
//!   linearizable (the leader confirms leadership and names a read index) unless the
//!   request is `serializable`.
//! * The etcd API (KV, Watch, Lease, Cluster, Maintenance: Status, Alarm, Hash,
//!   HashKV, Snapshot, Defragment, MoveLeader; Auth) is served on the client URLs,
//!   over gRPC and, on the same port, over etcd's HTTP face (`/health`,
//!   `/version`, `/metrics`, the JSON gateway: `http_face`, `gateway`).
//!   MemberAdd/Remove/Update/Promote answer `Unimplemented`:
//!   membership changes go through [`StoreHandle::change_membership_here`] (on the
//!   leader, never forwarded: what the clustering logic drives, watching
//!   [`StoreHandle::membership_changes`] and [`StoreHandle::replication_changes`]),
//!   or [`StoreHandle::add_learner`] and [`StoreHandle::promote`] (forwarded to the
//!   leader, waiting for it to finish).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), mgmt_store::StoreError> {
//! use mgmt_store::{Store, StoreConfig};
//! let mut config = StoreConfig::new("host1", "/var/lib/mgmt");
//! config.client_urls = mgmt_store::parse_urls("http://127.0.0.1:2379")?;
//! config.peer_urls = mgmt_store::parse_urls("http://127.0.0.1:2380")?;
//! let store = Store::start_single(config).await?; // new one-member cluster, or restart
//! store.put(b"/_mgmt/idealClusterSize", b"3").await?;
//! let kv = store.get(b"/_mgmt/idealClusterSize").await?;
//! store.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! A member joining an existing cluster starts with [`Store::start_join`] and waits;
//! a member of the cluster then calls `add_learner` with its [`MemberSpec`] and
//! `promote` once it has caught up.
//!
//! etcdctl 3.4 works with endpoints with or without their scheme: with one it
//! sends the whole URL as `:authority`, which `authority` accepts.

mod atomic_file;
mod auth;
mod authority;
pub mod certs;
pub mod client;
pub mod cluster;
mod codec;
mod config;
mod conn;
mod data_dir;
mod elections;
mod error;
pub mod exports;
pub mod fleet;
mod gateway;
mod handle;
mod histogram;
mod http_face;
mod http_reply;
mod in_flight;
mod log_store;
mod membership;
mod metrics;
pub mod net;
mod network;
mod node;
#[doc(hidden)]
pub mod pb;
mod peer_service;
mod restore;
pub mod runtime;
mod server;
mod start;
mod state_machine;
mod stop;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
mod types;
mod vote_file;

pub use config::{DEFAULT_KEEP_REVISIONS, Limits, StoreConfig};
pub use data_dir::{has_store_state, known_members, stored_member_id};
pub use error::StoreError;
pub use handle::{SHUTDOWN_GRACE, StoreHandle, StoreStats};
pub use log_store::TornTail;
pub use membership::{
    MemberInfo, MemberSpec, MembershipChange, MembershipError, MembershipState, MembershipWatch,
    Replication, ReplicationWatch,
};
pub use net::{Env, parse_urls};
pub use node::MoveLeaderError;
pub use restore::restore_snapshot;
pub use start::{Bound, Store};
pub use types::{MemberNode, member_id};
