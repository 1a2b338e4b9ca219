//! Raft RPCs to peers over HTTP/2 (tonic) on their peer URLs. Every call has a
//! deadline; payloads are postcard-encoded in a `mgmtpeer.Blob` (see `codec`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::net::Env;

use crate::pb::mgmtpeer::{Blob, peer_client::PeerClient};
use crate::types::{MemberNode, NodeId, TypeConfig};

/// A cache of HTTP/2 channels to peer URLs, shared by raft and request forwarding.
///
/// A connection can die without closing (a peer frozen or cut off while
/// frames were in flight): every call on it then times out until HTTP/2's
/// keepalive gives up, seconds later, which is longer than an election. So a
/// channel whose peer has answered nothing for [`REDIAL_AFTER`] while calls
/// fail is dropped, and the next call dials afresh (etcd's rafthttp likewise
/// closes a stream on error and dials again).
#[derive(Clone)]
pub struct Channels {
    env: Env,
    map: Arc<Mutex<BTreeMap<String, Cached>>>,
    /// Round trips of raft calls that were answered (`/metrics`).
    round_trips: Arc<crate::histogram::Histogram>,
}

struct Cached {
    channel: Channel,
    /// Tells this channel from a later one to the same URL.
    dialed: u64,
    last_answer: Instant,
}

/// How long a peer may answer nothing while calls to it fail before its
/// connection is dialed again: the shortest election timeout, so a healed
/// link is back before the followers give up on their leader.
const REDIAL_AFTER: Duration = Duration::from_millis(500);

/// Which channel a call used, to report how it went.
#[derive(Clone, Copy)]
pub struct Dialed(u64);

impl Channels {
    /// How long answered raft calls took.
    pub(crate) fn round_trips(&self) -> &crate::histogram::Histogram {
        &self.round_trips
    }

    pub fn new(env: Env) -> Self {
        Channels {
            env,
            map: Arc::default(),
            round_trips: Arc::new(crate::histogram::Histogram::peer_round_trip()),
        }
    }

    pub fn get(&self, url: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        self.get_tracked(url).map(|(client, _)| client)
    }

    /// The client for `url`, and which channel it uses, for [`Self::answered`]
    /// and [`Self::unanswered`].
    pub fn get_tracked(
        &self,
        url: &str,
    ) -> Result<(PeerClient<Channel>, Dialed), tonic::transport::Error> {
        static DIALS: AtomicU64 = AtomicU64::new(0);
        let mut map = self.lock();
        let cached = match map.get(url) {
            Some(c) => c,
            None => {
                let channel = self.env.peer_channel(url)?;
                let cached = Cached {
                    channel,
                    dialed: DIALS.fetch_add(1, Ordering::Relaxed),
                    last_answer: Instant::now(),
                };
                map.entry(url.to_string()).or_insert(cached)
            }
        };
        let client = PeerClient::new(cached.channel.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok((client, Dialed(cached.dialed)))
    }

    /// The peer answered a call on this channel (with a result or an error of
    /// its own): the connection works.
    pub fn answered(&self, url: &str, dialed: Dialed) {
        if let Some(c) = self.lock().get_mut(url).filter(|c| c.dialed == dialed.0) {
            c.last_answer = Instant::now();
        }
    }

    /// A call on this channel got no answer (unreachable, timed out): drop
    /// the channel if the peer has been silent for [`REDIAL_AFTER`].
    pub fn unanswered(&self, url: &str, dialed: Dialed) {
        let mut map = self.lock();
        if map
            .get(url)
            .is_some_and(|c| c.dialed == dialed.0 && c.last_answer.elapsed() >= REDIAL_AFTER)
        {
            tracing::debug!(url, "peer silent: dialing its connection again");
            map.remove(url);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Cached>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
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
        let (mut client, dialed) = self
            .channels
            .get_tracked(&self.url)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut blob = request(encode(req), timeout);
        // Raft messages are routed by URL; the receiver checks they are meant
        // for its member ID (see `node::check_addressee`).
        if let Ok(v) = self.target.to_string().parse() {
            blob.metadata_mut().insert(RAFT_TO, v);
        }
        let started = std::time::Instant::now();
        let res = match method {
            "append" => client.append_entries(blob).await,
            "vote" => client.vote(blob).await,
            _ => client.install_snapshot(blob).await,
        };
        let blob = match res {
            Ok(r) => r.into_inner(),
            Err(status) => {
                return Err(match status.code() {
                    // No connection: openraft backs off before trying again.
                    tonic::Code::Unavailable => {
                        self.channels.unanswered(&self.url, dialed);
                        RPCError::Unreachable(Unreachable::new(&status))
                    }
                    // Slow, not gone: the next heartbeat goes out on time
                    // (a backoff here left a new leader unable to commit
                    // for seconds on a slow link).
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                        self.channels.unanswered(&self.url, dialed);
                        RPCError::Network(NetworkError::new(&status))
                    }
                    _ => RPCError::Network(NetworkError::new(&status)),
                });
            }
        };
        self.channels.answered(&self.url, dialed);
        self.channels.round_trips.observe(started.elapsed());
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
