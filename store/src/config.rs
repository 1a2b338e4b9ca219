//! A member's settings: etcd's flags, its data directory under the prefix.

use std::io;
use std::path::PathBuf;

use mgmt_core::Hostname;

use crate::data_dir::{KNOWN_MEMBERS_FILE, has_store_state};
use crate::error::StoreError;
use crate::net::Env;
#[cfg(doc)]
use crate::{StoreHandle, data_dir::known_members, member_id, stored_member_id};

/// [`StoreConfig::keep_revisions`] by default. Every host's status is a
/// revision each time it changes (a one-shot run from cron: one a run);
/// kept forever, the history grew the snapshot each start reads (1.4 MB after
/// 3 000 runs, each run 9 ms slower) and a member's memory. A thousand
/// revisions is more than a watch that reconnects needs (it resyncs past a
/// compaction anyway).
pub const DEFAULT_KEEP_REVISIONS: u64 = 1000;

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
    /// Build a snapshot (and purge the log) after this many applied entries
    /// (etcd's `--snapshot-count` default),
    pub snapshot_every: u64,
    /// or once this many bytes, or the last snapshot's size if larger, were
    /// appended to the log since its last purge. A snapshot writes the whole
    /// state: one every few thousand entries of a large state would write
    /// far more than the entries themselves and slow every log sync beside it.
    pub snapshot_log_bytes: u64,
    /// Log entries kept behind the last snapshot (for slow followers).
    pub log_kept_after_snapshot: u64,
    /// Revisions of key history kept behind the newest (etcd's
    /// `--auto-compaction-mode=revision`): the leader compacts to the newest
    /// minus this once twice as many are held. 0 keeps the whole history.
    pub keep_revisions: u64,
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
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

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
            snapshot_every: 100_000,
            snapshot_log_bytes: 64 << 20,
            log_kept_after_snapshot: 1000,
            keep_revisions: DEFAULT_KEEP_REVISIONS,
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
        crate::atomic_file::write_atomic(
            &dir,
            KNOWN_MEMBERS_FILE,
            client_urls.join("\n").as_bytes(),
        )
        .map_err(storage)
    }
}
