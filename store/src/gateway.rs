//! etcd's JSON gateway (grpc-gateway, as etcd 3.4 serves it) on the client
//! port: `POST /v3/<service>/<method>` with the request message as JSON,
//! answered with the response message as JSON, through the same service
//! code as gRPC (so auth, quotas and errors are the same). `/v3beta/...` is
//! the same as `/v3/...`, as in etcd 3.4 and 3.5.
//!
//! The JSON mapping is pbjson's, generated from our protos (`build.rs`):
//! proto field names, 64-bit integers as strings, bytes as base64, enums by
//! name, zero values omitted. A token from `/v3/auth/authenticate` goes in
//! the `Authorization` header (not `Bearer`), as etcd reads it; a client
//! certificate counts as on gRPC. Errors have etcd 3.4's unary shape,
//! `{"error":...,"code":N,"message":...}`, with grpc-gateway's HTTP status.
//!
//! Served, at etcd 3.4's paths: KV (range, put, deleterange, txn,
//! compaction), Lease (grant, revoke, timetolive, leases, and keepalive: a
//! line per request of the body), Cluster (member list, add, remove, update,
//! promote), Maintenance (status, alarm, defragment, hash,
//! transfer-leadership), Auth (authenticate, enable, disable, users, roles),
//! and Watch (a stream of `{"result":...}` lines). Not served: the snapshot
//! stream and the lock and election services (not in this store).

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::body::Body;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::auth_server::Auth as _;
use crate::pb::etcdserverpb::cluster_server::Cluster as _;
use crate::pb::etcdserverpb::kv_server::Kv as _;
use crate::pb::etcdserverpb::lease_server::Lease as _;
use crate::pb::etcdserverpb::maintenance_server::Maintenance as _;
use crate::server::Etcd;

/// Whether `path` is the gateway's (`/v3/...` or `/v3beta/...`).
pub(crate) fn serves(path: &str) -> bool {
    path.starts_with("/v3/") || path.starts_with("/v3beta/")
}

fn json_reply(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    crate::http_reply::reply(status, "application/json", body)
}

/// The requests of a streaming call's body: one JSON object or several.
fn requests<T: DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, Status> {
    serde_json::Deserializer::from_slice(body)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// grpc-gateway 1.x's HTTP status for a gRPC code (what etcd 3.4 answers).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// etcd 3.4's unary error body.
fn error_reply(status: &Status) -> Response<Body> {
    #[derive(Serialize)]
    struct GatewayError<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body = serde_json::to_vec(&GatewayError {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    })
    .unwrap_or_default();
    json_reply(http_status(status.code()), body)
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    // grpc-gateway takes an empty body as the empty message.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(r: Result<tonic::Response<T>, Status>) -> Response<Body> {
    match r {
        Ok(resp) => match serde_json::to_vec(resp.get_ref()) {
            Ok(body) => json_reply(StatusCode::OK, body),
            Err(e) => error_reply(&Status::internal(e.to_string())),
        },
        Err(status) => error_reply(&status),
    }
}

/// A gRPC request carrying what the HTTP one did: the `Authorization`
/// token as the `token` metadata gRPC clients send, and the connection's
/// extensions (the client certificate's identity).
fn request<T>(msg: T, headers: &HeaderMap, extensions: http::Extensions) -> tonic::Request<T> {
    let mut metadata = MetadataMap::new();
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| MetadataValue::try_from(t).ok())
    {
        metadata.insert("token", token);
    }
    tonic::Request::from_parts(metadata, extensions, msg)
}

/// `/v3/watch`: the body's requests (one JSON object or several) start a
/// watch stream, answered as a stream of `{"result":...}` lines that lasts
/// until the client closes the connection (as grpc-gateway streams it).
fn watch(
    etcd: &Etcd,
    headers: &HeaderMap,
    extensions: http::Extensions,
    body: &[u8],
) -> Response<Body> {
    use futures::StreamExt;
    let requests = match requests::<pb::WatchRequest>(body) {
        Ok(r) => r,
        Err(status) => return error_reply(&status),
    };
    let req = request((), headers, extensions);
    let who = match etcd.who(&req) {
        Ok(who) => who,
        Err(status) => return error_reply(&status),
    };
    // The requests, then an input that stays open: the stream ends when the
    // client goes (the response body is dropped).
    let input =
        futures::stream::iter(requests.into_iter().map(Ok)).chain(futures::stream::pending());
    let responses = match etcd.watch_stream(who, false, input) {
        Ok(s) => s,
        Err(status) => return error_reply(&status),
    };
    #[derive(Serialize)]
    struct Line {
        result: pb::WatchResponse,
    }
    #[derive(Serialize)]
    struct StreamError {
        grpc_code: i32,
        http_code: u16,
        message: String,
        http_status: String,
    }
    let lines = responses.map(|r| {
        let mut line = match r {
            Ok(result) => serde_json::to_vec(&Line { result }),
            Err(status) => {
                let http = http_status(status.code());
                serde_json::to_vec(&serde_json::json!({ "error": StreamError {
                    grpc_code: status.code() as i32,
                    http_code: http.as_u16(),
                    message: status.message().to_string(),
                    http_status: http.canonical_reason().unwrap_or("").to_string(),
                }}))
            }
        }
        .unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(line)))
    });
    let mut r = Response::new(Body::new(http_body_util::StreamBody::new(lines)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `/v3/lease/keepalive`: each request of the body (one JSON object or
/// several) renews its lease; a `{"result":...}` line answers each.
async fn keep_alive(
    etcd: &Etcd,
    headers: &HeaderMap,
    extensions: http::Extensions,
    body: &[u8],
) -> Response<Body> {
    let requests = match requests::<pb::LeaseKeepAliveRequest>(body) {
        Ok(r) => r,
        Err(status) => return error_reply(&status),
    };
    let who = match etcd.who(&request((), headers, extensions)) {
        Ok(who) => who,
        Err(status) => return error_reply(&status),
    };
    #[derive(Serialize)]
    struct Line {
        result: pb::LeaseKeepAliveResponse,
    }
    let mut out = Vec::new();
    for r in requests {
        let result = etcd.keep_alive_once(who.clone(), r.id).await;
        out.extend(serde_json::to_vec(&Line { result }).unwrap_or_default());
        out.push(b'\n');
    }
    json_reply(StatusCode::OK, out)
}

/// Answers one gateway call.
pub(crate) async fn answer(
    etcd: &Etcd,
    path: &str,
    headers: &HeaderMap,
    extensions: http::Extensions,
    body: &[u8],
) -> Response<Body> {
    let path = path.strip_prefix("/v3beta").map_or(path, |rest| rest);
    let path = path.strip_prefix("/v3").unwrap_or(path);
    macro_rules! call {
        ($method:ident, $ty:ty) => {{
            match parse::<$ty>(body) {
                Ok(msg) => reply(etcd.$method(request(msg, headers, extensions)).await),
                Err(status) => error_reply(&status),
            }
        }};
    }
    match path {
        "/kv/range" => call!(range, pb::RangeRequest),
        "/kv/put" => call!(put, pb::PutRequest),
        "/kv/deleterange" => call!(delete_range, pb::DeleteRangeRequest),
        "/kv/txn" => call!(txn, pb::TxnRequest),
        "/kv/compaction" => call!(compact, pb::CompactionRequest),
        "/lease/grant" => call!(lease_grant, pb::LeaseGrantRequest),
        "/lease/revoke" | "/kv/lease/revoke" => call!(lease_revoke, pb::LeaseRevokeRequest),
        "/lease/timetolive" | "/kv/lease/timetolive" => {
            call!(lease_time_to_live, pb::LeaseTimeToLiveRequest)
        }
        "/lease/leases" | "/kv/lease/leases" => call!(lease_leases, pb::LeaseLeasesRequest),
        "/cluster/member/list" => call!(member_list, pb::MemberListRequest),
        "/cluster/member/add" => call!(member_add, pb::MemberAddRequest),
        "/cluster/member/remove" => call!(member_remove, pb::MemberRemoveRequest),
        "/cluster/member/update" => call!(member_update, pb::MemberUpdateRequest),
        "/cluster/member/promote" => call!(member_promote, pb::MemberPromoteRequest),
        "/maintenance/status" => call!(status, pb::StatusRequest),
        "/maintenance/alarm" => call!(alarm, pb::AlarmRequest),
        "/maintenance/defragment" => call!(defragment, pb::DefragmentRequest),
        "/maintenance/hash" => call!(hash, pb::HashRequest),
        "/maintenance/transfer-leadership" => call!(move_leader, pb::MoveLeaderRequest),
        "/auth/authenticate" => call!(authenticate, pb::AuthenticateRequest),
        "/auth/enable" => call!(auth_enable, pb::AuthEnableRequest),
        "/auth/disable" => call!(auth_disable, pb::AuthDisableRequest),
        "/auth/user/add" => call!(user_add, pb::AuthUserAddRequest),
        "/auth/user/get" => call!(user_get, pb::AuthUserGetRequest),
        "/auth/user/list" => call!(user_list, pb::AuthUserListRequest),
        "/auth/user/delete" => call!(user_delete, pb::AuthUserDeleteRequest),
        "/auth/user/changepw" => call!(user_change_password, pb::AuthUserChangePasswordRequest),
        "/auth/user/grant" => call!(user_grant_role, pb::AuthUserGrantRoleRequest),
        "/auth/user/revoke" => call!(user_revoke_role, pb::AuthUserRevokeRoleRequest),
        "/auth/role/add" => call!(role_add, pb::AuthRoleAddRequest),
        "/auth/role/get" => call!(role_get, pb::AuthRoleGetRequest),
        "/auth/role/list" => call!(role_list, pb::AuthRoleListRequest),
        "/auth/role/delete" => call!(role_delete, pb::AuthRoleDeleteRequest),
        "/auth/role/grant" => call!(role_grant_permission, pb::AuthRoleGrantPermissionRequest),
        "/auth/role/revoke" => call!(role_revoke_permission, pb::AuthRoleRevokePermissionRequest),
        // A stream on gRPC: here the body's requests, a `{"result":...}`
        // line each.
        "/lease/keepalive" => keep_alive(etcd, headers, extensions, body).await,
        "/watch" => watch(etcd, headers, extensions, body),
        // grpc-gateway's answer to a path it has no route for.
        _ => crate::http_reply::reply(StatusCode::NOT_FOUND, "text/plain", "Not Found\n"),
    }
}
