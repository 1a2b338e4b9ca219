//! An etcd v3 client (tonic, the same protos as the server) that works against
//! mgmt's store and against a real etcd 3.4.
//!
//! Every RPC has a deadline (no call can hang on a dead or partitioned member),
//! and a call that fails for a transport reason — unavailable, deadline
//! exceeded, "no leader" — is retried on the next endpoint until the call's
//! overall budget ([`ClientConfig::request_timeout`]) is spent. A failed
//! endpoint's channel is dropped and redialed, so a wedged HTTP/2 connection
//! never sticks. Endpoints can be replaced at any time
//! ([`EtcdClient::set_endpoints`]), which is how clustering follows the
//! advertised `/_mgmt/endpoints/`.
//!
//! [`EtcdClient::watch_prefix`] runs a reconnecting watch; it resumes from the
//! revision after the last one it delivered and signals a gap it could not
//! bridge (compaction) with [`WatchEvent::Resync`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::net::Env;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

pub use mvccpb::{Event, KeyValue};
pub use pb::{Compare, Member as PbMember, RequestOp, TxnRequest, TxnResponse};

/// Errors of client calls.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    /// Every attempt failed for a transport reason within the call's budget.
    #[error("etcd unavailable: {0}")]
    Unavailable(String),
    /// The server answered with an error that retrying would not fix.
    #[error("etcd: {}", .0.message())]
    Status(Status),
    #[error("invalid endpoint {url}: {reason}")]
    InvalidEndpoint { url: String, reason: String },
}

impl ClientError {
    /// The server refused for want of rights (not for being unreachable).
    pub fn permission_denied(&self) -> bool {
        matches!(self, ClientError::Status(s) if s.code() == Code::PermissionDenied)
    }
}

/// Response metadata of mgmt's MemberList: where the answering member's
/// membership config is in the log, `TERM.INDEX`.
pub const CONFIG_LOG_HEADER: &str = "mgmt-config-log";

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `http://IP:PORT` (or `IP:PORT`) of members to talk to.
    pub endpoints: Vec<String>,
    /// Budget of one call, retries included.
    pub request_timeout: Duration,
    /// Deadline of one attempt on one endpoint.
    pub attempt_timeout: Duration,
    pub env: Env,
    /// etcd's user name and password: the client authenticates with them
    /// (again when its token is refused) and sends the token with every call.
    pub user: Option<(String, String)>,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            env: Env::tokio(),
            user: None,
        }
    }
}

struct State {
    endpoints: Vec<String>,
    /// Index into `endpoints` of the endpoint in use, and its channel.
    current: usize,
    channel: Option<Channel>,
}

struct Inner {
    env: Env,
    user: Option<(String, String)>,
    /// The token of `user`, once authenticated.
    token: Mutex<Option<AsciiMetadataValue>>,
    request_timeout: Duration,
    attempt_timeout: Duration,
    state: Mutex<State>,
}

/// A cheap-to-clone handle; all clones share endpoints and connections.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

/// What a watch delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// Events of one revision or more, oldest first.
    Events(Vec<Event>),
    /// Events may have been missed (the watch was compacted away or the
    /// server canceled it): re-read what you need.
    Resync,
}

/// A running watch (of one range or several); dropping it stops the
/// background tasks.
pub struct Watch {
    rx: mpsc::Receiver<WatchEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl Watch {
    /// The next delivery; `None` only if the watch task ended (it does not on errors).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn normalize(url: &str) -> Result<String, ClientError> {
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    crate::net::socket_addr(&url).map_err(|e| ClientError::InvalidEndpoint {
        url: url.clone(),
        reason: e.to_string(),
    })?;
    Ok(url)
}

/// Whether another endpoint (or a later retry) could succeed.
fn retryable(s: &Status) -> bool {
    match s.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
        // etcd's "etcdserver: no leader" / "leader changed" / "request timed out".
        _ => s.message().contains("leader") || s.message().contains("timed out"),
    }
}

/// The largest response a read takes.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// One attempt of a call: its deadline, and the auth token to send.
#[derive(Clone)]
struct Call {
    timeout: Duration,
    token: Option<AsciiMetadataValue>,
}

impl Call {
    /// `msg` as a request of this attempt.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        if let Some(token) = &self.token {
            r.metadata_mut().insert("token", token.clone());
        }
        r
    }
}

/// etcd's answer to a request with a token it no longer knows (expired, or
/// from before a restart): authenticate again.
fn token_refused(s: &Status) -> bool {
    s.code() == Code::Unauthenticated && s.message().contains("invalid auth token")
}

/// Every value of `kvs` that `decode` (key, value) accepts; the others are
/// skipped with a warning naming them (`what: skipped: ...`), so one bad key
/// never hides the rest.
pub fn decode_each<T, E: std::fmt::Display>(
    kvs: Vec<KeyValue>,
    what: &str,
    decode: impl Fn(&str, &[u8]) -> Result<T, E>,
) -> Vec<T> {
    kvs.into_iter()
        .filter_map(|kv| {
            decode(&String::from_utf8_lossy(&kv.key), &kv.value)
                .map_err(|e| tracing::warn!("{what}: skipped: {e}"))
                .ok()
        })
        .collect()
}

/// The exclusive end of the range of keys starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    mgmt_core::kv::prefix_end(prefix)
}

impl EtcdClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|u| normalize(u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                env: config.env,
                user: config.user,
                token: Mutex::new(None),
                request_timeout: config.request_timeout,
                attempt_timeout: config.attempt_timeout,
                state: Mutex::new(State {
                    endpoints,
                    current: 0,
                    channel: None,
                }),
            }),
        })
    }

    /// Replace the endpoints; the connection in use is kept if its endpoint stays.
    pub fn set_endpoints(&self, endpoints: &[String]) -> Result<(), ClientError> {
        let endpoints = endpoints
            .iter()
            .map(|u| normalize(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.lock();
        if st.endpoints == endpoints {
            return Ok(());
        }
        let in_use = st.endpoints.get(st.current).cloned();
        match in_use.and_then(|u| endpoints.iter().position(|e| *e == u)) {
            Some(i) => st.current = i,
            None => {
                st.current = 0;
                st.channel = None;
            }
        }
        st.endpoints = endpoints;
        Ok(())
    }

    /// Endpoint `idx`, for errors.
    fn endpoint(&self, idx: usize) -> String {
        self.lock().endpoints.get(idx).cloned().unwrap_or_default()
    }

    /// The endpoints in use.
    pub fn endpoints(&self) -> Vec<String> {
        self.lock().endpoints.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The channel to the current endpoint (dialed lazily).
    fn channel(&self) -> Result<(usize, Channel), ClientError> {
        let mut st = self.lock();
        if st.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        if st.current >= st.endpoints.len() {
            st.current = 0;
            st.channel = None;
        }
        if let Some(ch) = &st.channel {
            return Ok((st.current, ch.clone()));
        }
        let url = st.endpoints[st.current].clone();
        let ch = self
            .inner
            .env
            .channel(&url)
            .map_err(|e| ClientError::InvalidEndpoint {
                url,
                reason: e.to_string(),
            })?;
        st.channel = Some(ch.clone());
        Ok((st.current, ch))
    }

    /// Drop the channel of endpoint `idx` (if still current) and move on.
    fn fail_over(&self, idx: usize) {
        let mut st = self.lock();
        if st.current == idx && !st.endpoints.is_empty() {
            st.current = (idx + 1) % st.endpoints.len();
            st.channel = None;
        }
    }

    /// Run `call` with retries across endpoints within the request budget.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Call) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut last = String::from("no attempt");
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Unavailable(last));
            }
            let (idx, ch) = self.channel()?;
            let per = left.min(self.inner.attempt_timeout);
            // The deadline also bounds connecting, which the request timeout
            // does not cover in every tonic version.
            let outcome = tokio::time::timeout(per, async {
                let token = self.token(&ch, per).await?;
                call(
                    ch,
                    Call {
                        timeout: per,
                        token,
                    },
                )
                .await
            })
            .await;
            match outcome {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(s)) if token_refused(&s) && self.inner.user.is_some() => {
                    // Authenticate again on the next attempt, on this endpoint.
                    *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    last = s.to_string();
                    attempts += 1;
                    if attempts > 1 {
                        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                    }
                    continue;
                }
                Ok(Err(s)) if !retryable(&s) => return Err(ClientError::Status(s)),
                Ok(Err(s)) => last = format!("{}: {}", self.endpoint(idx), s.message()),
                Err(_) => last = format!("{}: deadline exceeded", self.endpoint(idx)),
            }
            self.fail_over(idx);
            attempts += 1;
            // Every endpoint failed once: pause briefly before the next round.
            let n = self.lock().endpoints.len().max(1) as u32;
            if attempts.is_multiple_of(n) {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
            }
        }
    }

    /// The token to send: none without a user; else the one held, or a new
    /// one from etcd's Authenticate on `ch`.
    async fn token(
        &self,
        ch: &Channel,
        timeout: Duration,
    ) -> Result<Option<AsciiMetadataValue>, Status> {
        let Some((name, password)) = &self.inner.user else {
            return Ok(None);
        };
        if let Some(t) = self
            .inner
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Ok(Some(t));
        }
        let auth = Call {
            timeout,
            token: None,
        };
        let r = pb::auth_client::AuthClient::new(ch.clone())
            .authenticate(auth.request(pb::AuthenticateRequest {
                name: name.clone(),
                password: password.clone(),
            }))
            .await?;
        let token = AsciiMetadataValue::try_from(r.into_inner().token)
            .map_err(|_| Status::internal("etcd answered with a token that is not ASCII"))?;
        *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(Some(token))
    }

    /// Read one key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, ClientError> {
        let req = pb::RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let r = self.range(req).await?;
        Ok(r.kvs.into_iter().next())
    }

    /// Read every key under `prefix`; returns the store revision of the read too.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<(i64, Vec<KeyValue>), ClientError> {
        self.get_range(prefix, &prefix_end(prefix)).await
    }

    /// Read every key in `[key, range_end)`, and the revision of the read.
    pub async fn get_range(
        &self,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(i64, Vec<KeyValue>), ClientError> {
        let req = pb::RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        };
        let r = self.range(req).await?;
        Ok((r.header.map_or(0, |h| h.revision), r.kvs))
    }

    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, ClientError> {
        self.retry(|ch, call| {
            let req = req.clone();
            async move {
                // A read may hold many large values (etcd's own client
                // takes up to 2 GiB): tonic's default 4 MiB is no limit of
                // the server's.
                pb::kv_client::KvClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .range(call.request(req))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Put a key (bound to `lease` unless 0); returns the new revision.
    ///
    /// A put that timed out may still have happened: puts are idempotent, so the
    /// retry is harmless.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64, ClientError> {
        let req = pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        };
        self.retry(|ch, call| {
            let req = req.clone();
            async move {
                pb::kv_client::KvClient::new(ch)
                    .put(call.request(req))
                    .await
                    .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
            }
        })
        .await
    }

    /// Delete a key or every key under it; returns how many were deleted.
    pub async fn delete(&self, key: &[u8], prefix: bool) -> Result<i64, ClientError> {
        let req = pb::DeleteRangeRequest {
            key: key.to_vec(),
            range_end: if prefix { prefix_end(key) } else { Vec::new() },
            prev_kv: false,
        };
        self.retry(|ch, call| {
            let req = req.clone();
            async move {
                pb::kv_client::KvClient::new(ch)
                    .delete_range(call.request(req))
                    .await
                    .map(|r| r.into_inner().deleted)
            }
        })
        .await
    }

    /// A transaction. Retried on transport failure like every call, so its
    /// comparisons must make a repeat harmless (they do for nominations).
    pub async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.retry(|ch, call| {
            let req = req.clone();
            async move {
                pb::kv_client::KvClient::new(ch)
                    .txn(call.request(req))
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Grant a lease of `ttl_s` seconds; returns its ID.
    pub async fn lease_grant(&self, ttl_s: i64) -> Result<i64, ClientError> {
        self.retry(|ch, call| async move {
            pb::lease_client::LeaseClient::new(ch)
                .lease_grant(call.request(pb::LeaseGrantRequest { ttl: ttl_s, id: 0 }))
                .await
                .map(|r| r.into_inner().id)
        })
        .await
    }

    /// Revoke a lease (its keys are deleted). Revoking an unknown lease is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        let r = self
            .retry(|ch, call| async move {
                pb::lease_client::LeaseClient::new(ch)
                    .lease_revoke(call.request(pb::LeaseRevokeRequest { id }))
                    .await
                    .map(|_| ())
            })
            .await;
        match r {
            Err(ClientError::Status(s)) if s.code() == Code::NotFound => Ok(()),
            r => r,
        }
    }

    /// Refresh a lease once; returns its remaining TTL in seconds (<= 0: it is gone).
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<i64, ClientError> {
        self.retry(|ch, call| async move {
            let req = futures::stream::iter([pb::LeaseKeepAliveRequest { id }]);
            let mut stream = pb::lease_client::LeaseClient::new(ch)
                .lease_keep_alive(call.request(req))
                .await?
                .into_inner();
            match stream.message().await? {
                Some(r) => Ok(r.ttl),
                None => Err(Status::unavailable("keepalive stream closed")),
            }
        })
        .await
    }

    /// The cluster's members.
    pub async fn member_list(&self) -> Result<Vec<PbMember>, ClientError> {
        Ok(self.member_list_indexed().await?.0)
    }

    /// [`EtcdClient::member_list`], with where the answering member's config
    /// is in the log, (term, index), where it says it (mgmt's store does;
    /// etcd does not).
    pub async fn member_list_indexed(
        &self,
    ) -> Result<(Vec<PbMember>, Option<(u64, u64)>), ClientError> {
        self.retry(|ch, call| async move {
            pb::cluster_client::ClusterClient::new(ch)
                .member_list(call.request(pb::MemberListRequest::default()))
                .await
                .map(|r| {
                    let index = r.metadata().get(CONFIG_LOG_HEADER).and_then(|v| {
                        let (term, index) = v.to_str().ok()?.split_once('.')?;
                        Some((term.parse().ok()?, index.parse().ok()?))
                    });
                    (r.into_inner().members, index)
                })
        })
        .await
    }

    /// Watch every key under `prefix` from `start_revision` (0: from whenever the
    /// stream, connecting in the background, is established — to miss nothing
    /// after a read, pass that read's revision + 1), with reconnection. Deliveries are buffered (bounded); a slow reader slows the watch.
    pub fn watch_prefix(&self, prefix: &[u8], start_revision: i64) -> Watch {
        self.watch_ranges(&[(prefix.to_vec(), prefix_end(prefix))], start_revision)
    }

    /// [`EtcdClient::watch_prefix`] of several ranges `[key, range_end)` at
    /// once, their deliveries in one stream (in order within a range).
    pub fn watch_ranges(&self, ranges: &[(Vec<u8>, Vec<u8>)], start_revision: i64) -> Watch {
        let (tx, rx) = mpsc::channel(64);
        let tasks = ranges
            .iter()
            .map(|range| {
                let (client, range, tx) = (self.clone(), range.clone(), tx.clone());
                tokio::spawn(async move {
                    client.run_watch(range, start_revision, tx).await;
                })
            })
            .collect();
        Watch { rx, tasks }
    }

    async fn run_watch(&self, range: (Vec<u8>, Vec<u8>), start: i64, tx: mpsc::Sender<WatchEvent>) {
        let mut next_rev = start;
        loop {
            let res = self.watch_once(&range, &mut next_rev, &tx).await;
            if tx.is_closed() {
                return;
            }
            match res {
                Ok(()) => {}
                Err(e) => tracing::debug!(error = %e, "watch interrupted; reconnecting"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One watch stream on the current endpoint, until it fails.
    async fn watch_once(
        &self,
        (key, range_end): &(Vec<u8>, Vec<u8>),
        next_rev: &mut i64,
        tx: &mpsc::Sender<WatchEvent>,
    ) -> Result<(), ClientError> {
        let (idx, ch) = self.channel()?;
        let token = match self.token(&ch, self.inner.attempt_timeout).await {
            Ok(token) => token,
            Err(s) => {
                self.fail_over(idx);
                return Err(ClientError::Unavailable(s.to_string()));
            }
        };
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: key.clone(),
                    range_end: range_end.clone(),
                    start_revision: *next_rev,
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        // The request stream stays open (ending it would end the watch on some servers).
        let (req_tx, req_rx) = mpsc::channel(1);
        let _ = req_tx.send(create).await;
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(req_rx));
        // etcd cancels watches on a member that lost its leader, so a partitioned
        // member cannot silently starve us.
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        if let Some(token) = token {
            req.metadata_mut().insert("token", token);
        }
        let opened = tokio::time::timeout(
            self.inner.attempt_timeout,
            pb::watch_client::WatchClient::new(ch).watch(req),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(s)) => {
                if token_refused(&s) {
                    *self.inner.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                self.fail_over(idx);
                return Err(ClientError::Unavailable(s.to_string()));
            }
            Err(_) => {
                self.fail_over(idx);
                return Err(ClientError::Unavailable("watch: deadline exceeded".into()));
            }
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.fail_over(idx);
                    return Err(ClientError::Unavailable("watch stream ended".into()));
                }
                Err(s) => {
                    self.fail_over(idx);
                    return Err(ClientError::Unavailable(s.to_string()));
                }
            };
            if msg.canceled {
                // Compacted past `next_rev`, or the server gave up: start from now
                // and tell the reader to re-read.
                *next_rev = 0;
                if msg.compact_revision > 0 {
                    *next_rev = msg.compact_revision;
                }
                let _ = tx.send(WatchEvent::Resync).await;
                return Err(ClientError::Unavailable(format!(
                    "watch canceled: {}",
                    msg.cancel_reason
                )));
            }
            if msg.created && *next_rev == 0 {
                // From now on: later reconnects resume after this revision.
                *next_rev = msg.header.as_ref().map_or(0, |h| h.revision) + 1;
                continue;
            }
            if msg.events.is_empty() {
                continue;
            }
            let last = msg
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                .max()
                .unwrap_or(0);
            *next_rev = (*next_rev).max(last + 1);
            if tx.send(WatchEvent::Events(msg.events)).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Helpers to build transactions.
pub mod txn {
    use super::pb;

    fn cmp(key: &[u8], result: pb::compare::CompareResult, version: i64) -> pb::Compare {
        pb::Compare {
            result: result as i32,
            target: pb::compare::CompareTarget::Version as i32,
            key: key.to_vec(),
            target_union: Some(pb::compare::TargetUnion::Version(version)),
            range_end: Vec::new(),
        }
    }

    /// The key does not exist.
    pub fn absent(key: &[u8]) -> pb::Compare {
        cmp(key, pb::compare::CompareResult::Equal, 0)
    }

    /// The key was last changed at `mod_revision` (nobody wrote it since).
    pub fn modified_at(key: &[u8], mod_revision: i64) -> pb::Compare {
        pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Mod as i32,
            key: key.to_vec(),
            target_union: Some(pb::compare::TargetUnion::ModRevision(mod_revision)),
            range_end: Vec::new(),
        }
    }

    /// The key exists.
    pub fn present(key: &[u8]) -> pb::Compare {
        cmp(key, pb::compare::CompareResult::Greater, 0)
    }

    pub fn put(key: &[u8], value: &[u8], lease: i64) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
                ..Default::default()
            })),
        }
    }

    pub fn delete(key: &[u8]) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                },
            )),
        }
    }
}
