//! One running member: the raft instance plus the logic shared by the etcd API, the
//! peer service and the handle: writes (forwarded to the leader when needed),
//! linearizable read barriers, membership changes and the lease-expiry timer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use mgmt_core::kv::{Applied, Command, Timed};
use openraft::ChangeMembers;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::StoreError;
use crate::net::Env;
use crate::network::{Channels, decode, encode, request};
use crate::pb::mgmtpeer::{Blob, peer_server::Peer};
use crate::state_machine::Shared;
use crate::types::{MemberNode, NodeId, Raft, TypeConfig};

/// How long a client request may wait for a leader and its commit.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A member as listed by MemberList.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// The member's hostname.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
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
    AddLearner { id: NodeId, node: MemberNode },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    pub sm: Arc<Shared>,
    pub channels: Channels,
    /// Network and clock.
    pub env: Env,
}

impl Node {
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    fn peer_url(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .and_then(|n| n.peer_urls.first().cloned())
    }

    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                name: n.name.clone(),
                peer_urls: n.peer_urls.clone(),
                client_urls: n.client_urls.clone(),
                is_learner: !voters.contains(id),
            })
            .collect()
    }

    async fn write_local(&self, command: Command) -> Result<Option<Applied>, FwdError> {
        let timed = Timed {
            now_ms: self.env.now_ms(),
            command,
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, self.raft.client_write(timed)).await {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(FwdError::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(FwdError::Other(e.to_string())),
            Err(_) => Err(FwdError::Other("etcdserver: request timed out".into())),
        }
    }

    /// Wait until some leader is known, or the deadline passes.
    async fn await_leader(&self, deadline: Instant) -> Result<NodeId, StoreError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .metrics(|m| m.current_leader.is_some(), "leader")
            .await
            .ok()
            .and_then(|m| m.current_leader)
            .ok_or(StoreError::NoLeader)
    }

    /// Replicate a command and return its result (run on the leader, forwarded there
    /// from a follower).
    pub async fn write(&self, command: Command) -> Result<Applied, StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let leader = match self.write_local(command.clone()).await {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => return Err(StoreError::Raft("no result for a normal entry".into())),
                Err(FwdError::Other(e)) => return Err(StoreError::Raft(e)),
                Err(FwdError::Busy) => Some(self.id),
                Err(FwdError::NotLeader(l)) => l,
            };
            let leader = match leader {
                Some(l) if l != self.id => l,
                _ => {
                    if Instant::now() >= deadline {
                        return Err(StoreError::NoLeader);
                    }
                    self.await_leader(deadline).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if let Some(url) = self.peer_url(leader) {
                let left = deadline.saturating_duration_since(Instant::now());
                let res = match self.channels.get(&url) {
                    Ok(mut c) => c.forward(request(encode(&command), left)).await,
                    Err(e) => Err(Status::unavailable(e.to_string())),
                };
                match res.map(|r| decode::<Result<Option<Applied>, FwdError>>(r.get_ref())) {
                    Ok(Ok(Ok(Some(a)))) => return Ok(a),
                    Ok(Ok(Err(FwdError::Other(e)))) => return Err(StoreError::Raft(e)),
                    Ok(Err(e)) => return Err(StoreError::Raft(e.to_string())),
                    Ok(Ok(Ok(None))) => {
                        return Err(StoreError::Raft("no result for a normal entry".into()));
                    }
                    Ok(Ok(Err(FwdError::NotLeader(_) | FwdError::Busy))) | Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn read_index_local(&self) -> Result<u64, FwdError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(FwdError::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(FwdError::Other(e.to_string())),
            Err(_) => Err(FwdError::Other("etcdserver: request timed out".into())),
        }
    }

    /// Make the local state machine current enough for a linearizable read: the leader
    /// confirms its leadership and names the index to wait for.
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let leader = match self.read_index_local().await {
                Ok(_) => return Ok(()),
                Err(FwdError::Other(e)) => return Err(StoreError::Raft(e)),
                Err(FwdError::Busy) => Some(self.id),
                Err(FwdError::NotLeader(l)) => l,
            };
            if let Some(leader) = leader.filter(|l| *l != self.id)
                && let Some(url) = self.peer_url(leader)
            {
                let left = deadline.saturating_duration_since(Instant::now());
                let res = match self.channels.get(&url) {
                    Ok(mut c) => c.read_index(request(encode(&()), left)).await,
                    Err(e) => Err(Status::unavailable(e.to_string())),
                };
                if let Ok(Ok(Ok(index))) = res.map(|r| decode::<Result<u64, FwdError>>(r.get_ref()))
                {
                    let left = deadline.saturating_duration_since(Instant::now());
                    return self
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "read index")
                        .await
                        .map(|_| ())
                        .map_err(|_| StoreError::Timeout);
                }
            } else if Instant::now() < deadline {
                self.await_leader(deadline).await?;
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn admin_local(&self, op: &AdminOp) -> Result<(), FwdError> {
        let res = match op.clone() {
            AdminOp::AddLearner { id, node } => self.raft.add_learner(id, node, true).await,
            AdminOp::Promote { id } => {
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
            }
            AdminOp::Remove { id } => {
                let is_voter = self.members().iter().any(|m| m.id == id && !m.is_learner);
                let change = if is_voter {
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                self.raft.change_membership(change, false).await
            }
        };
        match res {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(FwdError::NotLeader(f.leader_id))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) => Err(FwdError::Busy),
            Err(e) => Err(FwdError::Other(e.to_string())),
        }
    }

    /// Run a membership change on the leader (forwarding it if this member is not).
    pub async fn admin(&self, op: AdminOp) -> Result<(), StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT * 6;
        loop {
            let leader = match self.admin_local(&op).await {
                Ok(()) => return Ok(()),
                Err(FwdError::Other(e)) => return Err(StoreError::Membership(e)),
                Err(FwdError::Busy) => Some(self.id),
                Err(FwdError::NotLeader(l)) => l,
            };
            if let Some(leader) = leader.filter(|l| *l != self.id)
                && let Some(url) = self.peer_url(leader)
            {
                let left = deadline.saturating_duration_since(Instant::now());
                let res = match self.channels.get(&url) {
                    Ok(mut c) => c.admin(request(encode(&op), left)).await,
                    Err(e) => Err(Status::unavailable(e.to_string())),
                };
                match res.map(|r| decode::<Result<(), FwdError>>(r.get_ref())) {
                    Ok(Ok(Ok(()))) => return Ok(()),
                    Ok(Ok(Err(FwdError::Other(e)))) => return Err(StoreError::Membership(e)),
                    _ => {}
                }
            } else if Instant::now() < deadline {
                self.await_leader(deadline).await?;
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// The peer gRPC service: raft RPCs and requests forwarded by other members.
pub struct PeerService {
    pub node: Arc<Node>,
}

impl PeerService {
    /// Refuse a raft message meant for another member ID. Messages are routed
    /// by URL, and a host that rejoined under a new ID serves on the URL of
    /// its old one: answering for the old ID (an empty log granting a vote,
    /// or acknowledging entries it never had) would break raft's quorum
    /// guarantees. etcd refuses such messages the same way (`X-Raft-To`).
    fn check_addressee(&self, req: &Request<Blob>) -> Result<(), Status> {
        let to = req
            .metadata()
            .get(crate::network::RAFT_TO)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<NodeId>().ok());
        match to {
            Some(to) if to != self.node.id => Err(Status::failed_precondition(format!(
                "raft message for member {to:x}; this is member {:x}",
                self.node.id
            ))),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check_addressee(&req)?;
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(req.get_ref())?;
        Ok(Response::new(encode(
            &self.node.raft.append_entries(rpc).await,
        )))
    }

    async fn vote(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check_addressee(&req)?;
        let rpc: openraft::raft::VoteRequest<NodeId> = decode(req.get_ref())?;
        Ok(Response::new(encode(&self.node.raft.vote(rpc).await)))
    }

    async fn install_snapshot(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        self.check_addressee(&req)?;
        let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(req.get_ref())?;
        Ok(Response::new(encode(
            &self.node.raft.install_snapshot(rpc).await,
        )))
    }

    async fn forward(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let cmd: Command = decode(req.get_ref())?;
        Ok(Response::new(encode(&self.node.write_local(cmd).await)))
    }

    async fn read_index(&self, _req: Request<Blob>) -> Result<Response<Blob>, Status> {
        Ok(Response::new(encode(&self.node.read_index_local().await)))
    }

    async fn admin(&self, req: Request<Blob>) -> Result<Response<Blob>, Status> {
        let op: AdminOp = decode(req.get_ref())?;
        Ok(Response::new(encode(&self.node.admin_local(&op).await)))
    }
}
