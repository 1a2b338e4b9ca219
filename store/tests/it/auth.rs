//! etcd's authentication guide, as one etcdctl session, against a real etcd
//! 3.4 and against the embedded store: the outputs are the same.

use crate::common::*;

/// Each command's exit status and output, with etcdctl's own retry logs
/// (timestamps, addresses) left out.
async fn session(endpoint: &str) -> Vec<String> {
    let steps: &[&[&str]] = &[
        &["user", "add", "root:rootpw"],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "/foo"],
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "readwrite",
            "/app/",
        ],
        &["role", "get", "reader"],
        &["user", "add", "alice:alicepw"],
        &["user", "grant-role", "alice", "reader"],
        &["user", "get", "alice"],
        &["user", "list"],
        &["role", "list"],
        &["user", "add", "alice:again"],
        &["put", "/foo", "bar"],
        &["auth", "enable"],
        &["get", "/foo"],
        &["put", "/foo", "nobody"],
        &["--user", "alice:alicepw", "get", "/foo"],
        &["--user", "alice:alicepw", "put", "/foo", "x"],
        &["--user", "alice:alicepw", "put", "/app/x", "1"],
        &["--user", "alice:alicepw", "get", "--prefix", "/app/"],
        &["--user", "alice:alicepw", "user", "list"],
        &["--user", "alice:wrong", "get", "/foo"],
        &["--user", "root:rootpw", "put", "/foo", "baz"],
        &[
            "--user",
            "root:rootpw",
            "role",
            "revoke-permission",
            "reader",
            "/foo",
        ],
        &["--user", "alice:alicepw", "get", "/foo"],
        &["--user", "root:rootpw", "user", "delete", "root"],
        &[
            "--user",
            "root:rootpw",
            "user",
            "revoke-role",
            "alice",
            "nope",
        ],
        &["--user", "alice:alicepw", "auth", "disable"],
        &["--user", "root:rootpw", "auth", "disable"],
        &["get", "/foo"],
    ];
    let mut out = Vec::new();
    for args in steps {
        let o = etcdctl(endpoint, args, None).await;
        let stderr: Vec<&str> = o.stderr.lines().filter(|l| !l.starts_with('{')).collect();
        out.push(format!(
            "$ etcdctl {}\n[{}]\n{}{}",
            args.join(" "),
            if o.ok { "ok" } else { "failed" },
            o.stdout,
            stderr.join("\n")
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_guide_prints_what_etcd_prints() {
    let etcd = mgmt_store::testing::RealEtcd::start();
    let etcd_url = etcd.client_urls[0].clone();
    let ready = || async { etcdctl(&etcd_url, &["put", "/ready", "1"], None).await.ok };
    let mut started = false;
    for _ in 0..100 {
        if ready().await {
            started = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(started, "etcd did not start");
    let theirs = session(&etcd_url).await;
    drop(etcd);

    let dir = tempfile::tempdir().unwrap();
    let h = start_single("h1", dir.path()).await;
    let ours = session(&endpoint(&h)).await;
    h.shutdown().await;

    for (t, o) in theirs.iter().zip(&ours) {
        assert_eq!(t, o, "\netcd 3.4:\n{t}\n\nmgmt:\n{o}");
    }
    // The session tests something: refusals are in it.
    let all = theirs.join("\n");
    for needle in [
        "Error: etcdserver: user name is empty",
        "Error: etcdserver: permission denied",
        "Error: etcdserver: authentication failed, invalid user ID or password",
        "Authentication Disabled",
    ] {
        assert!(all.contains(needle), "{needle} not in {all}");
    }
}

/// Auth is replicated state: it survives a restart, from the log and from a
/// snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_survives_restarts_from_the_log_and_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let h = start_single("h1", dir.path()).await;
    let ep = endpoint(&h);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["put", "/k", "v"],
        &["auth", "enable"],
    ] {
        etcdctl_ok(&ep, args).await;
    }
    h.shutdown().await;
    for snapshot_first in [false, true] {
        let h = mgmt_store::Store::start_single(config("h1", dir.path()))
            .await
            .expect("restarts");
        h.wait_for_leader(std::time::Duration::from_secs(10))
            .await
            .unwrap();
        let ep = endpoint(&h);
        let anonymous = etcdctl(&ep, &["get", "/k"], None).await;
        assert!(
            anonymous.stderr.contains("etcdserver: user name is empty"),
            "auth is off after a restart (snapshot first: {snapshot_first}): {}",
            anonymous.stderr
        );
        let root = etcdctl_ok(
            &ep,
            &["--user", "root:rootpw", "get", "/k", "--print-value-only"],
        )
        .await;
        assert_eq!(root.trim(), "v");
        if !snapshot_first {
            h.snapshot().await.expect("snapshot");
        }
        h.shutdown().await;
    }
}
