use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn mgmt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mgmt"));
    c.env("RUST_LOG", "info");
    c
}

/// `mgmt` with `args`; a `run` that sets up no store of its own gets
/// `--no-server`, so parallel tests don't fight over the default ports.
fn command(args: &[&str]) -> Command {
    let mut c = mgmt();
    c.args(args);
    if args.first() == Some(&"run")
        && !args
            .iter()
            .any(|a| a.starts_with("--client-urls") || *a == "--no-server")
    {
        c.arg("--no-server");
    }
    c
}

pub fn run_to_end(args: &[&str]) -> Output {
    command(args).output().expect("mgmt runs")
}

/// [`run_to_end`] with more environment.
pub fn run_to_end_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args)
        .envs(env.iter().copied())
        .output()
        .expect("mgmt runs")
}

/// The path of one of the repository's examples.
pub fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A running `mgmt`, killed (and reaped) when dropped.
pub struct Agent {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        Agent::start_with_log(args, "info")
    }

    /// [`Agent::start`] with `RUST_LOG` set to `log`.
    pub fn start_with_log(args: &[&str], log: &str) -> Agent {
        Agent::start_env(args, &[("RUST_LOG", log)])
    }

    /// [`Agent::start`] with more environment (`RUST_LOG` is `info` unless given).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut c = command(args);
        c.envs(env.iter().copied());
        Agent::spawn(c)
    }

    /// Starts `c` (which runs mgmt, perhaps through a wrapper such as
    /// `unshare`), its stderr read line by line.
    pub fn spawn(mut c: Command) -> Agent {
        let mut child = c
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mgmt");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Agent { child, lines }
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?} within {within:?}"),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{Signal, kill};
        kill(nix::unistd::Pid::from_raw(self.pid()), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "mgmt did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use mgmt_store::testing::free_port;

/// Runs the real etcdctl against `127.0.0.1:port`; returns stdout, panics on failure.
pub fn etcdctl(port: u16, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every millisecond until it holds or `within` passes; returns
/// how long it took.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    // After the ") ", field 14 (utime) and 15 (stime) are at index 11 and 12.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Like [`etcdctl`], but `None` on failure (for bounded waits on a condition).
pub fn try_etcdctl(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A real etcd 3.4 on loopback (the store crate's test helper), once it answers.
pub fn real_etcd() -> (mgmt_store::testing::RealEtcd, u16) {
    let etcd = mgmt_store::testing::RealEtcd::start();
    let port: u16 = etcd.client_urls[0]
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || try_etcdctl(port, &["get", "x"])
            .is_some())
        .is_some(),
        "etcd did not start"
    );
    (etcd, port)
}

/// Runs `program args` with `input` on its stdin; its output.
pub fn piped(program: &str, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} runs (see test.sh for its package): {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `GET path` over HTTP/1.1 on a fresh connection: (status, body).
pub fn get(port: u16, path: &str) -> (u16, String) {
    http(port, "GET", path, "")
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    http_as(port, None, method, path, body)
}

/// [`http`] with an `Authorization` header (a gateway token).
pub fn http_as(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    // A server that answers without reading the whole request may close
    // with a reset after its answer: what came before it is the answer.
    if let Err(e) = s.read_to_end(&mut raw) {
        assert!(
            e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty(),
            "{method} {path} on {port}: {e}"
        );
    }
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

/// The data of a chunked body, as far as it has arrived (a chunk still
/// coming is left out).
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let Some(chunk) = rest.get(..n).filter(|_| n > 0) else {
            break;
        };
        out.push_str(chunk);
        body = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// One agent serving its store on a free loopback port, with `extra` flags:
/// its state directory, its client port and the agent.
pub fn member(extra: &[&str]) -> (tempfile::TempDir, u16, Agent) {
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
