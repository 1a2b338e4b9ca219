//! The store's errors.

use std::io;
use std::path::PathBuf;

use mgmt_core::kv::KvError;

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
