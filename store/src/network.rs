//! Raft RPCs to peers over HTTP/2 (tonic) on their peer URLs. Every call has a
//! deadline; payloads are JSON (`mgmtpeer.Blob`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::Channel;

use crate::net::Env;

use crate::pb::mgmtpeer::{Blob, peer_client::PeerClient};
use crate::types::{MemberNode, NodeId, TypeConfig};

/// A cache of HTTP/2 channels to peer URLs, shared by raft and request forwarding.
#[derive(Clone)]
pub struct Channels {
    env: Env,
    map: Arc<Mutex<BTreeMap<String, Channel>>>,
}

impl Channels {
    pub fn new(env: Env) -> Self {
        Channels {
            env,
            map: Arc::default(),
        }
    }

    pub fn get(&self, url: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(url) {
            return Ok(PeerClient::new(ch.clone()));
        }
        let ch = self.env.peer_channel(url)?;
        map.insert(url.to_string(), ch.clone());
        Ok(PeerClient::new(ch)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20))
    }
}

pub fn encode<T: Serialize>(v: &T) -> Blob {
    Blob {
        data: crate::codec::encode(v).expect("peer message serializes"),
    }
}

pub fn decode<T: DeserializeOwned>(b: &Blob) -> Result<T, tonic::Status> {
    crate::codec::decode(&b.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("bad peer message: {e}")))
}

/// gRPC metadata naming the member ID a raft message is addressed to (etcd's
/// `X-Raft-To`).
pub const RAFT_TO: &str = "x-raft-to";

pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

pub struct Network {
    pub channels: Channels,
}

pub struct PeerConn {
    target: NodeId,
    url: String,
    channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &MemberNode) -> PeerConn {
        PeerConn {
            target,
            url: node.peer_urls.first().cloned().unwrap_or_default(),
            channels: self.channels.clone(),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, MemberNode, RaftError<NodeId, E>>;

impl PeerConn {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .channels
            .get(&self.url)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut blob = request(encode(req), timeout);
        // Raft messages are routed by URL; the receiver checks they are meant
        // for its member ID (see `node::check_addressee`).
        if let Ok(v) = self.target.to_string().parse() {
            blob.metadata_mut().insert(RAFT_TO, v);
        }
        let res = match method {
            "append" => client.append_entries(blob).await,
            "vote" => client.vote(blob).await,
            _ => client.install_snapshot(blob).await,
        };
        let blob = match res {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&status)),
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
        };
        let res: Result<Resp, RaftError<NodeId, E>> = crate::codec::decode(&blob.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(
            "snapshot",
            &rpc,
            option.hard_ttl().max(Duration::from_secs(10)),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call("vote", &rpc, option.hard_ttl()).await
    }
}
