//! Restoring a snapshot of `etcdctl snapshot save` into a new one-member
//! cluster.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mgmt_core::kv::Command;

use crate::config::StoreConfig;
use crate::data_dir::has_store_state;
use crate::error::StoreError;
use crate::node::Node;
use crate::state_machine;

/// A snapshot waiting in a data directory for the member that starts a new
/// cluster there ([`restore_snapshot`]).
pub(crate) const RESTORE_FILE: &str = "restore.snapshot";

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
    crate::atomic_file::write_atomic(&dir, RESTORE_FILE, &bytes).map_err(storage)?;
    Ok(dir)
}

/// The restored state machine waiting in `dir`, made ready to start a new
/// cluster: no log position, no membership, no old `/_mgmt/` members.
pub(crate) fn take_restore(dir: &Path, now_ms: u64) -> io::Result<Option<state_machine::SmData>> {
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

/// Makes a restore durable: the restored keys are in no log entry, so a
/// snapshot is taken and the log behind it purged (a joining member then gets
/// the snapshot, never a log without those keys); then the restore file goes.
pub(crate) async fn settle_restore(node: &Node, dir: &Path) -> Result<(), StoreError> {
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
