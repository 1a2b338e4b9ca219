//! Automatic clustering with real processes, as in the "Automatic clustering in
//! mgmt" article: four `mgmt run` agents on loopback, checked with the stock
//! etcdctl; and a client-only agent against a real etcd 3.4.

use std::time::Duration;

use crate::support::*;

const T: Duration = Duration::from_secs(60);

struct H {
    agent: Agent,
    client: u16,
    peer: u16,
    /// The directory of `mgmt tls init` when the host runs TLS on both links.
    tls: Option<std::path::PathBuf>,
}

impl H {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client)
    }

    /// etcdctl's arguments to reach this host as the operator (root's
    /// certificate when TLS is on).
    fn ctl_args(&self) -> Vec<String> {
        let mut v = vec!["--endpoints".to_string(), self.client_url()];
        if let Some(dir) = &self.tls {
            v.extend(operator_tls(dir));
        }
        v
    }

    /// etcdctl on this host; `None` if it fails.
    fn try_ctl(&self, args: &[&str]) -> Option<String> {
        let out = ctl_command(&self.ctl_args(), args)
            .arg("--dial-timeout=2s")
            .arg("--command-timeout=3s")
            .stderr(std::process::Stdio::null())
            .output()
            .expect("etcdctl is installed");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// etcdctl on this host, which must succeed.
    fn ctl(&self, args: &[&str]) -> String {
        let out = ctl_command(&self.ctl_args(), args)
            .arg("--command-timeout=5s")
            .output()
            .expect("etcdctl is installed");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `--cacert --cert --key` of the operator's certificate in a `tls init` directory.
fn operator_tls(dir: &std::path::Path) -> Vec<String> {
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    vec![
        "--cacert".into(),
        f("ca.crt"),
        "--cert".into(),
        f("root.crt"),
        "--key".into(),
        f("root.key"),
    ]
}

/// `mgmt tls init DIR --hosts HOSTS`; returns DIR.
pub(crate) fn tls_init(top: &std::path::Path, name: &str, hosts: &str) -> std::path::PathBuf {
    let dir = top.join(name);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mgmt"))
        .args(["tls", "init", dir.to_str().unwrap(), "--hosts", hosts])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn ctl_command(global: &[String], args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3").args(global).args(args);
    cmd
}

/// The agent flags for TLS on both links with host `name`'s files in `dir`.
pub(crate) fn agent_tls(dir: &std::path::Path, name: &str) -> Vec<String> {
    let f = |file: String| dir.join(file).to_string_lossy().into_owned();
    let (cert, key, ca) = (
        f(format!("{name}.crt")),
        f(format!("{name}.key")),
        f("ca.crt".into()),
    );
    [
        ("--cert-file", &cert),
        ("--key-file", &key),
        ("--trusted-ca-file", &ca),
        ("--peer-cert-file", &cert),
        ("--peer-key-file", &key),
        ("--peer-trusted-ca-file", &ca),
    ]
    .into_iter()
    .flat_map(|(flag, v)| [flag.to_string(), v.clone()])
    .chain(["--client-cert-auth".to_string()])
    .collect()
}

fn graph(dir: &std::path::Path, name: &str) -> String {
    write(
        dir,
        &format!("{name}.yaml"),
        &format!("graph: {name}\nresources:\n  noop: [{{name: n1}}]\n"),
    )
}

fn start(dir: &std::path::Path, name: &str, extra: &[String], tls: Option<&std::path::Path>) -> H {
    let (client, peer) = (free_port(), free_port());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let g = graph(dir, name);
    let prefix = dir.join("prefix").join(name);
    let mut args: Vec<String> = vec![
        "run".into(),
        "--file".into(),
        g,
        "--hostname".into(),
        name.into(),
        "--prefix".into(),
        prefix.to_string_lossy().into_owned(),
        "--client-urls".into(),
        format!("{scheme}://127.0.0.1:{client}"),
        "--server-urls".into(),
        format!("{scheme}://127.0.0.1:{peer}"),
    ];
    if let Some(tls) = tls {
        args.extend(agent_tls(tls, name));
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    H {
        agent: Agent::start(&args),
        client,
        peer,
        tls: tls.map(std::path::Path::to_path_buf),
    }
}

/// The articles' agents h1..hN: h1 starts the cluster with an ideal size of
/// 3, the others join through it.
fn agents<const N: usize>(dir: &std::path::Path) -> [H; N] {
    agents_with(dir, None)
}

/// [`agents`], with TLS on both links from a `mgmt tls init` directory.
fn agents_with<const N: usize>(dir: &std::path::Path, tls: Option<&std::path::Path>) -> [H; N] {
    let ideal = ["--ideal-cluster-size".into(), "3".into()];
    let h1 = start(dir, "h1", &ideal, tls);
    h1.agent.wait_for_line("running graph", T);
    let seeds = vec!["--seeds".into(), h1.client_url()];
    let mut hosts = vec![h1];
    for i in 2..=N {
        hosts.push(start(dir, &format!("h{i}"), &seeds, tls));
    }
    hosts.try_into().unwrap_or_else(|_| unreachable!("N hosts"))
}

/// `127.0.0.1:PORT,...` of every host's client URL, as etcdctl takes them.
fn client_endpoints(hosts: &[&H]) -> String {
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("127.0.0.1:{}", h.client))
        .collect();
    urls.join(",")
}

/// `name -> started voter` lines of `etcdctl member list` on `port`.
fn members(h: &H) -> Option<Vec<String>> {
    let out = h.try_ctl(&["member", "list"])?;
    let mut names = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split(", ").collect();
        // ID, status, name, peer URLs, client URLs, is learner
        if f.len() != 6 || f[1] != "started" || f[5] != "false" {
            return None;
        }
        names.push(f[2].to_string());
    }
    names.sort();
    Some(names)
}

/// Waits until every listed member, asked on its own client port, lists
/// exactly `n` started voters; returns the names.
fn wait_members(hosts: &[&H], n: usize) -> Vec<String> {
    let mut last = None;
    let ok = wait_until(T, || {
        for h in hosts {
            let Some(m) = members(h) else { continue };
            if m.len() != n {
                last = Some(m);
                return false;
            }
            // Every member agrees.
            let all = m.iter().all(|name| {
                let idx: usize = name[1..].parse().unwrap();
                members(hosts[idx - 1]).as_ref() == Some(&m)
            });
            last = Some(m);
            return all;
        }
        false
    });
    assert!(ok.is_some(), "never {n} members; last saw {last:?}");
    last.unwrap()
}

#[test]
fn four_agents_cluster_grow_shrink_regrow() {
    let d = tempfile::tempdir().unwrap();
    grow_shrink_regrow(d.path(), None);
}

/// The articles' example with TLS on both links, certificates from `mgmt tls
/// init`, etcdctl as the operator's certificate.
#[test]
fn four_agents_with_tls_cluster_grow_shrink_regrow() {
    let d = tempfile::tempdir().unwrap();
    let pki = tls_init(d.path(), "pki", "h1,h2,h3,h4");
    let all = grow_shrink_regrow(d.path(), Some(&pki));
    // Plaintext, and another CA's certificate, on the client and the peer
    // port of a member: refused, nothing served, and the log says why and
    // from where.
    let other = tls_init(d.path(), "other", "x");
    let survivor = all
        .iter()
        .find(|h| members(h).is_some_and(|m| m.len() == 3))
        .expect("a member");
    // The write an intruder would send: shrink the cluster to one.
    let shrinks = |global: &[String]| {
        let args = [
            "--command-timeout=2s",
            "put",
            "/_mgmt/idealClusterSize",
            "1",
        ];
        ctl_command(global, &args)
            .output()
            .unwrap()
            .status
            .success()
    };
    for port in [survivor.client, survivor.peer] {
        let plain = ["--endpoints".into(), format!("http://127.0.0.1:{port}")];
        assert!(!shrinks(&plain), "plaintext to port {port} was served");
        let url = format!("url=https://127.0.0.1:{port} from=127.0.0.1:");
        let line = survivor.agent.wait_for_line(&url, T);
        assert!(line.contains("reason=not a TLS client"), "{line}");
        // Trusting our CA, presenting another's certificate.
        let mut stranger = vec!["--endpoints".into(), format!("https://127.0.0.1:{port}")];
        stranger.extend(operator_tls(&other));
        stranger[3] = pki.join("ca.crt").to_string_lossy().into_owned();
        assert!(
            !shrinks(&stranger),
            "another CA's certificate was served on {port}"
        );
        let line = survivor
            .agent
            .wait_for_line("reason=certificate not signed by the trusted CA", T);
        assert!(line.contains(&url), "{line}");
    }
    assert_eq!(
        survivor
            .ctl(&["get", "/_mgmt/idealClusterSize", "--print-value-only"])
            .trim(),
        "3"
    );
    assert_eq!(members(survivor).map(|m| m.len()), Some(3));
}

/// Starts the articles' four agents, grows to five (four members), shrinks to
/// one and regrows to three; returns the agents.
fn grow_shrink_regrow(dir: &std::path::Path, tls: Option<&std::path::Path>) -> [H; 4] {
    let hosts: [H; 4] = agents_with(dir, tls);
    {
        let [h1, h2, h3, h4] = &hosts;
        let all = [h1, h2, h3, h4];

        let three = wait_members(&all, 3);
        assert!(three.contains(&"h1".to_string()), "{three:?}");

        // Grow to 5: only four hosts exist, so h4 starts a server too.
        h1.ctl(&["put", "/_mgmt/idealClusterSize", "5"]);
        assert_eq!(wait_members(&all, 4), ["h1", "h2", "h3", "h4"]);

        // Shrink to one member, then regrow to three on the same URLs.
        h1.ctl(&["put", "/_mgmt/idealClusterSize", "1"]);
        let one = wait_members(&all, 1);
        let survivor = all[one[0][1..].parse::<usize>().unwrap() - 1];
        survivor.ctl(&["put", "/_mgmt/idealClusterSize", "3"]);
        wait_members(&all, 3);

        for h in all {
            let lines: Vec<String> = h.agent.lines.try_iter().collect();
            for l in &lines {
                assert!(
                    !l.contains("address already in use")
                        && !l.contains("cannot start the store")
                        && !l.contains("TLS connection refused"),
                    "{l}"
                );
            }
        }
    }
    hosts
}

/// Stock etcdctl's maintenance commands against three agents.
#[test]
fn stock_etcdctl_maintenance_works_against_three_agents() {
    let d = tempfile::tempdir().unwrap();
    let [h1, h2, h3] = agents(d.path());
    let all = [&h1, &h2, &h3];
    wait_members(&all, 3);
    let endpoints = client_endpoints(&all);
    let run = |args: &[&str]| -> (bool, String) {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&endpoints)
            .arg("--command-timeout=15s")
            .args(args)
            .output()
            .expect("etcdctl is installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let ok = |args: &[&str]| -> String {
        let (ok, text) = run(args);
        assert!(ok, "etcdctl {args:?}: {text}");
        text
    };

    // endpoint status --cluster dials the advertised URLs, scheme and all.
    let status = ok(&["endpoint", "status", "--cluster"]);
    let lines: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("http://"))
        .collect();
    assert_eq!(lines.len(), 3, "{status}");
    let leaders: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(", true, false, "))
        .copied()
        .collect();
    assert_eq!(leaders.len(), 1, "{status}");
    let id_of = |line: &str| line.split(", ").nth(1).unwrap().to_string();
    let leader = id_of(leaders[0]);
    let follower = lines
        .iter()
        .map(|l| id_of(l))
        .find(|id| *id != leader)
        .unwrap();

    // Equal hashes on every member (the revision may move between asks: the
    // agents write their keys now and then).
    let equal = wait_until(T, || {
        let (ok, out) = run(&["endpoint", "hashkv", "--cluster"]);
        let hashes: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("http://"))
            .filter_map(|l| l.split(", ").nth(1))
            .collect();
        ok && hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0])
    });
    assert!(equal.is_some(), "hashes never equal");

    assert_eq!(ok(&["alarm", "list"]), "");
    let file = d.path().join("snap.db");
    // From one member, as etcdctl insists.
    let out = h2.ctl(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.contains("Snapshot saved at"), "{out}");
    assert_eq!(std::fs::metadata(&file).unwrap().len() % 512, 32);
    let out = ok(&["defrag", "--cluster"]);
    assert_eq!(
        out.matches("Finished defragmenting etcd member").count(),
        3,
        "{out}"
    );

    let out = ok(&["move-leader", &follower]);
    assert!(
        out.contains(&format!(
            "Leadership transferred from {leader} to {follower}"
        )),
        "{out}"
    );
    let status = ok(&["endpoint", "status", "--cluster"]);
    let now: Vec<String> = status
        .lines()
        .filter(|l| l.contains(", true, false, "))
        .map(id_of)
        .collect();
    assert_eq!(now, std::slice::from_ref(&follower), "{status}");

    let (removed, out) = run(&["member", "remove", &leader]);
    assert!(
        !removed && out.contains("membership follows /_mgmt/idealClusterSize"),
        "{out}"
    );
    assert_eq!(wait_members(&all, 3).len(), 3);
}

/// kill -9 of the leader while clients write and read: every write etcdctl
/// saw acknowledged is still there afterwards, and the reads and writes form
/// a linearizable history.
#[test]
fn killing_the_leader_under_write_load_loses_no_acknowledged_write() {
    leader_fault_under_write_load(LeaderFault::Kill);
}

/// A leader frozen longer than an election timeout (SIGSTOP, as a VM pause or
/// a stalled disk does): the other two elect a leader and take writes while
/// it is stopped; once continued it follows the new leader, no acknowledged
/// write is lost, and the reads and writes form a linearizable history.
#[test]
fn pausing_the_leader_under_write_load_moves_writes_to_the_others() {
    leader_fault_under_write_load(LeaderFault::Pause);
}

enum LeaderFault {
    Kill,
    Pause,
}

/// Three agents under four etcdctl writers of keys of their own, and two
/// writers and two readers of three shared keys; the leader is killed or
/// paused; writes must resume on the others, every acknowledged one be
/// stored, and the shared keys' history be linearizable.
fn leader_fault_under_write_load(fault: LeaderFault) {
    use crate::linearizable::{self, Op, OpKind};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let d = tempfile::tempdir().unwrap();
    let mut hosts = Vec::from(agents::<3>(d.path()));
    let all: Vec<&H> = hosts.iter().collect();
    wait_members(&all, 3);
    let endpoints = client_endpoints(&all);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let etcdctl = |endpoints: &str, args: &[&str]| {
        std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints, "--command-timeout=3s"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, endpoints) = (acked.clone(), stop.clone(), endpoints.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w/{w}/{i}");
                    if etcdctl(&endpoints, &["put", &key, "v"]).is_some() {
                        acked.lock().unwrap().push(key);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // The shared keys: every operation with when it was invoked and
    // answered (a write without an answer may or may not have happened).
    let history: Arc<Mutex<Vec<Op>>> = Arc::default();
    let shared: Vec<_> = (0..4)
        .map(|c| {
            let (history, stop, endpoints) = (history.clone(), stop.clone(), endpoints.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("lin/{}", (i + c) % 3);
                    let invoked = std::time::Instant::now();
                    let op = if c < 2 {
                        let value = format!("c{c}-{i}");
                        let out = etcdctl(&endpoints, &["put", &key, &value]);
                        Some((OpKind::Put(value), out.map(|_| std::time::Instant::now())))
                    } else {
                        // A read without an answer observed nothing.
                        etcdctl(&endpoints, &["get", &key, "--print-value-only"]).map(|o| {
                            let text = String::from_utf8_lossy(&o.stdout);
                            let value = text.trim_end_matches('\n');
                            let value = (!value.is_empty()).then(|| value.to_string());
                            (OpKind::Get(value), Some(std::time::Instant::now()))
                        })
                    };
                    if let Some((kind, returned)) = op {
                        history.lock().unwrap().push(Op {
                            key,
                            kind,
                            invoked,
                            returned,
                        });
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let count = || acked.lock().unwrap().len();
    assert!(
        wait_until(T, || count() >= 40).is_some(),
        "writes never flowed"
    );

    let status = hosts[0].ctl(&["endpoint", "status", "--cluster"]);
    let leader_url = status
        .lines()
        .find(|l| l.contains(", true, false, "))
        .and_then(|l| l.split(", ").next())
        .expect("a leader")
        .to_string();
    let at = hosts
        .iter()
        .position(|h| leader_url.ends_with(&format!(":{}", h.client)))
        .expect("the leader is one of ours");
    let pid = nix::unistd::Pid::from_raw(hosts[at].agent.pid());
    let before = count();
    match fault {
        LeaderFault::Kill => {
            let mut leader = hosts.remove(at);
            leader.agent.child.kill().unwrap();
            leader.agent.child.wait().unwrap();
        }
        LeaderFault::Pause => {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        }
    }
    let resumed = wait_until(T, || count() >= before + 40);
    if let LeaderFault::Pause = fault {
        // Continued whatever happened, so that the agent can be stopped.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }
    assert!(
        resumed.is_some(),
        "writes never resumed after the leader stopped"
    );
    if let LeaderFault::Pause = fault {
        // The old leader follows again: every member agrees on three voters,
        // and writes go on.
        let all: Vec<&H> = hosts.iter().collect();
        wait_members(&all, 3);
        let now = count();
        assert!(
            wait_until(T, || count() >= now + 20).is_some(),
            "writes stopped once the old leader came back"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers.into_iter().chain(shared) {
        w.join().unwrap();
    }
    let history = history.lock().unwrap();
    let reads = history
        .iter()
        .filter(|o| matches!(o.kind, OpKind::Get(Some(_))))
        .count();
    assert!(reads >= 20, "too few reads saw a value to check: {reads}");
    match linearizable::check(&history) {
        Ok(keys) => eprintln!(
            "linearizable: {} operations on {keys} keys, {reads} reads that saw a value",
            history.len()
        ),
        Err(e) => panic!(
            "not linearizable: the {} operations on {} admit no order ({} in all)",
            e.ops,
            e.key,
            history.len()
        ),
    }

    let stored = hosts[0].ctl(&["get", "--prefix", "w/", "--keys-only"]);
    let stored: std::collections::BTreeSet<&str> =
        stored.lines().filter(|l| !l.is_empty()).collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|k| !stored.contains(k.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}

#[test]
fn no_server_agent_runs_a_graph_against_a_real_etcd() {
    let (_etcd, etcd_port) = real_etcd();
    let d = tempfile::tempdir().unwrap();
    let seeds = format!("http://127.0.0.1:{}", etcd_port);
    let agent = client_only_agent(d.path(), &seeds, &[]);
    // A client-only agent does not volunteer.
    let vols = etcdctl(etcd_port, &["get", "--prefix", "/_mgmt/volunteers/"]);
    assert!(vols.is_empty(), "{vols}");
    assert!(agent.terminate().success());
}

/// A `--no-server --seeds SEEDS` agent, once it read the cluster's keys
/// through a seed and its graph (one file) ran.
fn client_only_agent(dir: &std::path::Path, seeds: &str, extra: &[&str]) -> Agent {
    let target = dir.join("f1");
    let g = write(
        dir,
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: f1, path: {}, content: hi}}]\n",
            target.display()
        ),
    );
    let prefix = dir.join("prefix").to_string_lossy().into_owned();
    let mut args = vec![
        "run",
        "--file",
        &g,
        "--hostname",
        "c1",
        "--prefix",
        &prefix,
        "--no-server",
        "--seeds",
        seeds,
    ];
    args.extend(extra);
    let agent = Agent::start(&args);
    let line = agent.wait_for_line("connected to the cluster via", T);
    assert!(line.contains(seeds), "{line}");
    assert!(
        wait_until(T, || std::fs::read_to_string(&target)
            .is_ok_and(|c| c == "hi"))
        .is_some(),
        "the graph ran"
    );
    agent
}

/// `--no-server --seeds https://...` against a real etcd 3.4 serving TLS
/// and asking for client certificates: the agent presents its own.
#[test]
fn no_server_agent_runs_against_a_real_etcd_with_tls_and_client_certificates() {
    let d = tempfile::tempdir().unwrap();
    let pki = tls_init(d.path(), "pki", "etcd,c1");
    let f = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let etcd = mgmt_store::testing::RealEtcd::start_tls(
        &pki.join("etcd.crt"),
        &pki.join("etcd.key"),
        &pki.join("ca.crt"),
    );
    let seeds = etcd.client_urls[0].clone();
    let mut global = vec!["--endpoints".to_string(), seeds.clone()];
    global.extend(operator_tls(&pki));
    let ready = || {
        ctl_command(&global, &["--command-timeout=3s", "put", "/ready", "1"])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(wait_until(T, ready).is_some(), "etcd did not start");
    let agent = client_only_agent(
        d.path(),
        &seeds,
        &[
            "--trusted-ca-file",
            &f("ca.crt"),
            "--cert-file",
            &f("c1.crt"),
            "--key-file",
            &f("c1.key"),
        ],
    );
    let lines: Vec<String> = agent.lines.try_iter().collect();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("TLS to") || l.contains("refused")),
        "{lines:?}"
    );
    assert!(agent.terminate().success());
}

/// With auth on over TLS, the writes that would reshape the cluster are
/// refused to a user without the right and to a client without a
/// certificate; the agents (by their certificates) keep clustering, and root
/// still steers them.
#[test]
fn with_auth_on_only_root_and_the_agents_change_the_cluster() {
    let d = tempfile::tempdir().unwrap();
    let pki = tls_init(d.path(), "pki", "h1,h2,h3");
    let hosts: [H; 3] = agents_with(d.path(), Some(&pki));
    let all = [&hosts[0], &hosts[1], &hosts[2]];
    wait_members(&all, 3);
    let h1 = &hosts[0];
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "everything"],
        &[
            "role",
            "grant-permission",
            "everything",
            "--prefix=true",
            "readwrite",
            "/",
        ],
        &["user", "grant-role", "alice", "everything"],
        &["put", "/data", "kept"],
        &["auth", "enable"],
    ] {
        h1.ctl(args);
    }
    let as_alice = |args: &[&str]| {
        let mut v = vec!["--user", "alice:alicepw", "--command-timeout=5s"];
        v.extend(args);
        ctl_command(&h1.ctl_args(), &v).output().unwrap()
    };
    let destructive: [&[&str]; 3] = [
        &["put", "/_mgmt/idealClusterSize", "1"],
        &["del", "/_mgmt/nominated/h3"],
        &["del", "--prefix", "/"],
    ];
    for args in destructive {
        let out = as_alice(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("etcdserver: permission denied"),
            "alice {args:?}: {err}"
        );
        // No certificate at all: refused before any request.
        let mut bare = vec![
            "--endpoints".to_string(),
            h1.client_url(),
            "--cacert".into(),
        ];
        bare.push(pki.join("ca.crt").to_string_lossy().into_owned());
        let out = ctl_command(&bare, &[&["--command-timeout=2s"][..], args].concat())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{args:?} without a certificate was served"
        );
    }
    // alice's role still works where it may.
    assert!(as_alice(&["put", "/app/x", "1"]).status.success());
    // Deploys: root's certificate deploys, an agent's does not (one host
    // must not reprogram the fleet).
    let site = graph(d.path(), "site");
    let deploy_as = |who: &str, what: &[&str]| {
        let f = |name: String| pki.join(name).to_string_lossy().into_owned();
        std::process::Command::new(env!("CARGO_BIN_EXE_mgmt"))
            .arg("deploy")
            .args(what)
            .args(["--seeds", &h1.client_url()])
            .args(["--cert-file", &f(format!("{who}.crt"))])
            .args(["--key-file", &f(format!("{who}.key"))])
            .args(["--trusted-ca-file", &f("ca.crt".into())])
            .output()
            .unwrap()
    };
    let refused = deploy_as("h2", &["--file", &site]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let deployed = deploy_as("root", &["--file", &site]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&deployed.stdout).trim(), "1");
    // Its author is the certificate's name.
    let list = deploy_as("root", &["--list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let row: Vec<&str> = list.lines().nth(1).unwrap_or("").split('\t').collect();
    assert_eq!(row.get(2), Some(&"root"), "{list}");
    // As etcd users, by password (the token wins over the certificate an
    // agent's TLS presents): alice's role covers /_mgmt/deploy/, bob has none.
    h1.ctl(&["user", "add", "bob:bobpw"]);
    let other = write(
        d.path(),
        "other.yaml",
        "graph: other\nresources:\n  noop: [{name: n2}]\n",
    );
    let refused = deploy_as("h2", &["--file", &other, "--user", "bob:bobpw"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied"), "{err}");
    let wrong = deploy_as(
        "h2",
        &["--file", &other, "--user", "alice", "--password", "nope"],
    );
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && err.contains("authentication failed"),
        "{err}"
    );
    let deployed = deploy_as("h2", &["--file", &other, "--user", "alice:alicepw"]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&deployed.stdout).trim(), "2");
    let list = deploy_as("root", &["--list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    let row: Vec<&str> = list.lines().nth(2).unwrap_or("").split('\t').collect();
    assert_eq!(row.get(2), Some(&"alice"), "{list}");
    assert_eq!(members(h1).map(|m| m.len()), Some(3));
    assert_eq!(
        h1.ctl(&["get", "/data", "--print-value-only"]).trim(),
        "kept"
    );
    assert_eq!(
        h1.ctl(&["get", "/_mgmt/idealClusterSize", "--print-value-only"])
            .trim(),
        "3"
    );
    // The agents write their keys under auth: root shrinks and regrows.
    h1.ctl(&["put", "/_mgmt/idealClusterSize", "2"]);
    wait_members(&all, 2);
    let member = all
        .iter()
        .find(|h| members(h).is_some_and(|m| m.len() == 2))
        .unwrap();
    member.ctl(&["put", "/_mgmt/idealClusterSize", "3"]);
    wait_members(&all, 3);
}
