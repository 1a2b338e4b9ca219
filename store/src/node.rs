//! One running member: the raft instance plus the logic shared by the etcd API, the
//! peer service and the handle: writes (forwarded to the leader when needed),
//! linearizable read barriers, membership changes and the lease-expiry timer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use mgmt_core::kv::{Applied, Command, Timed};
use openraft::ChangeMembers;
use openraft::error::{ChangeMembershipError, CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::error::StoreError;
use crate::membership::{MemberInfo, MemberSpec, MembershipChange, MembershipError, members_of};
use crate::net::Env;
use crate::network::{Channels, decode, encode, request};
use crate::pb::mgmtpeer::{Blob, peer_client::PeerClient};
use crate::state_machine::Shared;
use crate::types::{MemberNode, NodeId, Raft};

/// How long a client request may wait for a leader and its commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long each step of a leader transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most commands, and (roughly) bytes, in one batched raft entry.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 1 << 20;
/// A write waiting for [`batcher`] to propose it.
pub(crate) struct Proposal {
    command: Command,
    reply: tokio::sync::oneshot::Sender<Result<Option<Applied>, FwdError>>,
}

/// Proposes the writes that arrive together as one raft entry. openraft 0.9
/// makes each entry durable (its fsync) before it takes the next, so entries
/// of one write each would cost a sync apiece: batched, concurrent writes
/// share one, as etcd's do. One batch is in flight at a time; what arrives
/// meanwhile is the next batch. A lone write goes as it is, with no wait.
pub(crate) async fn batcher(
    raft: Raft,
    env: Env,
    mut proposals: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
) {
    while let Some(first) = proposals.recv().await {
        let mut bytes = approx_size(&first.command);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(p) = proposals.try_recv() else { break };
            bytes += approx_size(&p.command);
            batch.push(p);
        }
        let (mut commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let command = match commands.len() {
            1 => commands.pop().expect("one command"),
            _ => Command::Batch(commands),
        };
        let now_ms = env.now_ms();
        match propose(&raft, Timed { now_ms, command }).await {
            Ok(Some(Applied {
                result: Ok(mgmt_core::kv::Output::Batch(each)),
                ..
            })) => {
                for (reply, applied) in replies.into_iter().zip(each) {
                    let _ = reply.send(Ok(Some(applied)));
                }
            }
            result => {
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        }
    }
}

pub(crate) type ReadReply = tokio::sync::oneshot::Sender<Result<u64, FwdError>>;

/// Confirms leadership once for every linearizable read waiting when a round
/// starts (etcd's batched ReadIndex): a read that arrives during a round
/// waits for the next one, whose index covers every write acknowledged
/// before it arrived.
pub(crate) async fn read_indexer(
    raft: Raft,
    mut reads: tokio::sync::mpsc::UnboundedReceiver<ReadReply>,
) {
    while let Some(first) = reads.recv().await {
        let mut waiting = vec![first];
        while let Ok(r) = reads.try_recv() {
            waiting.push(r);
        }
        let index = match tokio::time::timeout(REQUEST_TIMEOUT, raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(FwdError::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(FwdError::Other(e.to_string())),
            Err(_) => Err(FwdError::Other("etcdserver: request timed out".into())),
        };
        for reply in waiting {
            let _ = reply.send(index.clone());
        }
    }
}

/// The batcher or read indexer is gone: the store is shutting down.
fn stopping() -> FwdError {
    FwdError::Other("the store is stopping".into())
}

fn approx_size(command: &Command) -> usize {
    match command {
        Command::Put(p) => p.key.len() + p.value.len(),
        _ => 64,
    }
}

async fn propose(raft: &Raft, timed: Timed) -> Result<Option<Applied>, FwdError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, raft.client_write(timed)).await {
        Ok(Ok(r)) => Ok(r.data),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(FwdError::NotLeader(f.leader_id))
        }
        Ok(Err(e)) => Err(FwdError::Other(e.to_string())),
        Err(_) => Err(FwdError::Other("etcdserver: request timed out".into())),
    }
}

/// A failed openraft membership change, as [`MembershipError`].
fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => MembershipError::InProgress,
        e => MembershipError::Other(e.to_string()),
    }
}

/// Why a member could not run a request itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FwdError {
    NotLeader(Option<NodeId>),
    /// Worth retrying shortly (e.g. another membership change is in flight).
    Busy,
    Other(String),
}

/// Membership change, run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    AddLearner {
        id: NodeId,
        node: MemberNode,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
    /// Sent by the leader to the member it hands leadership to: campaign now.
    Campaign,
    /// Would you vote for a candidate at this term whose last log entry is
    /// this? (raft's PreVote; see `elections`). Answered `Result<(bool, u64),
    /// FwdError>`: yes or no, and the voter's own term.
    PreVote {
        term: u64,
        last_log: Option<openraft::LogId<NodeId>>,
    },
}

/// Ends a leader transfer however its future ends (done, failed, or dropped
/// by a caller that stopped waiting, as an agent that begins to leave does):
/// heartbeats resume and proposals flow again. Without it a dropped transfer
/// left the leader silent and holding every write, for good.
struct Transfer<'a> {
    node: &'a Node,
    silenced: bool,
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if self.silenced {
            self.node.raft.runtime_config().heartbeat(true);
        }
        self.node.transferring.send_replace(false);
    }
}

/// Why [`Node::move_leader`] failed, with etcd's texts.
#[derive(Debug, thiserror::Error)]
pub enum MoveLeaderError {
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    Timeout,
    #[error("{0}")]
    Other(String),
}

pub struct Node {
    pub id: NodeId,
    /// This member's entry as it should read in the membership: its name and
    /// the URLs it is bound to.
    pub own: MemberNode,
    pub raft: Raft,
    pub sm: Arc<Shared>,
    pub channels: Channels,
    /// Network and clock.
    pub env: Env,
    pub limits: crate::config::Limits,
    /// True while this leader hands leadership over: new proposals wait.
    pub transferring: tokio::sync::watch::Sender<bool>,
    /// Writes for [`batcher`] to propose.
    pub(crate) proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    /// Linearizable reads for [`read_indexer`] to confirm.
    pub(crate) reads: tokio::sync::mpsc::UnboundedSender<ReadReply>,
    /// Put and Range requests answered (for metrics).
    pub(crate) puts: std::sync::atomic::AtomicU64,
    pub(crate) ranges: std::sync::atomic::AtomicU64,
    /// The raft log, to read its last entry's id (for PreVote).
    pub(crate) log: crate::log_store::LogStore,
    /// When a leader's AppendEntries was last accepted here.
    pub(crate) leader_contact: std::sync::Mutex<Option<Instant>>,
    /// True while this member has not heard a leader for an election
    /// timeout (see [`Node::leader`]).
    pub(crate) leaderless: tokio::sync::watch::Sender<bool>,
    /// The highest term a pre-vote answer named (see `elections::would_vote`).
    pub(crate) term_seen: std::sync::atomic::AtomicU64,
    /// Leaders this member has seen take over (etcd's
    /// `etcd_server_leader_changes_seen_total`).
    pub(crate) leader_changes: std::sync::atomic::AtomicU64,
}

/// How long to wait before asking the leader again after a retryable failure.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long to wait before trying again once a leader is known (it may be
/// this member, busy, or one not yet in this member's membership).
const LEADER_PAUSE: Duration = Duration::from_millis(20);

impl Node {
    /// The leader, if one is known: none while this member has not heard
    /// it for an election timeout and asks for pre-votes (as etcd's
    /// pre-candidate has none), though raft still names the last one.
    pub fn leader(&self) -> Option<NodeId> {
        if *self.leaderless.borrow() {
            return None;
        }
        self.raft.metrics().borrow().current_leader
    }

    /// A leader's AppendEntries was accepted here (or this member just
    /// stopped leading): a leader is heard, and the election timer starts over.
    pub(crate) fn heard_leader(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.leaderless
            .send_if_modified(|l| std::mem::replace(l, false));
    }

    /// Whether this member leads but has gone quiet: it has heard from no
    /// quorum for the lease (see `elections::lead`, etcd's CheckQuorum).
    pub(crate) fn quiet_leader(&self) -> bool {
        *self.leaderless.borrow()
            && self.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// When a leader's AppendEntries was last accepted here, if ever since
    /// this server started.
    pub(crate) fn last_leader_contact(&self) -> Option<Instant> {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn peer_url(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .and_then(|n| n.peer_urls.first().cloned())
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        members_of(&self.raft.metrics().borrow().membership_config)
    }

    /// Wait until some leader is known, at most `timeout`.
    pub async fn await_leader(&self, timeout: Duration) -> Result<NodeId, StoreError> {
        // As `leader` says: raft names one and this member is not between
        // leaders (a new leader's own `lead` loop clears that).
        let mut metrics = self.raft.metrics();
        let mut leaderless = self.leaderless.subscribe();
        let known = async {
            loop {
                if let Some(leader) = self.leader() {
                    return Some(leader);
                }
                let changed = tokio::select! {
                    r = metrics.changed() => r.is_ok(),
                    r = leaderless.changed() => r.is_ok(),
                };
                if !changed {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, known)
            .await
            .ok()
            .flatten()
            .ok_or(StoreError::NoLeader)
    }

    /// Run an operation on the leader until `deadline`: `local` here, and if this
    /// member is not the leader (or the leader is busy), `remote` on the leader's
    /// peer client with the time left, which answers `Result<T, FwdError>` as
    /// `local` does. `FwdError::Other` from either ends it with `other(reason)`;
    /// anything else (no leader yet, a leader that moved, an unreachable peer)
    /// is retried shortly, waiting for a leader when none is known.
    async fn forward_to_leader<T, L, R>(
        &self,
        deadline: Instant,
        other: fn(String) -> StoreError,
        local: impl Fn() -> L,
        remote: impl Fn(PeerClient<Channel>, Duration) -> R,
    ) -> Result<T, StoreError>
    where
        T: DeserializeOwned,
        L: Future<Output = Result<T, FwdError>>,
        R: Future<Output = Result<Response<Blob>, Status>>,
    {
        loop {
            let leader = match local().await {
                Ok(v) => return Ok(v),
                Err(FwdError::Other(e)) => return Err(other(e)),
                Err(FwdError::Busy) => None,
                Err(FwdError::NotLeader(l)) => l.or_else(|| self.leader()),
            };
            let pause = match leader
                .filter(|l| *l != self.id)
                .and_then(|l| self.peer_url(l))
            {
                Some(url) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let res = match self.channels.get(&url) {
                        Ok(c) => remote(c, left).await,
                        Err(e) => Err(Status::unavailable(e.to_string())),
                    };
                    // A reply that does not decode is no reason to retry.
                    let res = res.map(|r| {
                        decode::<Result<T, FwdError>>(r.get_ref())
                            .unwrap_or_else(|e| Err(FwdError::Other(e.message().to_string())))
                    });
                    match res {
                        Ok(Ok(v)) => return Ok(v),
                        Ok(Err(FwdError::Other(e))) => return Err(other(e)),
                        Ok(Err(FwdError::NotLeader(_) | FwdError::Busy)) | Err(_) => {}
                    }
                    RETRY_PAUSE
                }
                None => {
                    // A leader elected while this waited (often this member,
                    // restarting) is asked at once; one known all along but
                    // not taking the request yet, after a pause.
                    let known = self.leader().is_some();
                    let left = deadline.saturating_duration_since(Instant::now());
                    self.await_leader(left).await?;
                    if known { LEADER_PAUSE } else { Duration::ZERO }
                }
            };
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }

    pub(crate) async fn write_local(&self, command: Command) -> Result<Option<Applied>, FwdError> {
        // A leader without a quorum proposes nothing: its entries would renew
        // the lease of the voters it still reaches (see `elections::lead`).
        if self.quiet_leader() {
            return Err(FwdError::NotLeader(None));
        }
        // A leader handing over proposes nothing: a write would reach the
        // voters and renew the lease that keeps them from electing the new one.
        let mut transferring = self.transferring.subscribe();
        let _ = tokio::time::timeout(TRANSFER_TIMEOUT, transferring.wait_for(|t| !t)).await;
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.proposals.send(Proposal { command, reply }).is_err() {
            return Err(stopping());
        }
        answer.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Replicate a command and return its result (run on the leader, forwarded there
    /// from a follower).
    pub async fn write(&self, command: Command) -> Result<Applied, StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let applied = self
            .forward_to_leader(
                deadline,
                StoreError::Raft,
                || self.write_local(command.clone()),
                |mut c, left| {
                    let req = request(encode(&command), left);
                    async move { c.forward(req).await }
                },
            )
            .await?;
        applied.ok_or_else(|| StoreError::Raft("no result for a normal entry".into()))
    }

    pub(crate) async fn read_index_local(&self) -> Result<u64, FwdError> {
        // Confirming leadership sends heartbeats, which renew the voters'
        // leases: not from a leader without a quorum (see `elections::lead`),
        // nor from one handing over (its target's votes wait for them to run
        // out). The read waits for the next leader, as etcd's do.
        if self.quiet_leader() || *self.transferring.borrow() {
            return Err(FwdError::NotLeader(None));
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.reads.send(reply).is_err() {
            return Err(stopping());
        }
        answer.await.unwrap_or_else(|_| Err(stopping()))
    }

    /// Make the local state machine current enough for a linearizable read: the leader
    /// confirms its leadership and names the index to wait for.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let index = self
            .forward_to_leader(
                deadline,
                StoreError::Raft,
                || self.read_index_local(),
                |mut c, left| async move { c.read_index(request(encode(&()), left)).await },
            )
            .await?;
        // At once on the leader: ensure_linearizable waited for it to apply.
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout)
    }

    /// Change the membership on this member, never forwarded. With
    /// `wait_for_learner`, an added learner must also catch up with the log
    /// before this returns.
    pub(crate) async fn change_membership_here(
        &self,
        change: &MembershipChange,
        wait_for_learner: bool,
    ) -> Result<(), MembershipError> {
        // openraft checks a change against the membership before it checks
        // leadership: a follower would answer InProgress or LearnerNotFound.
        if self.leader() != Some(self.id) {
            return Err(MembershipError::NotLeader);
        }
        let res = match change.clone() {
            MembershipChange::AddLearner(spec) => {
                self.raft
                    .add_learner(spec.id, spec.node, wait_for_learner)
                    .await
            }
            MembershipChange::Promote(id) => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
            }
            MembershipChange::Remove(id) => {
                let is_voter = self.members().iter().any(|m| m.id == id && !m.is_learner);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await
            }
        };
        res.map(|_| ()).map_err(membership_error)
    }

    /// Take a snapshot of everything applied now; wait until it is on disk.
    pub async fn snapshot_now(&self) -> Result<(), StoreError> {
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        (self.raft.trigger().snapshot().await).map_err(|e| StoreError::Raft(e.to_string()))?;
        self.raft
            .wait(Some(REQUEST_TIMEOUT * 6))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot taken",
            )
            .await
            .map(|_| ())
            .map_err(|_| StoreError::Timeout)
    }

    /// etcd's MoveLeader, run on the leader. openraft 0.9 has no leadership
    /// transfer (etcd's `TimeoutNow`), and a voter that heard from its leader
    /// within the leader lease (`election_timeout_max`) refuses to vote. So
    /// this leader holds new proposals and stops its heartbeats, waits until
    /// the target has its whole log, lets the lease run out, and asks the
    /// target to campaign: writes pause for about one election timeout.
    pub async fn move_leader(&self, target: NodeId) -> Result<(), MoveLeaderError> {
        if self.leader() != Some(self.id) {
            return Err(MoveLeaderError::NotLeader);
        }
        if target == self.id {
            return Ok(());
        }
        let voter = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == target)
        };
        let url = self.peer_url(target).filter(|_| voter);
        let Some(url) = url else {
            return Err(MoveLeaderError::BadTransferee);
        };
        if self.transferring.send_replace(true) {
            return Err(MoveLeaderError::Other(
                "etcdserver: leader transfer in progress".into(),
            ));
        }
        let mut transfer = Transfer {
            node: self,
            silenced: false,
        };
        // Writes pause from here on: a transferee that is gone (crashed, cut
        // off) would hold them up for nothing, so it must answer first.
        self.ping(&url).await?;
        self.raft.runtime_config().heartbeat(false);
        transfer.silenced = true;
        self.hand_over(target, &url).await
    }

    /// Asks the member at `url` a question with no side effects (a PreVote at
    /// this leader's own term, which it refuses): any answer within an
    /// election timeout proves it is there.
    async fn ping(&self, url: &str) -> Result<(), MoveLeaderError> {
        let (term, last_log) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.current_term, m.last_applied)
        };
        let timeout = Duration::from_millis(self.raft.config().election_timeout_max);
        let mut peer = self
            .channels
            .get(url)
            .map_err(|e| MoveLeaderError::Other(e.to_string()))?;
        let op = AdminOp::PreVote { term, last_log };
        match tokio::time::timeout(timeout, peer.admin(request(encode(&op), timeout))).await {
            // A member of an older version does not know the question, but
            // answers it.
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => Ok(()),
            Ok(Err(e)) => Err(MoveLeaderError::Other(e.message().to_string())),
            Err(_) => Err(MoveLeaderError::Timeout),
        }
    }

    async fn hand_over(&self, target: NodeId, url: &str) -> Result<(), MoveLeaderError> {
        let caught_up = self
            .raft
            .wait(Some(TRANSFER_TIMEOUT))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied());
                    matched.flatten().map(|l| l.index) == last
                },
                "transferee caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(MoveLeaderError::Timeout);
        }
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        tokio::time::sleep(lease + LEADER_PAUSE).await;
        let mut peer = self
            .channels
            .get(url)
            .map_err(|e| MoveLeaderError::Other(e.to_string()))?;
        let asked = peer
            .admin(request(encode(&AdminOp::Campaign), TRANSFER_TIMEOUT))
            .await
            .map_err(|e| MoveLeaderError::Other(e.message().to_string()))?;
        if let Ok(Err(FwdError::Other(e))) = decode::<Result<(), FwdError>>(asked.get_ref()) {
            return Err(MoveLeaderError::Other(e));
        }
        self.raft
            .wait(Some(TRANSFER_TIMEOUT))
            .metrics(|m| m.current_leader == Some(target), "new leader")
            .await
            .map(|_| ())
            .map_err(|_| MoveLeaderError::Timeout)
    }

    pub(crate) async fn admin_local(&self, op: &AdminOp) -> Result<(), FwdError> {
        let change = match op.clone() {
            AdminOp::Campaign => {
                return (self.raft.trigger().elect().await)
                    .map_err(|e| FwdError::Other(e.to_string()));
            }
            AdminOp::PreVote { .. } => {
                return Err(FwdError::Other(
                    "a pre-vote is answered by the peer service".into(),
                ));
            }
            AdminOp::AddLearner { id, node } => {
                MembershipChange::AddLearner(MemberSpec { id, node })
            }
            AdminOp::Promote { id } => MembershipChange::Promote(id),
            AdminOp::Remove { id } => MembershipChange::Remove(id),
        };
        match self.change_membership_here(&change, true).await {
            Ok(()) => Ok(()),
            Err(MembershipError::NotLeader) => Err(FwdError::NotLeader(self.leader())),
            Err(MembershipError::InProgress) => Err(FwdError::Busy),
            Err(MembershipError::Other(e)) => Err(FwdError::Other(e)),
        }
    }

    /// Run a membership change on the leader (forwarding it if this member is not).
    pub async fn admin(&self, op: AdminOp) -> Result<(), StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT * 6;
        self.forward_to_leader(
            deadline,
            StoreError::Membership,
            || self.admin_local(&op),
            |mut c, left| {
                let req = request(encode(&op), left);
                async move { c.admin(req).await }
            },
        )
        .await
    }

    /// Whether this member leads and its own entry in the membership differs
    /// from [`Node::own`] (a restart on other ports). A member not in the
    /// membership has no entry to refresh: a leader that just removed itself
    /// must not add itself back.
    fn own_entry_stale(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id)
            && m.membership_config
                .membership()
                .get_node(&self.id)
                .is_some_and(|n| *n != self.own)
    }

    /// On the leader, bring this member's own entry in the membership up to
    /// date ([`Node::own_entry_stale`]); true if it changed it.
    pub async fn update_own_entry(&self) -> Result<bool, MembershipError> {
        if !self.own_entry_stale() {
            return Ok(false);
        }
        let change = ChangeMembers::SetNodes(BTreeMap::from([(self.id, self.own.clone())]));
        self.raft
            .change_membership(change, true)
            .await
            .map(|_| true)
            .map_err(membership_error)
    }

    /// Leader-only: propose lease expiry once the earliest deadline has passed.
    pub async fn expire_leases_if_due(&self) {
        if self.leader() != Some(self.id) {
            return;
        }
        let due = self.sm.lock().data.kv.next_lease_deadline_ms();
        if due.is_some_and(|d| d <= self.env.now_ms())
            && let Err(e) = self.write(Command::ExpireLeases).await
        {
            tracing::debug!(error = %e, "lease expiry not committed yet");
        }
    }
}
