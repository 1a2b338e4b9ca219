//! A running member: its API, its figures, its shutdown.

use std::sync::Arc;
use std::time::Duration;

use mgmt_core::kv::{
    self as kv, Command, DeleteRangeRequest, KeyValue, Output, PutRequest, RangeRequest,
};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::error::StoreError;
use crate::in_flight::InFlight;
use crate::log_store::TornTail;
use crate::membership::{
    MemberInfo, MemberSpec, MembershipChange, MembershipError, MembershipState, MembershipWatch,
    Replication, ReplicationWatch,
};
use crate::node::{AdminOp, MoveLeaderError, Node};
use crate::types::MemberNode;

/// How long [`StoreHandle::shutdown`] lets open connections finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Entries applied since the last snapshot that make a stopping member take
/// one as it stops (see `StoreHandle::shutdown`).
const SNAPSHOT_AT_STOP_AFTER: u64 = 256;

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
    pub(crate) node: Arc<Node>,
    pub(crate) stop: watch::Sender<bool>,
    /// Cancels every accepted connection (see `net::cuttable`).
    pub(crate) cut: tokio_util::sync::CancellationToken,
    /// Requests being answered: what shutdown waits for before cutting.
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) tasks: tokio::sync::Mutex<JoinSet<()>>,
    pub(crate) client_urls: Vec<String>,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) torn_tail: Option<TornTail>,
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
        let log = self.node.log.clone();
        // Without threads of its own (the simulator) the log recorded its
        // purges as they came: nothing is left to settle.
        let settled = if self.node.env.allows_threads() {
            tokio::task::spawn_blocking(move || log.settle_purges())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        } else {
            Ok(())
        };
        if let Err(e) = settled {
            tracing::warn!(error = %e, "cannot record the raft log's purge");
        }
    }

    fn applied_since_snapshot(&self) -> u64 {
        let m = self.node.raft.metrics();
        let m = m.borrow();
        let applied = m.last_applied.map_or(0, |l| l.index);
        applied.saturating_sub(m.snapshot.map_or(0, |s| s.index))
    }

    /// Whether [`StoreHandle::shutdown`] would leave this member's state
    /// better than a kill would: a snapshot due at stop, or a log purge
    /// still to record. Everything else it does (listeners closed,
    /// requests in flight answered, raft's tasks ended) ends with the
    /// process too, and the state survives a kill at any point.
    pub(crate) fn owes_an_orderly_stop(&self) -> bool {
        self.applied_since_snapshot() >= SNAPSHOT_AT_STOP_AFTER || self.node.log.purge_unrecorded()
    }

    /// The cluster is this member alone: no other voter, no learner.
    pub(crate) fn alone(&self) -> bool {
        matches!(self.members().as_slice(), [only] if only.id == self.id())
    }

    /// A member that applied [`SNAPSHOT_AT_STOP_AFTER`] entries or more
    /// since its last snapshot takes one as it stops: it restarts from the
    /// snapshot instead of applying them all again. One-shot runs from cron
    /// append a few entries each and rarely reach `snapshot_every`: after
    /// 400 of them, each run took twice as long (17 ms more) to replay.
    async fn snapshot_before_stop(&self) {
        let since = self.applied_since_snapshot();
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
