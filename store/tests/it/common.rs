use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mgmt_store::{Store, StoreConfig, StoreHandle};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MGMT_TEST_LOG")
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Config on loopback with OS-assigned ports.
pub fn config(name: &str, prefix: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(name, prefix);
    c.client_urls = vec!["http://127.0.0.1:0".into()];
    c.peer_urls = vec!["http://127.0.0.1:0".into()];
    c
}

pub async fn start_single(name: &str, prefix: &std::path::Path) -> StoreHandle {
    start_single_with(config(name, prefix)).await
}

/// A one-member store on `config`, once it leads.
pub async fn start_single_with(config: StoreConfig) -> StoreHandle {
    init_tracing();
    let h = Store::start_single(config).await.expect("store starts");
    h.wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    h
}

/// `127.0.0.1:PORT` of the first client URL (etcdctl 3.4 wants it scheme-less).
pub fn endpoint(h: &StoreHandle) -> String {
    h.client_urls()[0].trim_start_matches("http://").to_string()
}

pub struct Out {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run etcdctl to completion (it has its own timeouts).
pub async fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let endpoint = endpoint.to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&endpoint)
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd
            .spawn()
            .expect("etcdctl runs (apt-get install etcd-client)");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

pub async fn etcdctl_ok(endpoint: &str, args: &[&str]) -> String {
    let out = etcdctl(endpoint, args, None).await;
    assert!(
        out.ok,
        "etcdctl {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
    out.stdout
}

/// A child process whose stdout lines are read on a thread; killed on drop.
pub struct LineChild {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl LineChild {
    pub fn spawn(mut cmd: Command) -> LineChild {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineChild { child, lines }
    }

    /// Lines until `pred` matches one (returned), or panic at the deadline.
    pub fn wait_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return (seen, line),
                Ok(line) => seen.push(line),
                Err(_) => panic!("no matching line within {timeout:?}; saw {seen:?}"),
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LineChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `f` until it returns Some, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use mgmt_store::testing::{RealEtcd, free_port};
