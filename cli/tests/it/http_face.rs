//! etcd's HTTP face on the client port, side by side with a real etcd 3.4:
//! the same requests over plain HTTP/1.1, the same answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// `GET path` over HTTP/1.1 on a fresh connection: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The metric names a scrape shows (no comments, no labels, no values).
fn metric_names(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split([' ', '{']).next())
        .map(str::to_string)
        .collect()
}

/// One agent serving its store on a free loopback port, with `extra` flags:
/// its state directory, its client port and the agent.
fn member(extra: &[&str]) -> (tempfile::TempDir, u16, Agent) {
    let d = tempfile::tempdir().unwrap();
    let client = free_port();
    let g = write(d.path(), "g.yaml", "graph: g\n");
    let (prefix, client_url, peer_url) = (
        d.path().join("state").to_string_lossy().into_owned(),
        format!("http://127.0.0.1:{client}"),
        format!("http://127.0.0.1:{}", free_port()),
    );
    let mut args = vec![
        "run",
        "--file",
        &g,
        "--hostname",
        "h1",
        "--prefix",
        &prefix,
        "--client-urls",
        &client_url,
        "--peer-urls",
        &peer_url,
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.wait_for_line("running graph", Duration::from_secs(20));
    (d, client, agent)
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

    // Every name etcd's dashboards read here is there, with etcd's name.
    let (status, ours) = get(client, "/metrics");
    assert_eq!(status, 200);
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
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(theirs.iter().any(|n| n == name), "etcd lacks {name}");
        assert!(ours.iter().any(|n| n == name), "mgmt lacks {name}");
    }
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
