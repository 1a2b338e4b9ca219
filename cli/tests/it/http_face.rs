//! etcd's HTTP face on the client port, side by side with a real etcd 3.4:
//! the same requests over plain HTTP/1.1, the same answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// The metric names a scrape shows (no comments, no labels, no values).
fn metric_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split([' ', '{']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn health_version_and_metrics_answer_as_etcds_do() {
    let (_etcd, etcd_port) = real_etcd();
    let (_d, client, agent) = member(&[]);

    for path in [
        "/health",
        "/health?exclude=NOSPACE",
        "/health?serializable=true",
    ] {
        let want = get(etcd_port, path);
        assert_eq!(
            want,
            (200, r#"{"health":"true"}"#.to_string()),
            "etcd {path}"
        );
        assert_eq!(get(client, path), want, "{path}");
    }
    let (status, etcd_version) = get(etcd_port, "/version");
    assert_eq!(status, 200);
    let etcd_version: serde_json::Value = serde_json::from_str(&etcd_version).unwrap();
    let (status, version) = get(client, "/version");
    assert_eq!(status, 200);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    // Gateway clients pick their API prefix from etcdcluster.
    assert_eq!(version["etcdcluster"], etcd_version["etcdcluster"]);
    assert_eq!(version["etcdserver"], etcd_version["etcdserver"]);
    assert!(version["mgmt"].is_string(), "{version}");

    // Every name etcd's dashboards read here is there, with etcd's name,
    // and promtool accepts the page (etcd's own it does not: it declares
    // counters as gauges).
    let (status, ours) = get(client, "/metrics");
    assert_eq!(status, 200);
    let checked = piped("promtool", &["check", "metrics"], ours.as_bytes());
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (_, theirs) = get(etcd_port, "/metrics");
    let (ours, theirs) = (metric_names(&ours), metric_names(&theirs));
    for name in [
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_disk_wal_fsync_duration_seconds_bucket",
        "etcd_disk_wal_fsync_duration_seconds_sum",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(theirs.iter().any(|n| n == name), "etcd lacks {name}");
        assert!(ours.iter().any(|n| n == name), "mgmt lacks {name}");
    }
    // etcd shows peer round trips only once it has a peer; ours is there.
    assert!(
        ours.iter()
            .any(|n| n == "etcd_network_peer_round_trip_time_seconds_bucket")
    );
    // etcd 3.5.11's probes (3.4 has none).
    assert_eq!(get(client, "/livez"), (200, "ok".to_string()));
    let (status, ready) = get(client, "/readyz?verbose");
    assert_eq!(status, 200);
    assert!(ready.contains("[+]linearizable_read ok"), "{ready}");
    assert!(ready.ends_with("readyz check passed\n"), "{ready}");
    // gRPC still answers on the same port.
    etcdctl(client, &["put", "k", "v"]);
    assert_eq!(
        etcdctl(client, &["get", "k", "--print-value-only"]).trim(),
        "v"
    );
    assert!(agent.terminate().success());
}

#[test]
fn health_fails_on_an_alarm_unless_it_is_excluded() {
    let (_d, client, agent) = member(&["--quota-backend-bytes", "8192"]);
    let value = "x".repeat(1024);
    for i in 0..16 {
        if try_etcdctl(client, &["put", &format!("k{i}"), &value]).is_none() {
            break;
        }
    }
    assert!(
        etcdctl(client, &["alarm", "list"]).contains("NOSPACE"),
        "the quota raised no alarm"
    );
    assert_eq!(
        get(client, "/health"),
        (503, r#"{"health":"false"}"#.to_string())
    );
    assert_eq!(
        get(client, "/health?exclude=NOSPACE"),
        (200, r#"{"health":"true"}"#.to_string())
    );
    assert!(agent.terminate().success());
}

/// A gateway answer with what differs between two clusters made equal: ids,
/// revisions, terms, a lease's remaining TTL, and a JSON parser's wording.
fn normalized(body: &str) -> serde_json::Value {
    use serde_json::Value;
    fn walk(v: &mut Value, key: &str) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    walk(v, k);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| walk(v, key)),
            Value::String(_) | Value::Number(_)
                if matches!(
                    key,
                    "cluster_id"
                        | "member_id"
                        | "revision"
                        | "raft_term"
                        | "create_revision"
                        | "mod_revision"
                        | "hash"
                ) =>
            {
                *v = Value::String("N".into())
            }
            _ => {}
        }
    }
    // A stream's answer is one JSON value a line.
    let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .collect();
    let mut v = match values {
        Ok(mut vs) if vs.len() == 1 => vs.remove(0),
        Ok(vs) => Value::Array(vs),
        Err(_) => return Value::String(body.trim().to_string()),
    };
    walk(&mut v, "");
    v
}

/// Base64, as the gateway spells bytes.
fn b64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_json_gateway_answers_as_etcd_34s_does() {
    let (_etcd, etcd_port) = real_etcd();
    let (_d, client, agent) = member(&[]);
    let (foo, bar, baz) = (b64("foo"), b64("bar"), b64("baz"));
    let session: Vec<(&str, String)> = vec![
        (
            "/v3/kv/put",
            format!(r#"{{"key":"{foo}","value":"{bar}"}}"#),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{foo}"}}"#)),
        (
            "/v3beta/kv/range",
            format!(r#"{{"key":"{foo}","serializable":true}}"#),
        ),
        ("/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64("none"))),
        (
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"key":"{foo}","result":"EQUAL","target":"VALUE","value":"{bar}"}}],"success":[{{"request_put":{{"key":"{foo}","value":"{baz}","prev_kv":true}}}},{{"request_range":{{"key":"{foo}"}}}}]}}"#
            ),
        ),
        (
            "/v3/kv/txn",
            format!(
                r#"{{"compare":[{{"key":"{foo}","result":"EQUAL","target":"CREATE","create_revision":"0"}}],"failure":[{{"request_delete_range":{{"key":"{foo}","prev_kv":true}}}}]}}"#
            ),
        ),
        ("/v3/lease/grant", r#"{"TTL":60,"ID":7}"#.to_string()),
        ("/v3/lease/keepalive", "{\"ID\":7}\n{\"ID\":7}".to_string()),
        ("/v3/kv/lease/leases", "{}".to_string()),
        ("/v3/lease/revoke", r#"{"ID":7}"#.to_string()),
        ("/v3/lease/keepalive", r#"{"ID":7}"#.to_string()),
        ("/v3/kv/lease/revoke", r#"{"ID":7}"#.to_string()),
        ("/v3/maintenance/alarm", r#"{"action":"GET"}"#.to_string()),
        ("/v3/maintenance/hash", "{}".to_string()),
        ("/v3/auth/role/add", r#"{"name":"r1"}"#.to_string()),
        ("/v3/auth/role/list", "{}".to_string()),
        (
            "/v3/auth/user/add",
            r#"{"name":"u1","password":"p"}"#.to_string(),
        ),
        (
            "/v3/auth/user/grant",
            r#"{"user":"u1","role":"r1"}"#.to_string(),
        ),
        ("/v3/auth/user/get", r#"{"name":"u1"}"#.to_string()),
        (
            "/v3/auth/role/grant",
            format!(
                r#"{{"name":"r1","perm":{{"permType":"READWRITE","key":"{foo}","range_end":"{bar}"}}}}"#
            ),
        ),
        ("/v3/auth/role/get", r#"{"role":"r1"}"#.to_string()),
        (
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"x"}"#.to_string(),
        ),
        ("/v3/kv/nothing", "{}".to_string()),
    ];
    for (path, body) in &session {
        let (want_status, want) = http(etcd_port, "POST", path, body);
        let (status, got) = http(client, "POST", path, body);
        if path.ends_with("/leases") {
            // The agent holds leases of its own (its liveness key): ours
            // must be among them.
            let ids = |b: &str| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                v["leases"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["ID"].clone())
                    .collect::<Vec<_>>()
            };
            assert_eq!((status, want_status), (200, 200));
            assert!(ids(&got).contains(&serde_json::json!("7")), "{got}");
            assert_eq!(ids(&want), [serde_json::json!("7")]);
            continue;
        }
        assert_eq!(status, want_status, "{path} {body}: {got} vs etcd's {want}");
        assert_eq!(
            normalized(&got),
            normalized(&want),
            "{path} {body}\n mgmt: {got}\n etcd: {want}"
        );
    }
    // Bad JSON: the same status and code (the parser's words differ).
    let (status, got) = http(client, "POST", "/v3/kv/range", "{bad");
    let (want_status, want) = http(etcd_port, "POST", "/v3/kv/range", "{bad");
    assert_eq!((status, want_status), (400, 400));
    let code = |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap()["code"].clone();
    assert_eq!(code(&got), code(&want));
    // Cluster and status: the same fields (their values are each cluster's).
    for path in ["/v3/cluster/member/list", "/v3/maintenance/status"] {
        let keys = |b: &str| {
            let v: serde_json::Value = serde_json::from_str(b).unwrap();
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let (_, got) = http(client, "POST", path, "{}");
        let (_, want) = http(etcd_port, "POST", path, "{}");
        assert_eq!(keys(&got), keys(&want), "{path}: {got} vs {want}");
    }
    assert!(agent.terminate().success());
}

#[test]
fn the_gateway_applies_auth_as_grpc_does() {
    let (_etcd, etcd_port) = real_etcd();
    let (_d, client, agent) = member(&[]);
    let mut answers = Vec::new();
    for port in [client, etcd_port] {
        let _ = try_etcdctl(port, &["user", "add", "root:rootpw"]);
        let _ = try_etcdctl(port, &["auth", "enable"]);
        let (status, body) = http(
            port,
            "POST",
            "/v3/auth/authenticate",
            r#"{"name":"root","password":"rootpw"}"#,
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let token = v["token"].as_str().unwrap().to_string();
        let put = r#"{"key":"YQ==","value":"Yg=="}"#;
        answers.push([
            http(port, "POST", "/v3/kv/put", put),
            http_as(port, Some(&token), "POST", "/v3/kv/put", put),
            http_as(port, Some("bogus"), "POST", "/v3/kv/put", put),
            http(
                port,
                "POST",
                "/v3/auth/authenticate",
                r#"{"name":"root","password":"wrong"}"#,
            ),
        ]);
    }
    let statuses = |a: &[(u16, String)]| a.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert_eq!(statuses(&answers[0]), [400, 200, 401, 400]);
    assert_eq!(statuses(&answers[0]), statuses(&answers[1]));
    for ((_, ours), (_, theirs)) in answers[0].iter().zip(&answers[1]) {
        assert_eq!(normalized(ours), normalized(theirs), "{ours} vs {theirs}");
    }
    assert!(agent.terminate().success());
}

/// `POST /v3/watch` with `body`: the stream's `{"result":...}` lines once
/// the watch is created, `during` has run, and `events` events have come (a
/// busy server may batch several in one line). The stream itself never
/// ends: the connection is dropped.
fn watch_lines(port: u16, body: &str, events: usize, during: impl FnOnce()) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v3/watch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let lines = |raw: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(raw).into_owned();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        dechunk(body)
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
            .map(|l| l.trim_end().to_string())
            .collect()
    };
    let seen = |lines: &[String]| -> usize {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["result"]["events"].as_array().map_or(0, Vec::len))
            .sum()
    };
    let mut read_until = |raw: &mut Vec<u8>, done: &dyn Fn(&[String]) -> bool| {
        let mut buf = [0u8; 4096];
        while !done(&lines(raw)) {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => raw.extend_from_slice(&buf[..n]),
                other => panic!("the watch stream on {port} ended early: {other:?}"),
            }
        }
    };
    read_until(&mut raw, &|l| !l.is_empty());
    during();
    read_until(&mut raw, &|l| seen(l) >= events);
    lines(&raw)
}

#[test]
fn a_gateway_watch_streams_events_as_etcds_does() {
    let (_etcd, etcd_port) = real_etcd();
    let (_d, client, agent) = member(&[]);
    let create = format!(
        r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
        b64("wk"),
        b64("wl")
    );
    let streams: Vec<Vec<String>> = [client, etcd_port]
        .into_iter()
        .map(|port| {
            watch_lines(port, &create, 2, || {
                let put = format!(r#"{{"key":"{}","value":"{}"}}"#, b64("wk1"), b64("1"));
                assert_eq!(http(port, "POST", "/v3/kv/put", &put).0, 200);
                let del = format!(r#"{{"key":"{}"}}"#, b64("wk1"));
                assert_eq!(http(port, "POST", "/v3/kv/deleterange", &del).0, 200);
            })
        })
        .collect();
    // The created line, then the put and the delete (a busy server may put
    // both events in one line: compared event by event).
    let events = |lines: &[String]| -> (serde_json::Value, Vec<serde_json::Value>) {
        let first = normalized(&lines[0]);
        let rest = lines[1..]
            .iter()
            .flat_map(|l| {
                let v = normalized(l);
                v["result"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        (first, rest)
    };
    assert!(
        !streams[0].is_empty() && !streams[1].is_empty(),
        "{streams:?}"
    );
    let (ours, theirs) = (events(&streams[0]), events(&streams[1]));
    assert_eq!(theirs.1.len(), 2, "etcd: {:?}", streams[1]);
    assert_eq!(ours, theirs, "mgmt {:?}\netcd {:?}", streams[0], streams[1]);
    assert!(agent.terminate().success());
}

/// Python's http.client (HTTP/1.1 only, as urllib3-based gateway clients
/// such as Patroni) over TLS: `GET /health` and a gateway put, with the
/// operator's client certificate and without one.
const TLS_CLIENT: &str = r#"
import http.client, json, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
def call(cert, method, path, body=None):
    ctx = ssl.create_default_context(cafile=d + "/ca.crt")
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["http/1.1"])
    if cert:
        ctx.load_cert_chain(d + "/root.crt", d + "/root.key")
    try:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        c.request(method, path, body=body)
        r = c.getresponse()
        return [r.status, r.read().decode()]
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return ["refused", type(e).__name__]
print(json.dumps([
    call(True, "GET", "/health"),
    call(True, "POST", "/v3/kv/put", '{"key":"YQ==","value":"Yg=="}'),
    call(False, "GET", "/health"),
]))
"#;

#[test]
fn http_11_clients_get_the_face_over_tls_with_client_certificates() {
    let d = tempfile::tempdir().unwrap();
    let pki = crate::cluster::tls_init(d.path(), "pki", "h1");
    let tls = crate::cluster::agent_tls(&pki, "h1");
    let client = free_port();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--file".into(),
        write(d.path(), "g.yaml", "graph: g\n"),
        "--hostname".into(),
        "h1".into(),
        "--prefix".into(),
        d.path().join("state").to_string_lossy().into_owned(),
        "--client-urls".into(),
        format!("https://127.0.0.1:{client}"),
        "--peer-urls".into(),
        format!("https://127.0.0.1:{}", free_port()),
    ];
    args.extend(tls);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Agent::start(&args);
    agent.wait_for_line("running graph", Duration::from_secs(20));
    let out = std::process::Command::new("python3")
        .args(["-c", TLS_CLIENT, &client.to_string(), pki.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers[0], serde_json::json!([200, r#"{"health":"true"}"#]));
    assert_eq!(answers[1][0], 200, "{answers}");
    // --client-cert-auth: no certificate, no HTTP either.
    assert_eq!(answers[2][0], "refused", "{answers}");
    assert!(agent.terminate().success());
}
