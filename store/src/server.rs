//! The etcd v3 gRPC API (KV, Watch, Lease, Cluster, Maintenance) on top of [`Node`].

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use mgmt_core::kv::{self as kv, Applied, Command, KvError, Output};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::StoreError;
use crate::membership::MemberInfo;
use crate::node::Node;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::state_machine::{WatchMsg, Watcher};

/// Version reported by Maintenance.Status: the etcd API level we speak.
pub const API_VERSION: &str = "3.4.0";

#[derive(Clone)]
pub struct Etcd {
    pub node: Arc<Node>,
}

/// gRPC status for a store error, with etcd's codes and texts.
pub fn status(e: StoreError) -> Status {
    match e {
        StoreError::Kv(k) => kv_status(k),
        StoreError::NoLeader => Status::unavailable("etcdserver: no leader"),
        StoreError::Timeout => Status::unavailable("etcdserver: request timed out"),
        other => Status::unavailable(other.to_string()),
    }
}

fn kv_status(e: KvError) -> Status {
    let msg = match &e {
        KvError::Compacted { .. } | KvError::FutureRevision => format!("etcdserver: {e}"),
        _ => e.to_string(),
    };
    match e {
        KvError::Compacted { .. } | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
            Status::out_of_range(msg)
        }
        KvError::LeaseNotFound => Status::not_found(msg),
        KvError::LeaseExists => Status::failed_precondition(msg),
        KvError::KeyNotFound | KvError::EmptyKey | KvError::DuplicateKey => {
            Status::invalid_argument(msg)
        }
        KvError::NoSpace => Status::resource_exhausted(msg),
        KvError::Auth(a) => auth_status(a),
    }
}

/// gRPC status for an auth error, with etcd's codes.
pub(crate) fn auth_status(e: kv::auth::AuthError) -> Status {
    use kv::auth::AuthError as A;
    let msg = e.to_string();
    match e {
        A::UserEmpty | A::RoleEmpty | A::AuthFailed | A::InvalidAuthMgmt => {
            Status::invalid_argument(msg)
        }
        A::PermissionDenied => Status::permission_denied(msg),
        A::InvalidAuthToken => Status::unauthenticated(msg),
        A::RootUserNotExist
        | A::RootRoleNotExist
        | A::UserAlreadyExist
        | A::UserNotFound
        | A::RoleAlreadyExist
        | A::RoleNotFound
        | A::RoleNotGranted
        | A::PermissionNotGranted
        | A::AuthNotEnabled => Status::failed_precondition(msg),
    }
}

/// etcd's answer to a request over `--max-request-bytes`.
fn check_size(req: &impl prost::Message, limits: &crate::config::Limits) -> Result<(), Status> {
    match req.encoded_len() > limits.max_request_bytes {
        true => Err(Status::invalid_argument("etcdserver: request is too large")),
        false => Ok(()),
    }
}

/// The bytes a write adds to the store, as the quota counts them.
fn growth(cmd: &Command) -> u64 {
    fn put_cost(p: &kv::PutRequest) -> u64 {
        (p.key.len() + p.value.len()) as u64 + kv::RECORD_OVERHEAD
    }
    fn txn_cost(t: &kv::TxnRequest) -> u64 {
        // Only one branch runs: the costlier one is what it may add.
        let branch = |ops: &[kv::RequestOp]| -> u64 {
            ops.iter()
                .map(|op| match op {
                    kv::RequestOp::Put(p) => put_cost(p),
                    kv::RequestOp::Txn(t) => txn_cost(t),
                    kv::RequestOp::Range(_) | kv::RequestOp::DeleteRange(_) => 0,
                })
                .sum()
        };
        branch(&t.success).max(branch(&t.failure))
    }
    match cmd {
        Command::Put(p) => put_cost(p),
        Command::Txn(t) => txn_cost(t),
        Command::LeaseGrant { .. } => kv::RECORD_OVERHEAD,
        Command::As { command, .. } => growth(command),
        _ => 0,
    }
}

fn alarm_of(a: kv::Alarm) -> pb::AlarmType {
    match a {
        kv::Alarm::NoSpace => pb::AlarmType::Nospace,
        kv::Alarm::Corrupt => pb::AlarmType::Corrupt,
    }
}

fn to_kv(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn to_event(e: kv::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.kind {
            kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
            kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(to_kv(e.kv)),
        prev_kv: e.prev_kv.map(to_kv),
    }
}

fn from_range(r: pb::RangeRequest) -> kv::RangeRequest {
    use pb::range_request::{SortOrder as O, SortTarget as T};
    kv::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match O::try_from(r.sort_order).unwrap_or(O::None) {
            O::None => kv::SortOrder::None,
            O::Ascend => kv::SortOrder::Ascend,
            O::Descend => kv::SortOrder::Descend,
        },
        sort_target: match T::try_from(r.sort_target).unwrap_or(T::Key) {
            T::Key => kv::SortTarget::Key,
            T::Version => kv::SortTarget::Version,
            T::Create => kv::SortTarget::Create,
            T::Mod => kv::SortTarget::Mod,
            T::Value => kv::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn from_put(p: pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn from_delete(d: pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

pub(crate) fn txn_from_pb(t: pb::TxnRequest) -> Result<kv::TxnRequest, Status> {
    use pb::compare::{CompareResult as R, TargetUnion as U};
    let mut compare = Vec::new();
    for c in t.compare {
        let result = match R::try_from(c.result) {
            Ok(R::Equal) => kv::CompareResult::Equal,
            Ok(R::Greater) => kv::CompareResult::Greater,
            Ok(R::Less) => kv::CompareResult::Less,
            Ok(R::NotEqual) => kv::CompareResult::NotEqual,
            Err(_) => return Err(Status::invalid_argument("etcdserver: bad compare result")),
        };
        use pb::compare::CompareTarget as Tg;
        let target = match (Tg::try_from(c.target), c.target_union) {
            (Ok(Tg::Version), u) => kv::CompareTarget::Version(match u {
                Some(U::Version(v)) => v,
                _ => 0,
            }),
            (Ok(Tg::Create), u) => kv::CompareTarget::CreateRevision(match u {
                Some(U::CreateRevision(v)) => v,
                _ => 0,
            }),
            (Ok(Tg::Mod), u) => kv::CompareTarget::ModRevision(match u {
                Some(U::ModRevision(v)) => v,
                _ => 0,
            }),
            (Ok(Tg::Value), u) => kv::CompareTarget::Value(match u {
                Some(U::Value(v)) => v,
                _ => Vec::new(),
            }),
            (Ok(Tg::Lease), u) => kv::CompareTarget::Lease(match u {
                Some(U::Lease(v)) => v,
                _ => 0,
            }),
            (Err(_), _) => return Err(Status::invalid_argument("etcdserver: bad compare target")),
        };
        compare.push(kv::Compare {
            result,
            target,
            key: c.key,
            range_end: c.range_end,
        });
    }
    let ops = |ops: Vec<pb::RequestOp>| -> Result<Vec<kv::RequestOp>, Status> {
        use pb::request_op::Request as Q;
        ops.into_iter()
            .map(|op| match op.request {
                Some(Q::RequestRange(r)) => Ok(kv::RequestOp::Range(from_range(r))),
                Some(Q::RequestPut(p)) => Ok(kv::RequestOp::Put(from_put(p))),
                Some(Q::RequestDeleteRange(d)) => Ok(kv::RequestOp::DeleteRange(from_delete(d))),
                Some(Q::RequestTxn(t)) => Ok(kv::RequestOp::Txn(txn_from_pb(t)?)),
                None => Err(Status::invalid_argument("etcdserver: empty request op")),
            })
            .collect()
    };
    Ok(kv::TxnRequest {
        compare,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

fn to_range(r: kv::RangeResponse, header: &pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(*header),
        kvs: r.kvs.into_iter().map(to_kv).collect(),
        more: r.more,
        count: r.count,
    }
}

fn to_txn(t: kv::TxnResponse, header: &pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as A;
    // The responses inside a txn carry only the revision, as etcd's do.
    let inner = &pb::ResponseHeader {
        revision: header.revision,
        ..Default::default()
    };
    pb::TxnResponse {
        header: Some(*header),
        succeeded: t.succeeded,
        responses: t
            .responses
            .into_iter()
            .map(|r| pb::ResponseOp {
                response: Some(match r {
                    kv::ResponseOp::Range(r) => A::ResponseRange(to_range(r, inner)),
                    kv::ResponseOp::Put(p) => A::ResponsePut(pb::PutResponse {
                        header: Some(*inner),
                        prev_kv: p.prev_kv.map(to_kv),
                    }),
                    kv::ResponseOp::DeleteRange(d) => {
                        A::ResponseDeleteRange(pb::DeleteRangeResponse {
                            header: Some(*inner),
                            deleted: d.deleted,
                            prev_kvs: d.prev_kvs.into_iter().map(to_kv).collect(),
                        })
                    }
                    kv::ResponseOp::Txn(t) => A::ResponseTxn(to_txn(t, inner)),
                }),
            })
            .collect(),
    }
}

pub fn to_member(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

impl Etcd {
    pub(crate) fn header(&self, revision: i64) -> pb::ResponseHeader {
        let term = self.node.raft.metrics().borrow().current_term;
        pb::ResponseHeader {
            cluster_id: self.node.sm.lock().data.kv.cluster_id(),
            member_id: self.node.id,
            revision,
            raft_term: term,
        }
    }

    /// One keepalive of lease `id` (a message of the LeaseKeepAlive
    /// stream, or one call of the JSON gateway's).
    pub(crate) async fn keep_alive_once(
        &self,
        who: kv::auth::Identity,
        id: i64,
    ) -> pb::LeaseKeepAliveResponse {
        match self.write_as(who, Command::LeaseKeepAlive { id }).await {
            Ok((Output::LeaseKeepAlive { id, ttl }, header)) => pb::LeaseKeepAliveResponse {
                header: Some(header),
                id,
                ttl,
            },
            // etcd answers TTL 0 for a lease that is gone.
            _ => pb::LeaseKeepAliveResponse {
                header: Some(self.current_header()),
                id,
                ttl: 0,
            },
        }
    }

    pub(crate) fn current_header(&self) -> pb::ResponseHeader {
        let rev = self.node.sm.lock().data.kv.revision();
        self.header(rev)
    }

    /// A client's write, with who sent it: the apply checks its rights.
    pub(crate) async fn write_as(
        &self,
        who: kv::auth::Identity,
        cmd: Command,
    ) -> Result<(Output, pb::ResponseHeader), Status> {
        let cmd = Command::As {
            who,
            command: Box::new(cmd),
        };
        self.check_quota(&cmd).await?;
        self.write_unchecked(cmd).await
    }

    /// May `who` read `[key, range_end)`, by this member's auth state?
    fn check_read(
        &self,
        who: &kv::auth::Identity,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        let g = self.node.sm.lock();
        g.data
            .kv
            .auth()
            .check_read(who, key, range_end)
            .map_err(auth_status)
    }

    async fn check_quota(&self, cmd: &Command) -> Result<(), Status> {
        let cost = growth(cmd);
        if cost > 0 {
            let size = self.node.sm.lock().data.kv.size_bytes();
            if size.saturating_add(cost) > self.node.limits.quota_backend_bytes {
                // etcd's quota check: raise NOSPACE for this member, refuse.
                tracing::warn!(
                    size,
                    quota = self.node.limits.quota_backend_bytes,
                    "store space quota exhausted: raising the NOSPACE alarm"
                );
                let raise = Command::Alarm {
                    activate: true,
                    member_id: self.node.id,
                    alarm: kv::Alarm::NoSpace,
                };
                self.node.write(raise).await.map_err(status)?;
                return Err(kv_status(KvError::NoSpace));
            }
        }
        Ok(())
    }

    async fn write_unchecked(&self, cmd: Command) -> Result<(Output, pb::ResponseHeader), Status> {
        let Applied {
            revision, result, ..
        } = self.node.write(cmd).await.map_err(status)?;
        let out = result.map_err(kv_status)?;
        Ok((out, self.header(revision)))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::kv_server::Kv for Etcd {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let who = self.who(&req)?;
        self.node
            .ranges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = req.into_inner();
        if !req.serializable {
            self.node.read_barrier().await.map_err(status)?;
        }
        self.check_read(&who, &req.key, &req.range_end)?;
        let (resp, rev) = {
            let g = self.node.sm.lock();
            (g.data.kv.range(&from_range(req)), g.data.kv.revision())
        };
        let resp = resp.map_err(kv_status)?;
        Ok(Response::new(to_range(resp, &self.header(rev))))
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let who = self.who(&req)?;
        self.node
            .puts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = req.into_inner();
        check_size(&req, &self.node.limits)?;
        let (out, header) = self.write_as(who, Command::Put(from_put(req))).await?;
        let Output::Put(p) = out else {
            return Err(Status::internal("unexpected output"));
        };
        Ok(Response::new(pb::PutResponse {
            header: Some(header),
            prev_kv: p.prev_kv.map(to_kv),
        }))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let who = self.who(&req)?;
        let req = req.into_inner();
        check_size(&req, &self.node.limits)?;
        let (out, header) = self
            .write_as(who, Command::DeleteRange(from_delete(req)))
            .await?;
        let Output::DeleteRange(d) = out else {
            return Err(Status::internal("unexpected output"));
        };
        Ok(Response::new(pb::DeleteRangeResponse {
            header: Some(header),
            deleted: d.deleted,
            prev_kvs: d.prev_kvs.into_iter().map(to_kv).collect(),
        }))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let who = self.who(&req)?;
        let req = req.into_inner();
        let max_ops = self.node.limits.max_txn_ops;
        if req.compare.len() > max_ops || req.success.len() > max_ops || req.failure.len() > max_ops
        {
            return Err(Status::invalid_argument(
                "etcdserver: too many operations in txn request",
            ));
        }
        check_size(&req, &self.node.limits)?;
        let txn = txn_from_pb(req)?;
        let (out, header) = self.write_as(who, Command::Txn(txn)).await?;
        let Output::Txn(t) = out else {
            return Err(Status::internal("unexpected output"));
        };
        Ok(Response::new(to_txn(t, &header)))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let who = self.who(&req)?;
        let revision = req.into_inner().revision;
        let (_, header) = self.write_as(who, Command::Compact { revision }).await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(header),
        }))
    }
}

/// Responses a watch stream holds for a client that does not read them; once
/// full, the stream stops taking events and its watchers fall behind.
const WATCH_OUT_BUFFER: usize = 16;

type WatchReply = Result<pb::WatchResponse, Status>;

/// Per-stream watch state: the hub keys of this stream's watchers.
struct WatchStream {
    etcd: Etcd,
    tx: mpsc::Sender<WatchMsg>,
    /// Set by the hub when a watcher of this stream fell behind.
    lagging: Arc<std::sync::atomic::AtomicBool>,
    hub_keys: std::collections::BTreeMap<i64, u64>,
    next_id: i64,
    /// Who opened the stream: each watch needs the right to read its range.
    who: kv::auth::Identity,
}

impl WatchStream {
    fn canceled(&self, header: pb::ResponseHeader, watch_id: i64, e: KvError) -> WatchReply {
        let compact_revision = match e {
            KvError::Compacted { compact_revision } => compact_revision,
            _ => 0,
        };
        Ok(pb::WatchResponse {
            header: Some(header),
            watch_id,
            canceled: true,
            compact_revision,
            cancel_reason: format!("etcdserver: {e}"),
            ..Default::default()
        })
    }

    fn create(&mut self, c: pb::WatchCreateRequest) -> Vec<WatchReply> {
        if self
            .etcd
            .check_read(&self.who, &c.key, &c.range_end)
            .is_err()
        {
            // etcd's answer: created and canceled at once, under ID -1.
            return vec![Ok(pb::WatchResponse {
                header: Some(self.etcd.current_header()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason:
                    "rpc error: code = PermissionDenied desc = etcdserver: permission denied".into(),
                ..Default::default()
            })];
        }
        let watch_id = if c.watch_id != 0 {
            c.watch_id
        } else {
            self.next_id
        };
        if self.hub_keys.contains_key(&watch_id) {
            return vec![Ok(pb::WatchResponse {
                header: Some(self.etcd.current_header()),
                watch_id,
                created: true,
                canceled: true,
                cancel_reason: "etcdserver: duplicate watch ID".into(),
                ..Default::default()
            })];
        }
        self.next_id = self.next_id.max(watch_id + 1);
        use pb::watch_create_request::FilterType;
        let watcher = Watcher {
            watch_id,
            key: c.key.clone(),
            range_end: c.range_end.clone(),
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            tx: self.tx.clone(),
            behind: None,
            lagging: self.lagging.clone(),
        };
        // Under the state-machine lock: answer "created", take the history,
        // register. Applies take the same lock, so no event falls between
        // history and live.
        let term = self.etcd.node.raft.metrics().borrow().current_term;
        let mut g = self.etcd.node.sm.lock();
        let revision = g.data.kv.revision();
        let header = pb::ResponseHeader {
            cluster_id: g.data.kv.cluster_id(),
            member_id: self.etcd.node.id,
            revision,
            raft_term: term,
        };
        let mut out = vec![Ok(pb::WatchResponse {
            header: Some(header),
            watch_id,
            created: true,
            ..Default::default()
        })];
        if c.start_revision > 0 && c.start_revision <= revision {
            match g
                .data
                .kv
                .events_since(&c.key, &c.range_end, c.start_revision)
            {
                Ok(events) => {
                    let events = watcher.mine(&events);
                    if !events.is_empty() {
                        out.push(Ok(events_response(header, watch_id, events)));
                    }
                }
                Err(e) => {
                    out.push(self.canceled(header, watch_id, e));
                    return out;
                }
            }
        }
        let key = g.add_watcher(watcher);
        drop(g);
        self.hub_keys.insert(watch_id, key);
        out
    }

    fn cancel(&mut self, watch_id: i64) -> Vec<WatchReply> {
        let Some(key) = self.hub_keys.remove(&watch_id) else {
            return Vec::new();
        };
        self.etcd.node.sm.lock().watchers.remove(&key);
        vec![Ok(pb::WatchResponse {
            header: Some(self.etcd.current_header()),
            watch_id,
            canceled: true,
            ..Default::default()
        })]
    }

    /// Once the queue is drained: the history each watcher that fell behind
    /// missed, read from the key space, and that watcher is live again (or,
    /// if that history was compacted, canceled as etcd does).
    fn catch_up(&mut self) -> Vec<WatchReply> {
        let mut out = Vec::new();
        let header = self.etcd.current_header();
        let mut g = self.etcd.node.sm.lock();
        let revision = g.data.kv.revision();
        let header = pb::ResponseHeader { revision, ..header };
        let mut gone = Vec::new();
        for (&watch_id, key) in &self.hub_keys {
            let Some(w) = g.watchers.get(key) else {
                // Ended by the store (a snapshot installed) without word.
                let compact_revision = g.data.kv.compact_revision();
                out.push(self.canceled(header, watch_id, KvError::Compacted { compact_revision }));
                gone.push(watch_id);
                continue;
            };
            let Some(from) = w.behind else { continue };
            match g.data.kv.events_since(&w.key, &w.range_end, from) {
                Ok(events) => {
                    let events = w.mine(&events);
                    if !events.is_empty() {
                        out.push(Ok(events_response(header, watch_id, events)));
                    }
                    if let Some(w) = g.watchers.get_mut(key) {
                        w.behind = None;
                    }
                }
                Err(e) => {
                    g.watchers.remove(key);
                    out.push(self.canceled(header, watch_id, e));
                    gone.push(watch_id);
                }
            }
        }
        drop(g);
        for id in gone {
            self.hub_keys.remove(&id);
        }
        out
    }
}

fn events_response(
    header: pb::ResponseHeader,
    watch_id: i64,
    events: Vec<kv::Event>,
) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(header),
        watch_id,
        events: events.into_iter().map(to_event).collect(),
        ..Default::default()
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let mut g = self.etcd.node.sm.lock();
        for key in self.hub_keys.values() {
            g.watchers.remove(key);
        }
    }
}

/// Sends replies in order; false once the client is gone.
async fn send_all(out: &mpsc::Sender<WatchReply>, replies: Vec<WatchReply>) -> bool {
    for r in replies {
        if out.send(r).await.is_err() {
            return false;
        }
    }
    true
}

#[tonic::async_trait]
impl pb::watch_server::Watch for Etcd {
    type WatchStream = BoxStream<pb::WatchResponse>;

    /// Memory per stream is bounded: [`WATCH_OUT_BUFFER`] responses for the
    /// client and [`crate::state_machine::WATCH_BUFFER`] messages of events;
    /// a client that reads slower than the store changes gets the rest from
    /// history once it catches up, or a compacted cancel.
    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // etcd's `hasleader`: a member without a leader refuses the watch and
        // ends it once it loses its leader, so the client fails over rather
        // than wait on a member that cannot learn of changes. A member that
        // has not heard its leader for an election timeout has none (see
        // `Node::leader`): one removed from the cluster, unaware, keeps its
        // last leader otherwise and hears of no change again.
        let needs_leader = req
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.as_bytes() == b"true");
        let who = self.who(&req)?;
        let stream = self.watch_stream(who, needs_leader, req.into_inner())?;
        Ok(Response::new(stream))
    }
}

impl Etcd {
    /// A watch stream: `input`'s requests (create, cancel, progress) in,
    /// responses out; it ends when `input` ends or the responses are dropped.
    /// gRPC's Watch and the JSON gateway's `/v3/watch` both run one.
    pub(crate) fn watch_stream<I>(
        &self,
        who: kv::auth::Identity,
        needs_leader: bool,
        mut input: I,
    ) -> Result<BoxStream<pb::WatchResponse>, Status>
    where
        I: Stream<Item = Result<pb::WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let mut leader = self.node.raft.server_metrics();
        let mut leaderless = self.node.leaderless.subscribe();
        let learns = |m: &openraft::metrics::RaftServerMetrics<u64, crate::types::MemberNode>,
                      leaderless: bool| {
            !leaderless
                && m.current_leader.is_some()
                && m.membership_config.membership().get_node(&m.id).is_some()
        };
        if needs_leader && !learns(&leader.borrow_and_update(), *leaderless.borrow_and_update()) {
            return Err(Status::unavailable("etcdserver: no leader"));
        }
        let (out_tx, out_rx) = mpsc::channel(WATCH_OUT_BUFFER);
        let (ev_tx, mut ev_rx) = mpsc::channel::<WatchMsg>(crate::state_machine::WATCH_BUFFER);
        let mut ws = WatchStream {
            etcd: self.clone(),
            tx: ev_tx,
            lagging: Default::default(),
            hub_keys: Default::default(),
            next_id: 0,
            who,
        };
        let etcd = self.clone();
        // Ends when the client closes its side or drops the response stream.
        tokio::spawn(async move {
            loop {
                let replies = tokio::select! {
                    msg = input.next() => {
                        use pb::watch_request::RequestUnion as U;
                        match msg {
                            Some(Ok(pb::WatchRequest { request_union: Some(U::CreateRequest(c)) })) => ws.create(c),
                            Some(Ok(pb::WatchRequest { request_union: Some(U::CancelRequest(c)) })) => ws.cancel(c.watch_id),
                            Some(Ok(pb::WatchRequest { request_union: Some(U::ProgressRequest(_)) })) => {
                                vec![Ok(pb::WatchResponse { header: Some(etcd.current_header()), watch_id: -1, ..Default::default() })]
                            }
                            Some(Ok(_)) => Vec::new(),
                            Some(Err(_)) | None => break,
                        }
                    }
                    ev = ev_rx.recv() => {
                        let Some(ev) = ev else { break };
                        let mut replies = if let Some(reason) = ev.canceled {
                            ws.hub_keys.remove(&ev.watch_id);
                            vec![Ok(pb::WatchResponse { header: Some(etcd.header(ev.revision)), watch_id: ev.watch_id, canceled: true, cancel_reason: reason, ..Default::default() })]
                        } else {
                            vec![Ok(events_response(etcd.header(ev.revision), ev.watch_id, ev.events))]
                        };
                        // Drained: what a watcher missed while the queue was full.
                        if ev_rx.is_empty() && ws.lagging.swap(false, std::sync::atomic::Ordering::AcqRel) {
                            replies.extend(ws.catch_up());
                        }
                        replies
                    }
                    r = async { tokio::select! { r = leader.changed() => r, r = leaderless.changed() => r } }, if needs_leader => {
                        if r.is_err() || !learns(&leader.borrow_and_update(), *leaderless.borrow_and_update()) {
                            let _ = out_tx.send(Err(Status::unavailable("etcdserver: no leader"))).await;
                            break;
                        }
                        Vec::new()
                    }
                    _ = out_tx.closed() => break,
                };
                if !send_all(&out_tx, replies).await {
                    break;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            out_rx,
        )))
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Etcd {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let who = self.who(&req)?;
        let r = req.into_inner();
        let grant = Command::LeaseGrant {
            id: r.id,
            ttl: r.ttl,
        };
        let (out, header) = self.write_as(who, grant).await?;
        let Output::LeaseGrant { id, ttl } = out else {
            return Err(Status::internal("unexpected output"));
        };
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(header),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let who = self.who(&req)?;
        let revoke = Command::LeaseRevoke {
            id: req.into_inner().id,
        };
        let (_, header) = self.write_as(who, revoke).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(header),
        }))
    }

    type LeaseKeepAliveStream = BoxStream<pb::LeaseKeepAliveResponse>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let who = self.who(&req)?;
        let mut input = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let etcd = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = input.next().await {
                let resp = etcd.keep_alive_once(who.clone(), r.id).await;
                if tx.send(Ok(resp)).is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        self.node.read_barrier().await.map_err(status)?;
        let (res, rev) = {
            let g = self.node.sm.lock();
            (
                g.data
                    .kv
                    .lease_time_to_live(r.id, r.keys, self.node.env.now_ms()),
                g.data.kv.revision(),
            )
        };
        let header = Some(self.header(rev));
        Ok(Response::new(match res {
            Ok(t) => pb::LeaseTimeToLiveResponse {
                header,
                id: t.id,
                ttl: t.ttl,
                granted_ttl: t.granted_ttl,
                keys: t.keys,
            },
            // etcd answers TTL -1 for an unknown lease; etcdctl prints "already expired".
            Err(_) => pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                ..Default::default()
            },
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.node.read_barrier().await.map_err(status)?;
        let ids = self.node.sm.lock().data.kv.lease_ids();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.current_header()),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

fn membership_unsupported(what: &str) -> Status {
    Status::failed_precondition(format!(
        "mgmt: {what} refused: membership follows /_mgmt/idealClusterSize \
         (set it with `etcdctl put /_mgmt/idealClusterSize N`; the leader nominates \
         and removes members to match)"
    ))
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Etcd {
    async fn member_add(
        &self,
        _req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(membership_unsupported("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(membership_unsupported("MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(membership_unsupported("MemberUpdate"))
    }

    async fn member_promote(
        &self,
        _req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(membership_unsupported("MemberPromote"))
    }

    async fn member_list(
        &self,
        _req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let (members, index) = {
            let m = self.node.raft.metrics();
            let m = m.borrow();
            let index = m
                .membership_config
                .log_id()
                .map(|l| format!("{}.{}", l.leader_id.term, l.index));
            (crate::membership::members_of(&m.membership_config), index)
        };
        let mut resp = Response::new(pb::MemberListResponse {
            header: Some(self.current_header()),
            members: members.into_iter().map(to_member).collect(),
        });
        // mgmt's own: where in the log that config is, TERM.INDEX (etcd
        // clients ignore it).
        if let Some(at) = index.and_then(|i| i.parse().ok()) {
            resp.metadata_mut()
                .insert(crate::client::CONFIG_LOG_HEADER, at);
        }
        Ok(resp)
    }
}

/// Bytes per message of a Maintenance.Snapshot stream.
const SNAPSHOT_CHUNK: usize = 64 * 1024;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Etcd {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let who = self.who(&req)?;
        let r = req.into_inner();
        let member = |(member_id, a): (u64, kv::Alarm)| pb::AlarmMember {
            member_id,
            alarm: alarm_of(a) as i32,
        };
        let action = AlarmAction::try_from(r.action).unwrap_or(AlarmAction::Get);
        let alarm = match pb::AlarmType::try_from(r.alarm) {
            Ok(pb::AlarmType::Nospace) => Some(kv::Alarm::NoSpace),
            Ok(pb::AlarmType::Corrupt) => Some(kv::Alarm::Corrupt),
            _ => None,
        };
        let (alarms, header) = match (action, alarm) {
            // etcd answers a GET with no header at all.
            (AlarmAction::Get, _) => {
                self.node.read_barrier().await.map_err(status)?;
                let alarms = self.node.sm.lock().data.kv.alarms();
                (alarms, None)
            }
            (_, None) => return Err(Status::invalid_argument("etcdserver: unknown alarm type")),
            (AlarmAction::Activate | AlarmAction::Deactivate, Some(alarm)) => {
                let activate = action == AlarmAction::Activate;
                let key = (r.member_id, alarm);
                let before = self.node.sm.lock().data.kv.alarms().contains(&key);
                let cmd = Command::Alarm {
                    activate,
                    member_id: r.member_id,
                    alarm,
                };
                let (_, header) = self.write_as(who, cmd).await?;
                // etcd answers the alarm it raised, or the one it cleared.
                let answered = (activate || before).then_some(key);
                (answered.into_iter().collect(), Some(header))
            }
        };
        Ok(Response::new(pb::AlarmResponse {
            header,
            alarms: alarms.into_iter().map(member).collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let is_learner = self
            .node
            .members()
            .iter()
            .any(|x| x.id == self.node.id && x.is_learner);
        let (db_size, alarms) = {
            let g = self.node.sm.lock();
            (g.data.kv.size_bytes() as i64, g.data.kv.alarms())
        };
        let errors = alarms
            .iter()
            .map(|(id, a)| format!("memberID:{id} alarm:{}", alarm_of(*a).as_str_name()))
            .collect();
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.current_header()),
            version: API_VERSION.into(),
            db_size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: m.current_term,
            raft_applied_index: m.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: db_size,
            is_learner,
        }))
    }

    /// The store keeps no free pages to give back: what etcd's defragment
    /// reclaims, compaction already freed. A snapshot is taken, so the raft
    /// log behind it can be purged.
    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.check_admin(&self.who(&req)?)?;
        self.node.snapshot_now().await.map_err(status)?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.current_header()),
        }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.check_admin(&self.who(&req)?)?;
        let (hash, rev) = {
            let g = self.node.sm.lock();
            let (hash, _) = g.data.kv.hash_kv(0).map_err(kv_status)?;
            (hash, g.data.kv.revision())
        };
        Ok(Response::new(pb::HashResponse {
            header: Some(self.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.check_admin(&self.who(&req)?)?;
        let revision = req.into_inner().revision;
        let (hash, compact_revision, rev) = {
            let g = self.node.sm.lock();
            let (hash, compact) = g.data.kv.hash_kv(revision).map_err(kv_status)?;
            (hash, compact, g.data.kv.revision())
        };
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(rev)),
            hash,
            compact_revision,
        }))
    }

    type SnapshotStream = BoxStream<pb::SnapshotResponse>;

    /// This member's state machine, in the format of the store's own snapshots
    /// (`mgmt run --restore FILE` starts a new cluster from it).
    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.check_admin(&self.who(&req)?)?;
        let (_, _, body) =
            (self.node.sm.snapshot_bytes().await).map_err(|e| Status::internal(e.to_string()))?;
        let bytes = crate::state_machine::snapshot_file(&body);
        let rev = self.node.sm.lock().data.kv.revision();
        let header = self.header(rev);
        let total = bytes.len();
        let chunks: Vec<Result<pb::SnapshotResponse, Status>> = bytes
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, blob)| {
                let sent = (i * SNAPSHOT_CHUNK + blob.len()) as u64;
                Ok(pb::SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: total as u64 - sent,
                    blob: blob.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        use crate::node::MoveLeaderError as E;
        self.check_admin(&self.who(&req)?)?;
        let target = req.into_inner().target_id;
        match self.node.move_leader(target).await {
            Ok(()) => Ok(Response::new(pb::MoveLeaderResponse {
                header: Some(self.current_header()),
            })),
            Err(e @ E::NotLeader) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ E::BadTransferee) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ E::Timeout) => Err(Status::unavailable(e.to_string())),
            Err(e @ E::Other(_)) => Err(Status::unavailable(e.to_string())),
        }
    }
}
