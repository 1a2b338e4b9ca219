//! `mgmt run` serves the embedded store; the stock etcdctl reads and changes it.

use std::time::Duration;

use crate::support::*;

fn loopback(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// A graph of one file, `dir/f1` holding "hi": the graph's path and the file's.
fn one_file_graph(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let target = dir.join("f1");
    let g = write(
        dir,
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: f1, path: {}, content: hi}}]\n",
            target.display()
        ),
    );
    (g, target)
}

/// `mgmt run` of graph `g` as host h1, its store in `prefix` on the given ports.
fn run_h1(g: &str, prefix: &std::path::Path, client: u16, peer: u16) -> Vec<String> {
    let prefix = prefix.to_string_lossy().into_owned();
    let flags = ["run", "--file", g, "--hostname", "h1", "--prefix", &prefix];
    let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    args.extend([
        "--client-urls".into(),
        loopback(client),
        "--peer-urls".into(),
        loopback(peer),
    ]);
    args
}

#[test]
fn run_serves_the_store_to_etcdctl() {
    let d = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let (g, _) = one_file_graph(d.path());
    let prefix = d.path().join("state");
    let (client_url, peer_url) = (loopback(client), loopback(peer));
    let args = run_h1(&g, &prefix, client, peer);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--ideal-cluster-size", "3"]);
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

#[test]
fn a_one_shot_run_leaves_its_status_in_its_store() {
    use mgmt_core::fleet::{HostStatus, Source, State, status_key};
    let d = tempfile::tempdir().unwrap();
    let (g, target) = one_file_graph(d.path());
    let client = free_port();
    let args = run_h1(&g, &d.path().join("state"), client, free_port());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let once: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--converged-timeout", "0"])
        .collect();
    let out = run_to_end(&once);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hi");

    // The same host again, as a daemon: the status key's first version is
    // the one-shot run's last word, durable although its store was not
    // stopped in order.
    let agent = Agent::start(&args);
    agent.wait_for_line("running graph", Duration::from_secs(20));
    let key = status_key("h1");
    let now: serde_json::Value =
        serde_json::from_str(&etcdctl(client, &["get", &key, "-w", "json"])).unwrap();
    let first = now["kvs"][0]["create_revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no status of h1: {now}"));
    let value = etcdctl(
        client,
        &[
            "get",
            &key,
            "--rev",
            &first.to_string(),
            "--print-value-only",
        ],
    );
    let status = HostStatus::decode(&key, value.trim().as_bytes()).unwrap();
    assert_eq!(
        (
            status.state,
            status.resources,
            status.changed,
            status.failed
        ),
        (State::Converged, 1, 1, 0),
        "{value}"
    );
    assert_eq!(status.source, Source::File(g.clone()));
    assert!(status.last_change.is_some(), "{value}");
    assert!(agent.terminate().success());
}
