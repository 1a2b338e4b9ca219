//! `mgmt run` serves the embedded store; the stock etcdctl reads and changes it.

use std::time::Duration;

use crate::support::*;

#[test]
fn run_serves_the_store_to_etcdctl() {
    let d = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let target = d.path().join("f1");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: f1, path: {}, content: hi}}]\n",
            target.display()
        ),
    );
    let prefix = d.path().join("state");
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = [
        "run",
        "--file",
        &g,
        "--hostname",
        "h1",
        "--prefix",
        &prefix.to_string_lossy(),
        "--client-urls",
        &client_url,
        "--peer-urls",
        &peer_url,
        "--ideal-cluster-size",
        "3",
    ];
    let agent = Agent::start(&args);
    agent.wait_for_line("running graph", Duration::from_secs(20));
    assert_eq!(
        etcdctl(
            client,
            &["get", "/_mgmt/idealClusterSize", "--print-value-only"]
        )
        .trim(),
        "3"
    );
    etcdctl(client, &["put", "/_mgmt/idealClusterSize", "4"]);
    assert_eq!(
        etcdctl(
            client,
            &["get", "/_mgmt/idealClusterSize", "--print-value-only"]
        )
        .trim(),
        "4"
    );
    let members = etcdctl(client, &["member", "list"]);
    assert_eq!(members.lines().count(), 1, "{members}");
    assert!(
        members.contains(&format!(", started, h1, {peer_url}, {client_url}, false")),
        "{members}"
    );
    assert!(prefix.join("h1").is_dir(), "state lives in PREFIX/HOSTNAME");
    assert!(agent.terminate().success());

    // The same ports again, now that the first agent has gone, and no
    // --ideal-cluster-size: the state persisted, the operator's 4 is kept.
    let agent = Agent::start(&args[..args.len() - 2]);
    agent.wait_for_line("running graph", Duration::from_secs(20));
    assert_eq!(
        etcdctl(
            client,
            &["get", "/_mgmt/idealClusterSize", "--print-value-only"]
        )
        .trim(),
        "4",
        "a restart without the flag keeps the stored size"
    );
    assert!(agent.terminate().success());
}

#[test]
fn port_in_use_is_a_clear_error_and_nothing_runs() {
    let d = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let target = d.path().join("f1");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: f1, path: {}}}]\n",
            target.display()
        ),
    );
    let url = format!("http://127.0.0.1:{port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let out = run_to_end(&[
        "run",
        "--file",
        &g,
        "--prefix",
        &d.path().to_string_lossy(),
        "--client-urls",
        &url,
        "--server-urls",
        &peer,
        "--converged-timeout",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("cannot listen on {url}")),
        "{}",
        stderr(&out)
    );
    assert!(
        !target.exists(),
        "the graph must not run when the store cannot start"
    );
}
