//! etcd's plain HTTP endpoints on the client port, beside gRPC (and the JSON
//! gateway, `/v3/...`, handed to `gateway`): `/health`,
//! `/livez`, `/readyz`, `/version` and `/metrics`, for load balancers,
//! Kubernetes probes, Prometheus and gateway clients (which read `/version`
//! to choose their API prefix).
//!
//! The client listener serves HTTP/1.1 and HTTP/2 (tonic's `accept_http1`);
//! [`HttpFaceLayer`] answers requests for these paths that are not gRPC
//! (`content-type: application/grpc`) and passes everything else to the
//! gRPC services. The bodies are etcd 3.4's: `{"health":"true"}` (503 and
//! `"false"` when unhealthy), `{"etcdserver":...,"etcdcluster":...}` (with
//! `"mgmt"`'s version after them); `/livez` and `/readyz` answer as etcd
//! 3.5.11 does (Kubernetes' format: `ok`, or the failed checks).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use openraft::ServerState;
use tonic::body::Body;

use crate::http_reply::reply;
use crate::node::Node;

/// What `/version` names as etcd's server version: the etcd release whose
/// API this store speaks (gateway clients pick `/v3` from 3.4 on).
pub const ETCD_SERVER_VERSION: &str = "3.4.23";

/// How long `/health` waits for a linearizable read (etcd: about a second).
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

const PATHS: [&str; 5] = ["/health", "/livez", "/readyz", "/version", "/metrics"];

/// The tower layer of the client port's HTTP face.
#[derive(Clone)]
pub(crate) struct HttpFaceLayer {
    pub(crate) node: Arc<Node>,
}

impl<S> tower::Layer<S> for HttpFaceLayer {
    type Service = HttpFace<S>;
    fn layer(&self, inner: S) -> HttpFace<S> {
        HttpFace {
            inner,
            node: self.node.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct HttpFace<S> {
    inner: S,
    node: Arc<Node>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> tower::Service<Request<ReqBody>> for HttpFace<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc && crate::gateway::serves(req.uri().path()) {
            let etcd = crate::server::Etcd {
                node: self.node.clone(),
            };
            return Box::pin(async move { Ok(gateway(&etcd, req).await) });
        }
        if grpc || !PATHS.contains(&req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let node = self.node.clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        Box::pin(async move { Ok(answer(&node, &path, &query).await) })
    }
}

/// A JSON gateway call: its body read (up to the request limit), then
/// answered by `gateway`.
async fn gateway<B>(etcd: &crate::server::Etcd, req: Request<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    if req.method() != http::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "the JSON gateway takes POST\n",
        );
    }
    let limit = etcd.node.limits.max_request_bytes + 4096;
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("the request body: {e}\n"),
            );
        }
    };
    crate::gateway::answer(
        etcd,
        parts.uri.path(),
        &parts.headers,
        parts.extensions,
        &body,
    )
    .await
}

/// The query's parameters, `a=b&c` -> [("a", "b"), ("c", "")].
fn params(query: &str) -> Vec<(&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

async fn answer(node: &Node, path: &str, query: &str) -> Response<Body> {
    let params = params(query);
    match path {
        // etcd's field order, and mgmt's own version after them.
        "/version" => reply(
            StatusCode::OK,
            "application/json",
            format!(
                r#"{{"etcdserver":"{ETCD_SERVER_VERSION}","etcdcluster":"{}","mgmt":"{}"}}"#,
                crate::server::API_VERSION,
                env!("CARGO_PKG_VERSION")
            ),
        ),
        "/health" => {
            let excluded: Vec<&str> = params
                .iter()
                .filter(|(k, _)| *k == "exclude")
                .map(|(_, v)| *v)
                .collect();
            let serializable = params
                .iter()
                .any(|(k, v)| *k == "serializable" && *v == "true");
            // etcd 3.4's bodies; why it is unhealthy goes to the log.
            match health(node, &excluded, serializable).await {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/json",
                    r#"{"health":"true"}"#.to_string(),
                ),
                Err(reason) => {
                    tracing::warn!(%reason, "/health: unhealthy");
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        r#"{"health":"false"}"#.to_string(),
                    )
                }
            }
        }
        "/livez" | "/readyz" => {
            let checks = if path == "/livez" {
                vec![("serializable_read", serializable_ok(node))]
            } else {
                vec![
                    ("data_corruption", corruption_ok(node)),
                    ("serializable_read", serializable_ok(node)),
                    ("linearizable_read", linearizable_ok(node).await),
                    ("non_learner", true),
                ]
            };
            let excluded: Vec<&str> = params
                .iter()
                .filter(|(k, _)| *k == "exclude")
                .map(|(_, v)| *v)
                .collect();
            let verbose = params.iter().any(|(k, _)| *k == "verbose");
            // Kubernetes' health check format, as etcd 3.5 writes it.
            let mut lines = String::new();
            let mut ok = true;
            for (name, passed) in checks {
                if excluded.contains(&name) {
                    lines.push_str(&format!("[+]{name} excluded: ok\n"));
                    continue;
                }
                ok &= passed;
                let (mark, what) = if passed { ("+", "ok") } else { ("-", "failed") };
                lines.push_str(&format!("[{mark}]{name} {what}\n"));
            }
            let name = &path[1..];
            let (status, body) = match (ok, verbose) {
                (true, false) => (StatusCode::OK, "ok".to_string()),
                (true, true) => (StatusCode::OK, format!("{lines}{name} check passed\n")),
                (false, _) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{lines}{name} check failed\n"),
                ),
            };
            reply(status, "text/plain; charset=utf-8", body)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(node),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "404 page not found\n"),
    }
}

/// etcd's `/health`: no alarm (but those excluded), a leader, and a read
/// that goes through (linearizable unless `serializable`).
async fn health(node: &Node, excluded: &[&str], serializable: bool) -> Result<(), String> {
    let alarms = node.sm.lock().data.kv.alarms();
    for (_, alarm) in alarms {
        let name = match alarm {
            mgmt_core::kv::Alarm::NoSpace => "NOSPACE",
            mgmt_core::kv::Alarm::Corrupt => "CORRUPT",
        };
        if !excluded.contains(&name) {
            return Err(format!("ALARM {name}"));
        }
    }
    if serializable {
        return match serializable_ok(node) {
            true => Ok(()),
            false => Err("no leader".into()),
        };
    }
    if node.leader().is_none() {
        return Err("RAFT NO LEADER".into());
    }
    if !linearizable_ok(node).await {
        return Err("QGET ERROR".into());
    }
    Ok(())
}

/// A serializable read is served by any member that is one: it has a
/// state machine and knows of a leader.
fn serializable_ok(node: &Node) -> bool {
    let state = node.raft.metrics().borrow().state;
    state != ServerState::Shutdown && node.leader().is_some()
}

fn corruption_ok(node: &Node) -> bool {
    !node
        .sm
        .lock()
        .data
        .kv
        .alarms()
        .iter()
        .any(|(_, a)| *a == mgmt_core::kv::Alarm::Corrupt)
}

async fn linearizable_ok(node: &Node) -> bool {
    matches!(
        tokio::time::timeout(HEALTH_READ_TIMEOUT, node.read_barrier()).await,
        Ok(Ok(()))
    )
}
