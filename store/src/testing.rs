//! Helpers for tests and benchmarks (feature `test-support`): a real etcd 3.4
//! on loopback, to compare with or to run against.

use std::process::{Child, Command, Stdio};

/// Real etcd servers (`/usr/bin/etcd`, Debian etcd-server) on 127.0.0.1, each
/// with its own free ports and temp data directory; killed (by pid) and
/// reaped when dropped. Starting returns at once: wait for readiness with a
/// client of your choice.
pub struct RealEtcd {
    children: Vec<(Child, tempfile::TempDir)>,
    /// Client URL of each member, in order.
    pub client_urls: Vec<String>,
}

impl RealEtcd {
    /// One member.
    pub fn start() -> RealEtcd {
        Self::start_cluster(1)
    }

    /// `members` members forming one cluster.
    pub fn start_cluster(members: usize) -> RealEtcd {
        Self::start_with(members, None)
    }

    /// One member serving its client URL over TLS with `cert` and `key`,
    /// asking clients for a certificate signed by `ca` (etcd's
    /// `--client-cert-auth`).
    pub fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> RealEtcd {
        Self::start_with(1, Some([cert, key, ca]))
    }

    fn start_with(members: usize, tls: Option<[&std::path::Path; 3]>) -> RealEtcd {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = RealEtcd {
            children: Vec::new(),
            client_urls: Vec::new(),
        };
        for (i, (client, peer)) in ports.into_iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir");
            let client_url = format!("{scheme}://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let mut cmd = Command::new("/usr/bin/etcd");
            if let Some([cert, key, ca]) = tls {
                cmd.arg("--cert-file")
                    .arg(cert)
                    .arg("--key-file")
                    .arg(key)
                    .arg("--trusted-ca-file")
                    .arg(ca)
                    .arg("--client-cert-auth");
            }
            let child = cmd
                .args(["--name", &format!("e{i}"), "--data-dir"])
                .arg(dir.path())
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &cluster])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd runs (apt-get install etcd-server)");
            etcd.children.push((child, dir));
            etcd.client_urls.push(client_url);
        }
        etcd
    }

    /// Process IDs of the members, in order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(c, _)| c.id()).collect()
    }

    /// Data directories of the members, in order.
    pub fn data_dirs(&self) -> Vec<std::path::PathBuf> {
        self.children
            .iter()
            .map(|(_, d)| d.path().to_path_buf())
            .collect()
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on right now, below the kernel's
/// ephemeral range (32768 and up here): a port the OS picks with `:0` is one
/// it may give the next outgoing connection of any process (a download, a
/// test's client), which then holds it while a test waits to listen there.
/// Candidates start at a point drawn from the pid and the clock, so tests
/// running at once rarely try the same ones; a tiny race remains.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = std::process::id().wrapping_mul(7919) ^ nanos;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + start.wrapping_add(n.wrapping_mul(101)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}
