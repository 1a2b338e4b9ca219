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

mod auth;
mod authority;
pub mod certs;
pub mod client;
pub mod cluster;
mod codec;
mod elections;
pub mod exports;
pub mod fleet;
mod gateway;
mod http_face;
mod in_flight;
mod log_store;
mod membership;
mod metrics;
pub mod net;
mod network;
mod node;
#[doc(hidden)]
pub mod pb;
pub mod runtime;
mod server;
mod state_machine;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tls;
mod types;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mgmt_core::Hostname;
use mgmt_core::kv::{
    self as kv, Command, DeleteRangeRequest, KeyValue, KvError, Output, PutRequest, RangeRequest,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use log_store::TornTail;
pub use membership::{
    MemberSpec, MembershipChange, MembershipError, MembershipState, MembershipWatch, Replication,
    ReplicationWatch,
};
pub use net::Env;
pub use node::{MemberInfo, MoveLeaderError};
pub use types::{MemberNode, member_id};

use crate::in_flight::{CountInFlight, InFlight};
use crate::log_store::LogStore;
use crate::net::Incoming;
use crate::network::{Channels, Network};
use crate::node::{AdminOp, Node, PeerService};
use crate::pb::etcdserverpb as epb;
use crate::server::Etcd;
use crate::state_machine::StateMachine;

/// Errors of the store's API.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot listen on {url}: {source}")]
    Bind { url: String, source: io::Error },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("store data in {dir}: {source}")]
    Storage { dir: PathBuf, source: io::Error },
    /// The data directory would not be a directory of its own inside the prefix.
    #[error("refusing store directory {dir}: {reason}")]
    UnsafeDataDir { dir: PathBuf, reason: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot restore {file}: {reason}")]
    Restore { file: PathBuf, reason: String },
    #[error("membership change failed: {0}")]
    Membership(String),
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Settings of one member.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// This host's name: the member name, and the data subdirectory.
    pub hostname: String,
    /// State goes in `<prefix>/<hostname>/`.
    pub prefix: PathBuf,
    /// Where the etcd API listens (`http://IP:PORT`; port 0 picks a free port, see
    /// [`StoreHandle::client_urls`]).
    pub client_urls: Vec<String>,
    /// Where peers reach this member.
    pub peer_urls: Vec<String>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: (u64, u64),
    /// Build a snapshot (and purge the log) after this many applied entries,
    pub snapshot_every: u64,
    /// or once this many bytes were appended to the log since its last purge.
    pub snapshot_log_bytes: u64,
    /// Log entries kept behind the last snapshot (for slow followers).
    pub log_kept_after_snapshot: u64,
    /// Network and clock ([`Env::tokio`] unless simulated).
    pub env: Env,
    /// The member ID to take when the data directory has no state yet;
    /// default [`member_id`] of the hostname. A directory with state keeps the
    /// ID it was created with (see [`stored_member_id`]): raft must never see
    /// one ID with two different logs, so a host that discarded its state
    /// joins again under a new ID (the clustering driver derives one per
    /// nomination, see `cluster::incarnation_id`).
    pub member_id: Option<u64>,
    /// etcd's request limits and space quota.
    pub limits: Limits,
}

/// etcd's request limits and space quota, with etcd's flag names and defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `--max-request-bytes`: a larger put, txn or delete is refused.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`: most compares, or operations of one branch, in a txn.
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes`: once the store would outgrow it, the member
    /// raises the `NOSPACE` alarm and writes that grow the store are refused
    /// until an operator makes room and disarms it.
    pub quota_backend_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1_572_864,
            max_txn_ops: 128,
            quota_backend_bytes: 2 << 30,
        }
    }
}

/// gRPC framing beyond a request's own bytes that the server still accepts
/// (etcd's `grpcOverheadBytes`), so a request just over the limit gets etcd's
/// error rather than a transport one.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl StoreConfig {
    /// Defaults: client `http://127.0.0.1:2379`, peer `http://127.0.0.1:2380`.
    pub fn new(hostname: impl Into<String>, prefix: impl Into<PathBuf>) -> Self {
        StoreConfig {
            hostname: hostname.into(),
            prefix: prefix.into(),
            client_urls: vec!["http://127.0.0.1:2379".into()],
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            heartbeat_ms: 100,
            election_timeout_ms: (500, 1000),
            snapshot_every: 10_000,
            snapshot_log_bytes: 64 << 20,
            log_kept_after_snapshot: 1000,
            env: Env::tokio(),
            member_id: None,
            limits: Limits::default(),
        }
    }

    /// This member's data directory, `PREFIX/HOSTNAME/`, creating the prefix
    /// if it is missing. The store creates this directory and deletes it when
    /// the host stops being a member, so it is checked every time: the host
    /// name must be a valid [`Hostname`], and, independently of that, the
    /// directory must be a direct child of the canonical prefix (never the
    /// prefix itself, never outside it) and not a symbolic link.
    pub fn data_dir(&self) -> Result<PathBuf, StoreError> {
        let unsafe_dir = |dir: PathBuf, reason: String| StoreError::UnsafeDataDir { dir, reason };
        let given = self.prefix.join(&self.hostname);
        Hostname::parse(&self.hostname).map_err(|e| unsafe_dir(given.clone(), e.to_string()))?;
        let storage = |source| StoreError::Storage {
            dir: self.prefix.clone(),
            source,
        };
        std::fs::create_dir_all(&self.prefix).map_err(storage)?;
        let prefix = std::fs::canonicalize(&self.prefix).map_err(storage)?;
        let dir = prefix.join(&self.hostname);
        if dir.parent() != Some(prefix.as_path()) || dir == prefix {
            let reason = format!("not a directory of its own inside {}", prefix.display());
            return Err(unsafe_dir(dir, reason));
        }
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if !m.is_dir() => Err(unsafe_dir(
                dir,
                "exists and is not a directory (a symbolic link is refused)".into(),
            )),
            Ok(_) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(dir),
            Err(source) => Err(StoreError::Storage { dir, source }),
        }
    }

    /// Deletes this member's state (it is no member any more). Only ever the
    /// checked [`StoreConfig::data_dir`], and only if it holds store state (a
    /// member ID or a raft log): a directory of the same name with anything
    /// else in it (`--prefix /home --hostname alice`) is refused. A missing
    /// directory is no error.
    pub fn discard_data_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.data_dir()?;
        let ours = has_store_state(&dir) || dir.join(KNOWN_MEMBERS_FILE).exists();
        // Empty: a start that stopped before writing anything.
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if dir.exists() && !ours && !empty {
            return Err(StoreError::UnsafeDataDir {
                dir,
                reason: "it holds no store state (no member ID, no raft log); left as it is".into(),
            });
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StoreError::Storage { dir, source: e })
            }
            _ => Ok(dir),
        }
    }

    /// After [`StoreConfig::discard_data_dir`]: keep only the client URLs of
    /// the members this host knew, so that a later start finds the cluster
    /// through them ([`known_members`]).
    pub fn remember_members(&self, client_urls: &[String]) -> Result<(), StoreError> {
        let dir = self.data_dir()?;
        let storage = |source| StoreError::Storage {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(storage)?;
        log_store::write_atomic(&dir, KNOWN_MEMBERS_FILE, client_urls.join("\n").as_bytes())
            .map_err(storage)
    }
}

/// The file that keeps the client URLs of the members a discarded state knew.
const KNOWN_MEMBERS_FILE: &str = "known_members";

/// Whether a data directory holds store state (a member ID or a raft log),
/// not just the members it once knew.
pub fn has_store_state(dir: &std::path::Path) -> bool {
    [MEMBER_ID_FILE, log_store::LOG_FILE]
        .iter()
        .any(|f| dir.join(f).exists())
}

/// The client URLs [`StoreConfig::remember_members`] kept in a data directory.
pub fn known_members(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(KNOWN_MEMBERS_FILE))
        .map(|s| {
            s.lines()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Parse a comma- or semicolon-separated URL list. `host:port` gets `http://`.
pub fn parse_urls(list: &str) -> Result<Vec<String>, StoreError> {
    list.split([',', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|u| {
            let url = if u.contains("://") {
                u.to_string()
            } else {
                format!("http://{u}")
            };
            socket_addr(&url)?;
            Ok(url)
        })
        .collect()
}

pub(crate) fn socket_addr(url: &str) -> Result<SocketAddr, StoreError> {
    let bad = |reason: &str| StoreError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("only http:// and https:// URLs are supported"))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(port) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{port}")
    } else {
        hostport.to_string()
    };
    hostport
        .parse()
        .map_err(|_| bad("expected http://IP:PORT or https://IP:PORT"))
}

/// Bind every URL of one link; fail on the first that cannot be bound, naming
/// it, or that is `https://` where the link has no certificate to serve.
/// Returns the listeners (TLS taken care of) and the URLs with their actual
/// ports.
async fn bind_all(
    env: &Env,
    urls: &[String],
    link: tls::Link,
) -> Result<Vec<(String, Incoming)>, StoreError> {
    let mut out = Vec::new();
    for url in urls {
        let addr = socket_addr(url)?;
        let https = url.starts_with("https://");
        let serving = env.tls().get(link).filter(|t| t.serves());
        if https && serving.is_none() {
            return Err(StoreError::InvalidUrl {
                url: url.clone(),
                reason: format!("https, but no certificate is configured for {link} links"),
            });
        }
        let (actual, incoming) = env.listen(addr).await.map_err(|source| StoreError::Bind {
            url: url.clone(),
            source,
        })?;
        let (scheme, incoming) = match serving {
            Some(config) if https => {
                let url = format!("https://{actual}");
                ("https", tls::accept(incoming, config, link, url))
            }
            _ => ("http", incoming),
        };
        out.push((format!("{scheme}://{actual}"), incoming));
    }
    Ok(out)
}

/// The file in a data directory that holds the member ID its state belongs to.
const MEMBER_ID_FILE: &str = "member_id";

/// The member ID a data directory's state was created with, if it has one.
/// A directory from before IDs were stored holds the hostname's [`member_id`]
/// (the only ID there was); it gets the file at its next start.
pub fn stored_member_id(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(MEMBER_ID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Resolves once the stop flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// How long [`StoreHandle::shutdown`] lets open connections finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Entries applied since the last snapshot that make a stopping member take
/// one as it stops (see `StoreHandle::shutdown`).
const SNAPSHOT_AT_STOP_AFTER: u64 = 256;

/// Pause after a lease expiry that did not commit.
const LEASE_EXPIRY_RETRY: Duration = Duration::from_millis(200);

/// Sleeps for `d`, or forever without one.
async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Pause after a failed write of the cluster ID.
const CLUSTER_ID_RETRY: Duration = Duration::from_millis(500);

/// Entry points.
pub struct Store;

enum Mode {
    Single,
    Join,
}

/// A snapshot waiting in a data directory for the member that starts a new
/// cluster there ([`restore_snapshot`]).
const RESTORE_FILE: &str = "restore.snapshot";

/// Puts a file of `etcdctl snapshot save` (from this store) into the empty
/// data directory of `config`, checked: the next start of that member without
/// seeds forms a new one-member cluster holding its keys, leases and
/// revisions (as `etcdctl snapshot restore` then `etcd` do). Its `/_mgmt/`
/// membership keys are dropped: the new cluster grows by its own nominations.
pub fn restore_snapshot(config: &StoreConfig, file: &Path) -> Result<PathBuf, StoreError> {
    let refuse = |reason: String| StoreError::Restore {
        file: file.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|e| refuse(e.to_string()))?;
    state_machine::read_snapshot_file(&bytes).map_err(|e| refuse(e.to_string()))?;
    let dir = config.data_dir()?;
    if has_store_state(&dir) {
        return Err(refuse(format!(
            "{} already holds store state; a restore starts a new cluster in an empty one",
            dir.display()
        )));
    }
    let storage = |source| StoreError::Storage {
        dir: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(storage)?;
    log_store::write_atomic(&dir, RESTORE_FILE, &bytes).map_err(storage)?;
    Ok(dir)
}

/// The restored state machine waiting in `dir`, made ready to start a new
/// cluster: no log position, no membership, no old `/_mgmt/` members.
fn take_restore(dir: &Path, now_ms: u64) -> io::Result<Option<state_machine::SmData>> {
    let bytes = match std::fs::read(dir.join(RESTORE_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut data = state_machine::read_snapshot_file(&bytes)?;
    data.last_applied = None;
    data.membership = Default::default();
    for part in ["volunteers/", "nominated/", "endpoints/"] {
        let key = format!("{}{part}", mgmt_core::cluster::keys::PREFIX).into_bytes();
        let range_end = mgmt_core::kv::prefix_end(&key);
        let command = Command::DeleteRange(mgmt_core::kv::DeleteRangeRequest {
            key,
            range_end,
            prev_kv: false,
        });
        data.kv.apply(&mgmt_core::kv::Timed { now_ms, command });
    }
    Ok(Some(data))
}

impl Store {
    /// Start a member that forms a one-member cluster if its data directory has no
    /// state, or restarts from that state.
    pub async fn start_single(config: StoreConfig) -> Result<StoreHandle, StoreError> {
        Self::start(config, Mode::Single).await
    }

    /// Start a member with no cluster of its own: it serves once a member of an
    /// existing cluster adds it (see [`StoreHandle::add_learner`]). With existing state
    /// it restarts from it, like `start_single`.
    pub async fn start_join(config: StoreConfig) -> Result<StoreHandle, StoreError> {
        Self::start(config, Mode::Join).await
    }

    async fn start(config: StoreConfig, mode: Mode) -> Result<StoreHandle, StoreError> {
        if config.client_urls.is_empty() || config.peer_urls.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: String::new(),
                reason: "at least one client URL and one peer URL are needed".into(),
            });
        }
        // Bind everything first: a port in use fails before anything runs.
        let clients = bind_all(&config.env, &config.client_urls, tls::Link::Client).await?;
        let peers = bind_all(&config.env, &config.peer_urls, tls::Link::Peer).await?;
        let client_urls: Vec<String> = clients.iter().map(|(u, _)| u.clone()).collect();
        let peer_urls: Vec<String> = peers.iter().map(|(u, _)| u.clone()).collect();

        let dir = config.data_dir()?;
        let storage = |source| StoreError::Storage {
            dir: dir.clone(),
            source,
        };
        let (log, torn_tail) =
            LogStore::open(&dir, config.env.allows_threads(), config.snapshot_log_bytes)
                .map_err(storage)?;
        let wants_snapshot = log.wants_snapshot();
        let log_for_purge = log.clone();
        let sm = StateMachine::open(&dir).map_err(storage)?;
        let shared = sm.shared.clone();
        let id = match stored_member_id(&dir) {
            Some(id) => id,
            None => {
                // State from before IDs were stored was the hostname's.
                let id = if log.last_index().is_some() {
                    member_id(&config.hostname)
                } else {
                    config
                        .member_id
                        .unwrap_or_else(|| member_id(&config.hostname))
                };
                log_store::write_atomic(&dir, MEMBER_ID_FILE, id.to_string().as_bytes())
                    .map_err(storage)?;
                id
            }
        };
        let self_node = MemberNode {
            name: config.hostname.clone(),
            peer_urls: peer_urls.clone(),
            client_urls: client_urls.clone(),
        };
        let raft_config = openraft::Config {
            cluster_name: "mgmt".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.log_kept_after_snapshot,
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let channels = Channels::new(config.env.clone());
        let has_state = log.last_index().is_some();
        let restored = match mode {
            Mode::Single if !has_state => {
                take_restore(&dir, config.env.now_ms()).map_err(|e| StoreError::Restore {
                    file: dir.join(RESTORE_FILE),
                    reason: e.to_string(),
                })?
            }
            _ => None,
        };
        let restored = restored.map(|data| {
            let revision = data.kv.revision();
            shared.lock().data = data;
            revision
        });
        let log_reader = log.clone();
        let raft = openraft::Raft::new(
            id,
            Arc::new(raft_config),
            Network {
                channels: channels.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let (proposals, proposed) = tokio::sync::mpsc::unbounded_channel();
        let (reads, to_confirm) = tokio::sync::mpsc::unbounded_channel();
        let node = Arc::new(Node {
            id,
            own: self_node.clone(),
            raft,
            sm: shared,
            channels,
            env: config.env.clone(),
            limits: config.limits,
            transferring: watch::channel(false).0,
            proposals,
            reads,
            puts: Default::default(),
            ranges: Default::default(),
            log: log_reader,
            leader_contact: Default::default(),
            leaderless: watch::channel(false).0,
            term_seen: Default::default(),
            leader_changes: Default::default(),
        });

        let (stop_tx, stop_rx) = watch::channel(false);
        let cut = tokio_util::sync::CancellationToken::new();
        let in_flight = Arc::new(InFlight::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(node::batcher(
            node.raft.clone(),
            config.env.clone(),
            proposed,
        ));
        tasks.spawn(node::read_indexer(node.raft.clone(), to_confirm));
        tasks.spawn(metrics::count_leader_changes(node.clone(), stop_rx.clone()));
        // Campaigns are this task's to call (PreVote), not raft's timer.
        node.raft.runtime_config().elect(false);
        tasks.spawn(elections::run(node.clone(), stop_rx.clone()));
        // Log size by bytes, not only by entries: once `snapshot_log_bytes`
        // were appended, a snapshot, then a purge that keeps at most that
        // many bytes of the newest entries (openraft's own purge counts
        // entries, whatever their size).
        {
            let node = node.clone();
            let mut stop = stop_rx.clone();
            let keep = config.snapshot_log_bytes;
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = wants_snapshot.notified() => {}
                        _ = stopped(&mut stop) => break,
                    }
                    if let Err(e) = node.snapshot_now().await {
                        tracing::warn!(error = %e, "snapshot for the log's size failed");
                        continue;
                    }
                    let snapshot = node.raft.metrics().borrow().snapshot.map_or(0, |s| s.index);
                    if let Some(upto) = log_for_purge.purge_point(keep) {
                        let _ = node.raft.trigger().purge_log(upto.min(snapshot)).await;
                    }
                }
            });
        }
        for (_, listener) in peers {
            let listener = net::cuttable(listener, cut.clone());
            let svc = crate::pb::mgmtpeer::peer_server::PeerServer::new(PeerService {
                node: node.clone(),
            })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
            let mut stop = stop_rx.clone();
            let counted = CountInFlight(in_flight.clone());
            tasks.spawn(async move {
                let res = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(1)))
                    .layer(counted)
                    .add_service(svc)
                    .serve_with_incoming_shutdown(listener, async move {
                        stopped(&mut stop).await;
                    })
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "peer server failed");
                }
            });
        }
        for (_, listener) in clients {
            let listener = authority::lenient(net::cuttable(listener, cut.clone()));
            let etcd = Etcd { node: node.clone() };
            let mut stop = stop_rx.clone();
            let counted = CountInFlight(in_flight.clone());
            let max = config.limits.max_request_bytes + GRPC_OVERHEAD_BYTES;
            tasks.spawn(async move {
                // HTTP/1.1 beside HTTP/2: the HTTP face (`/health`, ...).
                let res = tonic::transport::Server::builder()
                    .accept_http1(true)
                    .layer(counted)
                    .layer(http_face::HttpFaceLayer {
                        node: etcd.node.clone(),
                    })
                    .add_service(
                        epb::kv_server::KvServer::new(etcd.clone()).max_decoding_message_size(max),
                    )
                    .add_service(
                        epb::watch_server::WatchServer::new(etcd.clone())
                            .max_decoding_message_size(max),
                    )
                    .add_service(
                        epb::lease_server::LeaseServer::new(etcd.clone())
                            .max_decoding_message_size(max),
                    )
                    .add_service(
                        epb::cluster_server::ClusterServer::new(etcd.clone())
                            .max_decoding_message_size(max),
                    )
                    .add_service(
                        epb::auth_server::AuthServer::new(etcd.clone())
                            .max_decoding_message_size(max),
                    )
                    .add_service(
                        epb::maintenance_server::MaintenanceServer::new(etcd)
                            .max_decoding_message_size(max)
                            .max_encoding_message_size(max),
                    )
                    .serve_with_incoming_shutdown(listener, async move {
                        stopped(&mut stop).await;
                    })
                    .await;
                if let Err(e) = res {
                    tracing::error!(error = %e, "client server failed");
                }
            });
        }
        // Lease expiry: the leader proposes ExpireLeases once a deadline
        // passes. It sleeps until the earliest deadline, woken when that or
        // the leader changes: no timer runs while nothing can expire.
        {
            let node = node.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let mut deadline = node.sm.lease_deadline();
                let mut leader = node.raft.server_metrics();
                loop {
                    let due = *deadline.borrow_and_update();
                    let leading = leader.borrow_and_update().current_leader == Some(node.id);
                    let wait = due
                        .filter(|_| leading)
                        .map(|d| Duration::from_millis(d.saturating_sub(node.env.now_ms())));
                    if wait == Some(Duration::ZERO) {
                        node.expire_leases_if_due().await;
                        if *deadline.borrow() == due {
                            // Not committed (no quorum): try again shortly.
                            tokio::select! {
                                _ = tokio::time::sleep(LEASE_EXPIRY_RETRY) => {}
                                _ = stopped(&mut stop) => break,
                            }
                        }
                        continue;
                    }
                    tokio::select! {
                        _ = sleep_for(wait) => {}
                        r = deadline.changed() => if r.is_err() { break },
                        r = leader.changed() => if r.is_err() { break },
                        _ = stopped(&mut stop) => break,
                    }
                }
            });
        }

        if matches!(mode, Mode::Single) && !has_state {
            let members = BTreeMap::from([(id, self_node.clone())]);
            node.raft
                .initialize(members)
                .await
                .map_err(|e| StoreError::Raft(e.to_string()))?;
            if let Some(revision) = restored {
                settle_restore(&node, &dir).await?;
                tracing::info!(revision, "store restored from a snapshot");
            }
        } else if has_state {
            // The only voter of its membership, restarting, would sit out an
            // election timeout for the one vote it casts itself: a one-shot
            // run of the README's command paid 150 ms for it. Only the timing
            // changes; with other voters the usual timeouts apply.
            let loaded = node
                .raft
                .wait(Some(Duration::from_millis(500)))
                .metrics(
                    |m| m.membership_config.log_id().is_some(),
                    "membership loaded",
                )
                .await;
            if let Ok(m) = loaded
                && m.membership_config.membership().voter_ids().eq([id])
            {
                let _ = node.raft.trigger().elect().await;
            }
        }
        // Once leader, record the cluster ID, and tick only while there is
        // another member. (The leader's own member URLs
        // are the cluster agent's to refresh: `StoreHandle::update_own_urls`.)
        // Raft's server metrics change with the leader, not with heartbeats.
        {
            let node = node.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let mut metrics = node.raft.server_metrics();
                loop {
                    let (is_leader, alone) = {
                        let m = metrics.borrow_and_update();
                        let leader = m.current_leader == Some(node.id);
                        let only_me = m.membership_config.nodes().map(|(id, _)| *id).eq([node.id]);
                        (leader, leader && only_me)
                    };
                    // The lone member that leads has no one to send heartbeats
                    // to and no election to call: raft's ticks only wake it.
                    // They come back with the first other member.
                    node.raft.runtime_config().tick(!alone);
                    if is_leader && node.sm.lock().data.kv.cluster_id() == 0 {
                        let cluster_id = member_id(&format!("cluster:{}", node.id));
                        if node
                            .write(Command::SetClusterId { cluster_id })
                            .await
                            .is_err()
                        {
                            tokio::select! {
                                _ = tokio::time::sleep(CLUSTER_ID_RETRY) => continue,
                                _ = stopped(&mut stop) => break,
                            }
                        }
                    }
                    tokio::select! {
                        r = metrics.changed() => if r.is_err() { break },
                        _ = stopped(&mut stop) => break,
                    }
                }
            });
        }

        Ok(StoreHandle {
            node,
            stop: stop_tx,
            cut,
            in_flight,
            tasks: tokio::sync::Mutex::new(tasks),
            client_urls,
            peer_urls,
            torn_tail,
        })
    }
}

/// Makes a restore durable: the restored keys are in no log entry, so a
/// snapshot is taken and the log behind it purged (a joining member then gets
/// the snapshot, never a log without those keys); then the restore file goes.
async fn settle_restore(node: &Node, dir: &Path) -> Result<(), StoreError> {
    let raft_err = |e: &dyn std::fmt::Display| StoreError::Raft(e.to_string());
    node.raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.last_applied.is_some(), "initial membership applied")
        .await
        .map_err(|e| raft_err(&e))?;
    node.snapshot_now().await?;
    let upto = node.raft.metrics().borrow().snapshot.map_or(0, |s| s.index);
    node.raft
        .trigger()
        .purge_log(upto)
        .await
        .map_err(|e| raft_err(&e))?;
    std::fs::remove_file(dir.join(RESTORE_FILE)).map_err(|source| StoreError::Storage {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A member's figures, as metrics report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub is_leader: bool,
    pub raft_term: u64,
    /// Voters and learners in the membership this member knows.
    pub members: usize,
    pub applied_index: u64,
    /// Put and Range requests this member answered.
    pub puts: u64,
    pub ranges: u64,
    /// Watchers registered on this member.
    pub watchers: usize,
}

/// A running member. Call [`StoreHandle::shutdown`] to stop it (dropping it stops
/// the listeners too, but without waiting).
pub struct StoreHandle {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    /// Cancels every accepted connection (see `net::cuttable`).
    cut: tokio_util::sync::CancellationToken,
    /// Requests being answered: what shutdown waits for before cutting.
    in_flight: Arc<InFlight>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    client_urls: Vec<String>,
    peer_urls: Vec<String>,
    torn_tail: Option<TornTail>,
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.cut.cancel();
    }
}

impl StoreHandle {
    /// This member's figures now.
    pub fn stats(&self) -> StoreStats {
        use std::sync::atomic::Ordering::Relaxed;
        let n = &self.node;
        let (is_leader, raft_term, applied_index) = {
            let m = n.raft.metrics();
            let m = m.borrow();
            (
                m.current_leader == Some(n.id),
                m.current_term,
                m.last_applied.map_or(0, |l| l.index),
            )
        };
        StoreStats {
            is_leader,
            raft_term,
            members: n.members().len(),
            applied_index,
            puts: n.puts.load(Relaxed),
            ranges: n.ranges.load(Relaxed),
            watchers: n.sm.lock().watchers.len(),
        }
    }

    /// This member's ID (its raft node ID and etcd member ID).
    pub fn id(&self) -> u64 {
        self.node.id
    }

    /// Client URLs actually listened on (ports resolved).
    pub fn client_urls(&self) -> &[String] {
        &self.client_urls
    }

    /// Peer URLs actually listened on (ports resolved).
    pub fn peer_urls(&self) -> &[String] {
        &self.peer_urls
    }

    /// The torn or corrupt log tail cut when this member opened its log, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// What another member needs to add this one.
    pub fn member_spec(&self, hostname: &str) -> MemberSpec {
        MemberSpec {
            id: self.node.id,
            node: MemberNode {
                name: hostname.to_string(),
                peer_urls: self.peer_urls.clone(),
                client_urls: self.client_urls.clone(),
            },
        }
    }

    /// Current leader's ID, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.node.leader()
    }

    /// Wait until a leader is known (at most `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, StoreError> {
        self.node.await_leader(timeout).await
    }

    /// Last log index applied by this member.
    pub fn applied_index(&self) -> Option<u64> {
        self.node
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Members of the cluster as this member knows them (MemberList).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.node.members()
    }

    /// Add a member as a non-voting learner; returns once it caught up with the log.
    pub async fn add_learner(&self, spec: MemberSpec) -> Result<(), StoreError> {
        self.node
            .admin(AdminOp::AddLearner {
                id: spec.id,
                node: spec.node,
            })
            .await
    }

    /// etcd's MoveLeader, on this member if it is the leader: the target
    /// voter campaigns once it has the whole log (writes pause for about
    /// one election timeout). Never forwarded.
    pub async fn move_leader(&self, to: u64) -> Result<(), MoveLeaderError> {
        self.node.move_leader(to).await
    }

    /// Make a learner a voter.
    pub async fn promote(&self, id: u64) -> Result<(), StoreError> {
        self.node.admin(AdminOp::Promote { id }).await
    }

    /// Remove member `id` (a learner, or a voter the rest can do without),
    /// on the leader (forwarded there if this member is not).
    pub async fn remove(&self, id: u64) -> Result<(), StoreError> {
        self.node.admin(AdminOp::Remove { id }).await
    }

    /// Change the membership on this member only, if it is the leader: never
    /// forwarded, never retried. For clustering logic that decides on the
    /// leader; [`MembershipError::NotLeader`] and [`MembershipError::InProgress`]
    /// change nothing and are worth trying again after the next
    /// [`MembershipWatch::changed`]. An added learner is not waited for.
    pub async fn change_membership_here(
        &self,
        change: &MembershipChange,
    ) -> Result<(), MembershipError> {
        self.node.change_membership_here(change, false).await
    }

    /// This member's view of the membership and the leader.
    pub fn membership(&self) -> MembershipState {
        let applied = self
            .node
            .raft
            .data_metrics()
            .borrow()
            .last_applied
            .map(|l| l.index);
        MembershipState::of(&self.node.raft.server_metrics().borrow(), applied)
    }

    /// A watch that wakes when [`StoreHandle::membership`] may have changed
    /// (membership, leader, vote, raft state); wait on it instead of polling.
    pub fn membership_changes(&self) -> MembershipWatch {
        MembershipWatch {
            rx: self.node.raft.server_metrics(),
            data: self.node.raft.data_metrics(),
            stop: self.stop.subscribe(),
            committed: self.membership().committed,
        }
    }

    /// Take a snapshot of everything applied now and wait until it is on disk
    /// (what `Defragment` does; the log behind it can then be purged).
    pub async fn snapshot(&self) -> Result<(), StoreError> {
        self.node.snapshot_now().await
    }

    /// The leader's replication progress: what a learner has matched, to decide
    /// when to promote it. `matched` is empty unless this member is the leader.
    pub fn replication(&self) -> Replication {
        Replication::of(&self.node.raft.data_metrics().borrow())
    }

    /// A watch that wakes when [`StoreHandle::replication`] changed.
    pub fn replication_changes(&self) -> ReplicationWatch {
        let rx = self.node.raft.data_metrics();
        let last = Replication::of(&rx.borrow());
        ReplicationWatch {
            rx,
            stop: self.stop.subscribe(),
            last,
        }
    }

    /// On the leader, bring this member's own entry in the membership (name,
    /// peer and client URLs as bound) up to date, as after a restart on other
    /// ports; true if it changed it, false if there was nothing to do (not the
    /// leader, no longer a member, or already current). The store also does
    /// this by itself whenever this member becomes leader.
    pub async fn update_own_urls(&self) -> Result<bool, StoreError> {
        self.node
            .update_own_entry()
            .await
            .map_err(|e| StoreError::Membership(e.to_string()))
    }

    /// Put a key; returns the new revision.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, StoreError> {
        let a = self
            .node
            .write(Command::Put(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            }))
            .await?;
        a.result?;
        Ok(a.revision)
    }

    /// Delete a key or, with `prefix`, every key under it; returns how many were deleted.
    pub async fn delete(&self, key: &[u8], prefix: bool) -> Result<i64, StoreError> {
        let a = self
            .node
            .write(Command::DeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: if prefix {
                    kv::prefix_end(key)
                } else {
                    Vec::new()
                },
                prev_kv: false,
            }))
            .await?;
        match a.result? {
            Output::DeleteRange(d) => Ok(d.deleted),
            _ => Ok(0),
        }
    }

    /// Run any command (txn, lease, compaction) through the log.
    pub async fn command(&self, command: Command) -> Result<kv::Applied, StoreError> {
        self.node.write(command).await
    }

    /// Run a transaction through the log; true if its compares held (and its
    /// `success` ops ran), false if they did not (its `failure` ops ran).
    pub async fn txn(&self, req: kv::TxnRequest) -> Result<bool, StoreError> {
        match self.node.write(Command::Txn(req)).await?.result? {
            Output::Txn(t) => Ok(t.succeeded),
            other => Err(StoreError::Raft(format!("a txn answered {other:?}"))),
        }
    }

    /// Linearizable read of one key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.range(
            RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            },
            false,
        )
        .await
        .map(|mut r| r.kvs.pop())
    }

    /// Linearizable read of every key under `prefix`.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        self.get_prefix_at(prefix).await.map(|(_, kvs)| kvs)
    }

    /// Linearizable read of every key under `prefix`, with the store revision it
    /// read at: a watch from the revision after it misses nothing.
    pub async fn get_prefix_at(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), StoreError> {
        self.get_range_at(prefix, &kv::prefix_end(prefix)).await
    }

    /// [`StoreHandle::get_prefix_at`] of the keys in `[key, range_end)`.
    pub async fn get_range_at(
        &self,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(i64, Vec<KeyValue>), StoreError> {
        let req = RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        };
        self.range_at(req, false).await.map(|(rev, r)| (rev, r.kvs))
    }

    /// A range read; `serializable` reads this member's state without a read barrier.
    pub async fn range(
        &self,
        req: RangeRequest,
        serializable: bool,
    ) -> Result<kv::RangeResponse, StoreError> {
        self.range_at(req, serializable).await.map(|(_, r)| r)
    }

    /// [`StoreHandle::range`] and the revision it read at.
    async fn range_at(
        &self,
        req: RangeRequest,
        serializable: bool,
    ) -> Result<(i64, kv::RangeResponse), StoreError> {
        if !serializable {
            self.node.read_barrier().await?;
        }
        let sm = self.node.sm.lock();
        Ok((sm.data.kv.revision(), sm.data.kv.range(&req)?))
    }

    /// Stop serving and replicating; waits for the listeners and raft to finish.
    ///
    /// The listeners are closed when this returns, so the same URLs can be bound
    /// again at once. Watch streams are ended, requests still being answered
    /// get [`SHUTDOWN_GRACE`] to finish, and then every accepted connection is
    /// cut: an idle one (this agent's own client, a peer's keepalive
    /// connection) costs no wait at all. A member that applied
    /// [`SNAPSHOT_AT_STOP_AFTER`] entries since its last snapshot takes one
    /// first.
    pub async fn shutdown(&self) {
        self.snapshot_before_stop().await;
        let _ = self.stop.send(true);
        // End watchers so their streams close and count as finished.
        self.node.sm.lock().watchers.clear();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.in_flight.idle())
            .await
            .is_err()
        {
            tracing::debug!("store shutdown: cutting requests still in flight");
        }
        self.cut.cancel();
        // Nothing graceful is left once every connection is cut: the servers
        // and the background tasks (which may wait on a raft write that has
        // no quorum) are stopped outright, so the listeners close now.
        let mut tasks = self.tasks.lock().await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        if let Err(e) = self.node.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.node.sm.lock().watchers.clear();
    }

    /// A member that applied [`SNAPSHOT_AT_STOP_AFTER`] entries or more
    /// since its last snapshot takes one as it stops: it restarts from the
    /// snapshot instead of applying them all again. One-shot runs from cron
    /// append a few entries each and rarely reach `snapshot_every`: after
    /// 400 of them, each run took twice as long (17 ms more) to replay.
    async fn snapshot_before_stop(&self) {
        let since = {
            let m = self.node.raft.metrics();
            let m = m.borrow();
            let applied = m.last_applied.map_or(0, |l| l.index);
            applied.saturating_sub(m.snapshot.map_or(0, |s| s.index))
        };
        if since < SNAPSHOT_AT_STOP_AFTER {
            return;
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, self.node.snapshot_now()).await {
            Ok(Ok(())) => tracing::debug!(entries = since, "snapshot taken before stopping"),
            Ok(Err(e)) => tracing::warn!(error = %e, "no snapshot before stopping"),
            Err(_) => tracing::warn!("no snapshot before stopping: it took too long"),
        }
    }
}
