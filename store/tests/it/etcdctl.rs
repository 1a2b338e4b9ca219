//! Stock etcdctl 3.4 against the embedded store.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_put_get_prefix_json_del() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("host-a", dir.path()).await;
    let ep = endpoint(&h);
    assert_eq!(
        etcdctl_ok(&ep, &["put", "/_mgmt/idealClusterSize", "3"])
            .await
            .trim(),
        "OK"
    );
    assert_eq!(
        etcdctl_ok(&ep, &["get", "/_mgmt/idealClusterSize"]).await,
        "/_mgmt/idealClusterSize\n3\n"
    );
    etcdctl_ok(&ep, &["put", "/_mgmt/volunteers/h1", "http://h1:2380"]).await;
    etcdctl_ok(&ep, &["put", "/_mgmt/volunteers/h2", "http://h2:2380"]).await;
    etcdctl_ok(&ep, &["put", "/other", "x"]).await;
    let out = etcdctl_ok(&ep, &["get", "--prefix", "/_mgmt/volunteers/"]).await;
    assert_eq!(
        out,
        "/_mgmt/volunteers/h1\nhttp://h1:2380\n/_mgmt/volunteers/h2\nhttp://h2:2380\n"
    );
    let keys = etcdctl_ok(&ep, &["get", "--prefix", "--keys-only", "/_mgmt/"]).await;
    assert!(
        keys.contains("/_mgmt/volunteers/h2") && !keys.contains("http://"),
        "{keys}"
    );

    let json = etcdctl_ok(&ep, &["get", "-w", "json", "/_mgmt/idealClusterSize"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["header"]["member_id"].as_u64(), Some(h.id()));
    assert_eq!(v["kvs"][0]["key"], "L19tZ210L2lkZWFsQ2x1c3RlclNpemU="); // base64
    assert_eq!(v["kvs"][0]["version"], 1);
    assert!(v["header"]["revision"].as_i64().unwrap() >= 5);

    assert_eq!(
        etcdctl_ok(&ep, &["del", "--prefix", "/_mgmt/volunteers/"])
            .await
            .trim(),
        "2"
    );
    assert_eq!(
        etcdctl_ok(&ep, &["get", "--prefix", "/_mgmt/volunteers/"]).await,
        ""
    );
    assert_eq!(etcdctl_ok(&ep, &["del", "/nothing"]).await.trim(), "0");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch_prefix_sees_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("host-w", dir.path()).await;
    let ep = endpoint(&h);
    let json = etcdctl_ok(&ep, &["get", "-w", "json", "x"]).await;
    let rev = serde_json::from_str::<serde_json::Value>(&json).unwrap()["header"]["revision"]
        .as_i64()
        .unwrap();
    // Start from the next revision, so events written before the watch is
    // established are replayed from history: no race with the puts below.
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").args([
        "--endpoints",
        &ep,
        "watch",
        "--prefix",
        "/w/",
        &format!("--rev={}", rev + 1),
    ]);
    let mut watch = LineChild::spawn(cmd);
    etcdctl_ok(&ep, &["put", "/w/a", "1"]).await;
    etcdctl_ok(&ep, &["put", "/elsewhere", "no"]).await;
    etcdctl_ok(&ep, &["del", "/w/a"]).await;
    let t = Duration::from_secs(20);
    assert_eq!(watch.wait_line(t, |l| l == "PUT").1, "PUT");
    assert_eq!(watch.wait_line(t, |_| true).1, "/w/a");
    assert_eq!(watch.wait_line(t, |_| true).1, "1");
    let (between, del) = watch.wait_line(t, |l| l == "DELETE");
    assert!(between.is_empty(), "unexpected lines {between:?}");
    assert_eq!(del, "DELETE");
    assert_eq!(watch.wait_line(t, |_| true).1, "/w/a");
    watch.kill();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease_grant_keepalive_ttl_revoke_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("host-l", dir.path()).await;
    let ep = endpoint(&h);
    // "lease 694d5765fc71500b granted with TTL(60s)"
    let out = etcdctl_ok(&ep, &["lease", "grant", "60"]).await;
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(out.contains("granted with TTL(60s)"), "{out}");
    let out = etcdctl_ok(&ep, &["lease", "keep-alive", "--once", &id]).await;
    assert!(
        out.contains(&format!("lease {id} keepalived with TTL(60)")),
        "{out}"
    );
    etcdctl_ok(&ep, &["put", "--lease", &id, "/leased", "v"]).await;
    let out = etcdctl_ok(&ep, &["lease", "timetolive", "--keys", &id]).await;
    assert!(
        out.contains("granted with TTL(60s)") && out.contains("attached keys([/leased])"),
        "{out}"
    );
    let out = etcdctl_ok(&ep, &["lease", "list"]).await;
    assert!(out.contains(&id), "{out}");
    let out = etcdctl_ok(&ep, &["lease", "revoke", &id]).await;
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(etcdctl_ok(&ep, &["get", "/leased"]).await, "");
    let out = etcdctl_ok(&ep, &["lease", "timetolive", &id]).await;
    assert!(out.contains("already expired"), "{out}");
    // A put with an unknown lease is refused with etcd's message.
    let out = etcdctl(&ep, &["put", "--lease", &id, "/x", "v"], None).await;
    assert!(
        !out.ok && out.stderr.contains("requested lease not found"),
        "{}",
        out.stderr
    );

    // Expiry: a 1 s lease takes its key with it, through the leader's timer.
    let out = etcdctl_ok(&ep, &["lease", "grant", "1"]).await;
    let short = out.split_whitespace().nth(1).unwrap().to_string();
    etcdctl_ok(&ep, &["put", "--lease", &short, "/short", "v"]).await;
    eventually(Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            etcdctl_ok(&ep, &["get", "/short"])
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_txn_interactive() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("host-t", dir.path()).await;
    let ep = endpoint(&h);
    etcdctl_ok(&ep, &["put", "k", "v1"]).await;
    // compares, blank line, success ops, blank line, failure ops
    let script = "value(\"k\") = \"v1\"\n\nput k v2\nput other yes\n\nput k failed\n\n";
    let out = etcdctl(&ep, &["txn"], Some(script)).await;
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout, "SUCCESS\n\nOK\n\nOK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "k"]).await, "k\nv2\n");
    let out = etcdctl(&ep, &["txn"], Some(script)).await;
    assert_eq!(out.stdout, "FAILURE\n\nOK\n");
    assert_eq!(etcdctl_ok(&ep, &["get", "k"]).await, "k\nfailed\n");
    // Compaction, then an old revision is refused.
    etcdctl_ok(&ep, &["compaction", "4"]).await;
    let out = etcdctl(&ep, &["get", "--rev=2", "k"], None).await;
    assert!(
        !out.ok && out.stderr.contains("required revision has been compacted"),
        "{}",
        out.stderr
    );
    h.shutdown().await;
}

/// The leader keeps the newest `keep_revisions` of history and compacts the
/// rest once it holds twice as many, as etcd's revision-mode auto-compaction;
/// 0 keeps every revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_compacted_to_the_newest_revisions_kept() {
    for keep in [10, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config("host-h", dir.path());
        c.keep_revisions = keep;
        let h = start_single_with(c).await;
        let ep = endpoint(&h);
        let mut revisions = Vec::new();
        for i in 0..25 {
            revisions.push(h.put(b"k", format!("v{i}").as_bytes()).await.unwrap());
        }
        let get_at = |rev: i64| {
            let ep = ep.clone();
            async move {
                let rev = format!("--rev={rev}");
                etcdctl(&ep, &["get", &rev, "--print-value-only", "k"], None).await
            }
        };
        // The newest `keep` are there whenever a compaction ran.
        let recent = get_at(revisions[15]).await;
        assert!(recent.ok, "{}", recent.stderr);
        assert_eq!(recent.stdout.trim(), "v15");
        if keep == 0 {
            let first = get_at(revisions[0]).await;
            assert!(first.ok, "{}", first.stderr);
            assert_eq!(first.stdout.trim(), "v0");
        } else {
            eventually(Duration::from_secs(10), || async {
                let first = get_at(revisions[0]).await;
                (!first.ok
                    && first
                        .stderr
                        .contains("required revision has been compacted"))
                .then_some(())
            })
            .await;
        }
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_member_list_endpoint_status_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("myhost", dir.path()).await;
    let ep = endpoint(&h);
    let out = etcdctl_ok(&ep, &["member", "list"]).await;
    // "ID, started, name, peer URLs, client URLs, is learner"
    let want = format!(
        "{:x}, started, myhost, {}, {}, false\n",
        h.id(),
        h.peer_urls()[0],
        h.client_urls()[0]
    );
    assert_eq!(out, want);
    let out = etcdctl_ok(&ep, &["endpoint", "status"]).await;
    assert!(
        out.contains(&format!("{:x}", h.id())) && out.contains("true"),
        "{out}"
    );
    let out = etcdctl(&ep, &["endpoint", "health"], None).await;
    assert!(out.ok, "{}", out.stderr);
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("is healthy"),
        "{}",
        out.stderr
    );
    let out = etcdctl(
        &ep,
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
        None,
    )
    .await;
    assert!(
        !out.ok
            && out
                .stderr
                .contains("membership follows /_mgmt/idealClusterSize"),
        "{}",
        out.stderr
    );
    h.shutdown().await;
}

/// etcdctl dials `--cluster` endpoints by their advertised URLs, scheme and
/// all, and sends that as the HTTP/2 `:authority`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_endpoints_with_a_scheme_work() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("myhost", dir.path()).await;
    let url = h.client_urls()[0].clone();
    assert!(url.starts_with("http://"), "{url}");
    etcdctl_ok(&url, &["put", "a", "1"]).await;
    assert_eq!(
        etcdctl_ok(&url, &["get", "--print-value-only", "a"]).await,
        "1\n"
    );
    let out = etcdctl_ok(&endpoint(&h), &["endpoint", "status", "--cluster"]).await;
    assert!(out.starts_with(&format!("{url}, {:x}, ", h.id())), "{out}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_request_limits_hold_with_etcds_errors() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("myhost", dir.path()).await;
    let ep = endpoint(&h);
    // 1.5 MiB is the default limit: 1 MiB passes.
    let big = |n: usize| "v".repeat(n);
    // The value on stdin: one argument may not exceed 128 KiB.
    let out = etcdctl(&ep, &["put", "k"], Some(&big(1 << 20))).await;
    assert!(out.ok, "{}", out.stderr);
    // 1.8 MiB: over the server's limit, under etcdctl's own 2 MiB.
    let out = etcdctl(&ep, &["put", "k"], Some(&big(1_887_436))).await;
    assert!(
        !out.ok && out.stderr.contains("etcdserver: request is too large"),
        "{}",
        out.stderr
    );
    // A txn of 129 puts: one over etcd's --max-txn-ops.
    let ops: String = (0..129).map(|i| format!("put k{i} v\n")).collect();
    let out = etcdctl(&ep, &["txn"], Some(&format!("\n{ops}\n\n"))).await;
    assert!(
        !out.ok && out.stderr.contains("too many operations in txn request"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let ops: String = (0..128).map(|i| format!("put k{i} v\n")).collect();
    let out = etcdctl(&ep, &["txn"], Some(&format!("\n{ops}\n\n"))).await;
    assert!(
        out.ok && out.stdout.starts_with("SUCCESS"),
        "{}",
        out.stderr
    );
    h.shutdown().await;
}

/// etcd's quota: once full, the member raises NOSPACE; puts fail, deletes
/// and compaction work; `alarm disarm` lets writes in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_raises_nospace_until_compacted_and_disarmed() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config("myhost", dir.path());
    c.limits.quota_backend_bytes = 64 * 1024;
    let h = mgmt_store::Store::start_single(c).await.unwrap();
    h.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let ep = endpoint(&h);
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]).await, "");
    let value = "x".repeat(10_000);
    let mut refused = None;
    for i in 0..20 {
        let out = etcdctl(&ep, &["put", "k", &value], None).await;
        if !out.ok {
            refused = Some((i, out.stderr));
            break;
        }
    }
    let (i, err) = refused.expect("the quota is reached");
    assert!(i >= 4, "refused after {i} puts");
    assert!(
        err.contains("etcdserver: mvcc: database space exceeded"),
        "{err}"
    );
    let alarm = format!("memberID:{} alarm:NOSPACE \n", h.id());
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]).await, alarm);
    let status = etcdctl_ok(&ep, &["endpoint", "status"]).await;
    assert!(status.contains("alarm:NOSPACE"), "{status}");
    // Still refused while armed, even with room made.
    let rev: serde_json::Value =
        serde_json::from_str(&etcdctl_ok(&ep, &["get", "k", "-w", "json"]).await).unwrap();
    let rev = rev["header"]["revision"].as_i64().unwrap().to_string();
    etcdctl_ok(&ep, &["compact", &rev]).await;
    assert!(!etcdctl(&ep, &["put", "small", "1"], None).await.ok);
    assert_eq!(etcdctl_ok(&ep, &["alarm", "disarm"]).await, alarm);
    assert_eq!(etcdctl_ok(&ep, &["alarm", "list"]).await, "");
    etcdctl_ok(&ep, &["put", "small", "1"]).await;
    h.shutdown().await;
}

/// `etcdctl snapshot save`, then `mgmt restore` (the store's
/// `restore_snapshot`): a new member starts a new cluster with the keys and
/// revisions of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_restores_into_a_new_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("old", dir.path()).await;
    let ep = endpoint(&h);
    etcdctl_ok(&ep, &["put", "k1", "v1"]).await;
    etcdctl_ok(&ep, &["put", "k2", "v2"]).await;
    let before = etcdctl_ok(&ep, &["get", "--prefix", "k", "-w", "fields"]).await;
    let file = dir.path().join("snap.db");
    let out = etcdctl_ok(&ep, &["snapshot", "save", file.to_str().unwrap()]).await;
    assert!(out.contains("Snapshot saved at"), "{out}");
    h.shutdown().await;

    let fresh = config("new", &dir.path().join("restored"));
    mgmt_store::restore_snapshot(&fresh, &file).expect("restores");
    // A second restore over the state it made is refused.
    let h = mgmt_store::Store::start_single(fresh.clone())
        .await
        .unwrap();
    h.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    let ep = endpoint(&h);
    let after = etcdctl_ok(&ep, &["get", "--prefix", "k", "-w", "fields"]).await;
    let kvs = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("\"ClusterID\"") && !l.starts_with("\"MemberID\""))
            .filter(|l| !l.starts_with("\"Revision\"") && !l.starts_with("\"RaftTerm\""))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(kvs(&after), kvs(&before));
    h.shutdown().await;
    let err = mgmt_store::restore_snapshot(&fresh, &file).unwrap_err();
    assert!(
        err.to_string().contains("already holds store state"),
        "{err}"
    );
    // A damaged file is refused before anything is written.
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let other = config("other", &dir.path().join("other"));
    let err = mgmt_store::restore_snapshot(&other, &file).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_an_error_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("first", dir.path()).await;
    let mut c = config("second", dir.path());
    c.client_urls = vec!["http://127.0.0.1:0".into()];
    c.peer_urls = vec![h.peer_urls()[0].clone()];
    let err = match mgmt_store::Store::start_single(c).await {
        Err(e) => e,
        Ok(_) => panic!("second store bound a used port"),
    };
    let msg = err.to_string();
    assert!(msg.contains(&h.peer_urls()[0]), "{msg}");
    // Nothing of the failed store stayed: its data dir was never created.
    assert!(!dir.path().join("second").exists());
    h.shutdown().await;
}

#[test]
fn url_lists_parse_with_commas_and_semicolons() {
    let urls =
        mgmt_store::parse_urls("http://127.0.0.1:2379;127.0.0.2:2379, http://[::1]:1").unwrap();
    assert_eq!(
        urls,
        vec![
            "http://127.0.0.1:2379",
            "http://127.0.0.2:2379",
            "http://[::1]:1"
        ]
    );
    assert_eq!(
        mgmt_store::parse_urls("https://127.0.0.1:1").unwrap(),
        ["https://127.0.0.1:1"]
    );
    assert!(mgmt_store::parse_urls("ftp://127.0.0.1:1").is_err());
    assert!(mgmt_store::parse_urls("nonsense").is_err());
}
