//! A real gateway client end to end: Patroni (Debian's, 3.0) keeps a
//! two-node PostgreSQL 15 cluster whose DCS is the store, speaking only
//! etcd's JSON gateway. The same scenario runs on a real etcd 3.4 for
//! reference: a leader is elected, the replica streams, a kill -9 of the
//! primary (Patroni and PostgreSQL) promotes the replica, and the old
//! primary rejoins as a replica. Everything on loopback, on free ports;
//! every process is stopped by pid.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Patroni's and PostgreSQL's own loopback address: their ports, bound by
/// other processes a while after they are picked, can never be taken by,
/// or take, a port another test picked on 127.0.0.1.
const ADDR: &str = "127.0.5.1";

/// A port free on [`ADDR`] now.
fn free_port_here() -> u16 {
    std::net::TcpListener::bind((ADDR, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on the test's own loopback address")
}

/// One Patroni node: its process (Patroni runs as `postgres`), its REST
/// port, its PostgreSQL port and data directory.
struct Node {
    name: String,
    config: PathBuf,
    child: Option<Child>,
    api: u16,
    pg: u16,
    data: PathBuf,
}

impl Node {
    fn new(dir: &Path, scope: &str, name: &str, dcs_port: u16) -> Node {
        let (api, pg) = (free_port_here(), free_port_here());
        let data = dir.join(format!("data-{name}"));
        let config = dir.join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "scope: {scope}\nname: {name}\nrestapi:\n  listen: {ADDR}:{api}\n  \
                 connect_address: {ADDR}:{api}\netcd3:\n  hosts: 127.0.0.1:{dcs_port}\n\
                 bootstrap:\n  dcs:\n    ttl: 10\n    loop_wait: 2\n    retry_timeout: 5\n    \
                 postgresql:\n      use_pg_rewind: true\n  initdb:\n  - encoding: UTF8\n\
                 postgresql:\n  listen: {ADDR}:{pg}\n  connect_address: {ADDR}:{pg}\n  \
                 data_dir: {data}\n  bin_dir: {PG_BIN}\n  pgpass: {dir}/pgpass-{name}\n  \
                 authentication:\n    superuser: {{username: postgres, password: pw}}\n    \
                 replication: {{username: replicator, password: rep}}\n    \
                 rewind: {{username: rewinder, password: rw}}\n  pg_hba:\n  \
                 - local all all trust\n  - host all all 127.0.0.0/8 trust\n  \
                 - host replication replicator 127.0.0.0/8 trust\n",
                data = data.display(),
                dir = dir.display(),
            ),
        )
        .unwrap();
        chown_postgres(&config);
        Node {
            name: name.to_string(),
            config,
            child: None,
            api,
            pg,
            data,
        }
    }

    /// Starts Patroni as `postgres` (setpriv execs it: the child is Patroni).
    fn start(&mut self) {
        let log = std::fs::File::create(self.config.with_extension("log")).unwrap();
        let child = Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg("patroni")
            .arg(&self.config)
            .env("HOME", self.config.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("setpriv and patroni run (see test.sh for their packages)");
        self.child = Some(child);
    }

    /// Whether Patroni's REST API answers 200 on `path` (`/leader`, `/replica`).
    fn is(&self, path: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect((ADDR, self.api)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET {path} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        s.write_all(request.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
            || answer.starts_with("HTTP/1.0 200")
    }

    /// kill -9 of Patroni and of its PostgreSQL postmaster.
    fn crash(&mut self) {
        let postmaster = self.postmaster();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = postmaster {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn postmaster(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGTERM to Patroni, which stops PostgreSQL; then whatever is left of
    /// either is killed.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let stopped = wait_until(Duration::from_secs(30), || {
                c.try_wait().ok().flatten().is_some()
            });
            if stopped.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(pid) = self.postmaster()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// `psql -Atc sql` on this node's PostgreSQL, as `postgres`.
    fn sql(&self, sql: &str) -> Option<String> {
        let out = Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .args([&format!("{PG_BIN}/psql"), "-h", ADDR, "-p"])
            .arg(self.pg.to_string())
            .args(["-U", "postgres", "-d", "postgres", "-Atc", sql])
            .output()
            .ok()?;
        // Several statements print a tag each: the last line is the answer.
        out.status.success().then(|| {
            let text = String::from_utf8_lossy(&out.stdout);
            text.trim().lines().last().unwrap_or("").to_string()
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown postgres {}", path.display());
}

/// How long each step took.
struct Timings {
    leader: Duration,
    replica: Duration,
    failover: Duration,
    rejoin: Duration,
}

const STEP: Duration = Duration::from_secs(90);

/// The scenario against the DCS on `dcs_port`.
fn scenario(dcs_port: u16, label: &str) -> Timings {
    let dir = tempfile::tempdir().unwrap();
    chown_postgres(dir.path());
    let scope = format!("mgmt-test-{label}-{}", std::process::id());
    let mut n1 = Node::new(dir.path(), &scope, "pg1", dcs_port);
    let mut n2 = Node::new(dir.path(), &scope, "pg2", dcs_port);
    let logs = |nodes: &[&Node]| -> String {
        nodes
            .iter()
            .map(|n| {
                let log =
                    std::fs::read_to_string(n.config.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    let t = Instant::now();
    n1.start();
    let leader = wait_until(STEP, || n1.is("/leader"));
    assert!(leader.is_some(), "{label}: pg1 never led\n{}", logs(&[&n1]));
    let leader = t.elapsed();

    let t = Instant::now();
    n2.start();
    let replica = wait_until(STEP, || n2.is("/replica"));
    assert!(
        replica.is_some(),
        "{label}: pg2 never replicated\n{}",
        logs(&[&n1, &n2])
    );
    let replica = t.elapsed();
    assert_eq!(
        n1.sql("create table t(x int); insert into t values (42); select count(*) from t")
            .as_deref(),
        Some("1")
    );
    // The replica streams: the row arrives.
    assert!(
        wait_until(Duration::from_secs(30), || n2
            .sql("select x from t")
            .as_deref()
            == Some("42"))
        .is_some(),
        "{label}: the row did not reach the replica"
    );

    let t = Instant::now();
    n1.crash();
    let promoted = wait_until(STEP, || n2.is("/leader"));
    assert!(
        promoted.is_some(),
        "{label}: pg2 was not promoted\n{}",
        logs(&[&n2])
    );
    let failover = t.elapsed();
    // Writable once its promotion finishes (Patroni leads a moment before).
    assert!(
        wait_until(Duration::from_secs(30), || {
            n2.sql("insert into t values (43); select count(*) from t")
                .as_deref()
                == Some("2")
        })
        .is_some(),
        "{label}: the promoted node takes no writes"
    );

    let t = Instant::now();
    n1.start();
    let rejoined = wait_until(STEP, || n1.is("/replica"));
    assert!(
        rejoined.is_some(),
        "{label}: pg1 did not rejoin\n{}",
        logs(&[&n1, &n2])
    );
    let rejoin = t.elapsed();
    assert!(
        wait_until(Duration::from_secs(30), || n1
            .sql("select count(*) from t")
            .as_deref()
            == Some("2"))
        .is_some(),
        "{label}: the rejoined node did not catch up"
    );
    n2.stop();
    n1.stop();
    Timings {
        leader,
        replica,
        failover,
        rejoin,
    }
}

#[test]
fn patroni_runs_a_postgresql_cluster_on_the_store_as_on_etcd() {
    let mgmt = {
        let (_d, client, agent) = member(&[]);
        let timings = scenario(client, "mgmt");
        assert!(agent.terminate().success());
        timings
    };
    let etcd = {
        let (_etcd, port) = real_etcd();
        scenario(port, "etcd")
    };
    for (what, t) in [("mgmt's store", &mgmt), ("etcd 3.4", &etcd)] {
        eprintln!(
            "Patroni on {what:12}: leader {:.1} s, replica streaming {:.1} s, failover after \
             kill -9 {:.1} s, old primary rejoined {:.1} s",
            t.leader.as_secs_f64(),
            t.replica.as_secs_f64(),
            t.failover.as_secs_f64(),
            t.rejoin.as_secs_f64()
        );
    }
}
