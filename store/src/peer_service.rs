//! The peer gRPC service a member serves on its peer URLs: raft's RPCs, and
//! what other members hand it (forwarded writes and reads, admin requests,
//! PreVote questions).

use std::sync::Arc;

use mgmt_core::kv::Command;
use tonic::{Request, Response, Status};

use crate::network::{decode, encode};
use crate::node::{AdminOp, FwdError, Node};
use crate::pb::mgmtpeer::{Blob, peer_server::Peer};
use crate::types::{NodeId, TypeConfig};

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
        let res = self.node.raft.append_entries(rpc).await;
        if matches!(&res, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)))
        {
            self.node.heard_leader();
        }
        Ok(Response::new(encode(&res)))
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
        if let AdminOp::PreVote { term, last_log } = op {
            let answer = crate::elections::would_vote(&self.node, term, last_log);
            return Ok(Response::new(encode(&Ok::<(bool, u64), FwdError>(answer))));
        }
        Ok(Response::new(encode(&self.node.admin_local(&op).await)))
    }
}
