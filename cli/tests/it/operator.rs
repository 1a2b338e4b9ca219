//! What an operator reads of a run: JSON log lines that `jq` takes one by
//! one, the summary line, `--report`, shell completions and the man page.

use std::process::{Command, Stdio};

use crate::support::*;

/// Runs `program` with `input` on its stdin; its output.
/// A graph of one file to create, one already right, a noop, a command that
/// fails, and a file after it (skipped: its dependency failed).
fn mixed_graph(dir: &std::path::Path) -> String {
    let right = dir.join("right");
    std::fs::write(&right, "same").unwrap();
    write(
        dir,
        "g.yaml",
        &format!(
            "graph: mixed\nresources:\n  file:\n  - {{name: new, path: {}, content: x}}\n  - {{name: right, path: {}, content: same}}\n  - {{name: after, path: {}, content: y, meta: {{autogroup: false}}}}\n  noop: [{{name: n1}}]\n  exec: [{{name: fails, cmd: /bin/false, meta: {{retry: 0}}}}]\nedges:\n- {{name: e1, from: {{kind: exec, name: fails}}, to: {{kind: file, name: after}}}}\n",
            dir.join("new").display(),
            right.display(),
            dir.join("after").display(),
        ),
    )
}

#[test]
fn json_logs_parse_line_by_line_and_the_report_has_every_resource() {
    let d = tempfile::tempdir().unwrap();
    let g = mixed_graph(d.path());
    let report = d.path().join("report.json");
    let out = run_to_end(&[
        "run",
        "--file",
        &g,
        "--converged-timeout",
        "0",
        "--log-format",
        "json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let logs = stderr(&out);
    // jq reads every line as one JSON object.
    let parsed = piped(
        "jq",
        &["-c", "select(.time and .level and .message)"],
        logs.as_bytes(),
    );
    assert!(
        parsed.status.success(),
        "jq: {}\n{logs}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&parsed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        logs.lines().count(),
        "a line without time, level or message:\n{logs}"
    );
    let created = lines
        .iter()
        .find(|l| l["resource"] == "File[new]" && l["action"] == "CheckApply")
        .unwrap_or_else(|| panic!("no CheckApply line for File[new]:\n{logs}"));
    assert!(created["duration_ms"].as_f64().is_some(), "{created}");
    assert!(
        lines
            .iter()
            .any(|l| l["resource"] == "Exec[fails]" && l["level"] == "error"),
        "{logs}"
    );
    let summary = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("summary: "))
        })
        .unwrap_or_else(|| panic!("no summary line:\n{logs}"));
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .starts_with("summary: 5 resources, 1 changed, 1 failed, "),
        "{summary}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let status_of = |id: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == id)
            .unwrap_or_else(|| panic!("{id} not in {report}"))["status"]
            .clone()
    };
    assert_eq!(report["resources"].as_array().unwrap().len(), 5, "{report}");
    assert_eq!(status_of("File[new]"), "changed");
    assert_eq!(status_of("File[right]"), "unchanged");
    assert_eq!(status_of("Noop[n1]"), "unchanged");
    assert_eq!(status_of("Exec[fails]"), "failed");
    assert_eq!(status_of("File[after]"), "skipped");
    assert_eq!(report["summary"]["failed"], 1);
    assert_eq!(report["graph"], "mixed");
    assert!(!d.path().join("after").exists());
}

#[test]
fn bad_input_under_json_logs_is_one_json_object_naming_the_place() {
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "bad.yaml",
        "graph: g\nresources:\n  frob: [{name: a}]\n",
    );
    let out = run_to_end(&["run", "--file", &g, "--log-format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let logs = stderr(&out);
    let line: serde_json::Value =
        serde_json::from_str(logs.trim()).unwrap_or_else(|e| panic!("{e}: {logs}"));
    assert_eq!(line["level"], "error");
    assert!(
        line["message"].as_str().unwrap().contains("bad.yaml:3:3"),
        "{line}"
    );
}

#[test]
fn completions_load_in_bash_and_the_man_page_renders() {
    let script = run_to_end(&["completions", "bash"]);
    assert!(script.status.success());
    let out = piped(
        "bash",
        &["-c", "source /dev/stdin; complete -p mgmt"],
        &script.stdout,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-F _mgmt"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let zsh = run_to_end(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef mgmt"));
    let fish = run_to_end(&["completions", "fish"]);
    assert!(String::from_utf8_lossy(&fish.stdout).contains("complete -c mgmt"));

    let man = run_to_end(&["man"]);
    assert!(man.status.success());
    let roff = String::from_utf8_lossy(&man.stdout);
    assert!(roff.contains(".TH mgmt 1"), "{roff}");
    let d = tempfile::tempdir().unwrap();
    let page = d.path().join("mgmt.1");
    std::fs::write(&page, &man.stdout).unwrap();
    let shown = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("man is installed");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success() && text.contains("NAME") && text.contains("run"),
        "{text}"
    );
}

/// `Type=notify`: READY=1 comes once the graph has converged, STATUS= says
/// how far the run and the store are, STOPPING=1 on SIGTERM.
#[test]
fn systemd_hears_ready_only_after_the_graph_converged() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let marker = d.path().join("marker");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: slow\nresources:\n  exec: [{{name: slow, cmd: 'sleep 1; touch {}', shell: /bin/sh}}]\n",
            marker.display()
        ),
    );
    let prefix = d.path().join("prefix");
    let (c, p) = (free_port(), free_port());
    let agent = Agent::start_env(
        &[
            "run",
            "--file",
            &g,
            "--hostname",
            "h1",
            "--prefix",
            prefix.to_str().unwrap(),
            "--client-urls",
            &format!("http://127.0.0.1:{c}"),
            "--server-urls",
            &format!("http://127.0.0.1:{p}"),
        ],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut heard = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("a notification within 60 s");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg == "READY=1" {
            assert!(
                marker.exists(),
                "READY before the graph converged: {heard:?}"
            );
            break;
        }
        heard.push(msg);
    }
    assert!(
        heard
            .iter()
            .any(|m| m.starts_with("STATUS=applying 1 of 1")),
        "{heard:?}"
    );
    let last = heard.last().unwrap();
    assert!(
        last.starts_with("STATUS=converged: 1 resources"),
        "{heard:?}"
    );
    // The store's part follows the cluster: it becomes the leader of one.
    let mut status = last.clone();
    while !status.contains("store: leader of 1") {
        let n = sock.recv(&mut buf).expect("the store's status within 60 s");
        status = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    assert!(agent.terminate().success());
    let mut rest = Vec::new();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

/// A GET over plain HTTP/1.1; the body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// `--prometheus`: a real Prometheus scrapes the agent and its query API
/// returns the CheckApply counter; `promtool check metrics` accepts the page.
#[test]
fn a_real_prometheus_scrapes_the_checkapply_counter() {
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: f1, path: {}, content: hi}}]\n",
            d.path().join("f1").display()
        ),
    );
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let agent = Agent::start(&[
        "run",
        "--file",
        &g,
        "--prometheus",
        "--prometheus-listen",
        &metrics_addr,
    ]);
    agent.wait_for_line("metrics on http://", std::time::Duration::from_secs(30));
    let page = wait_until(std::time::Duration::from_secs(30), || {
        http_get(&metrics_addr, "/metrics").is_some_and(|p| p.contains("mgmt_checkapply_total{"))
    });
    assert!(page.is_some(), "no CheckApply counter on the page");
    let page = http_get(&metrics_addr, "/metrics").unwrap();
    assert!(
        page.contains(
            r#"mgmt_checkapply_total{kind="file",apply="true",eventful="true",errorful="false"} 1"#
        ),
        "{page}"
    );
    let checked = piped("promtool", &["check", "metrics"], page.as_bytes());
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let web = format!("127.0.0.1:{}", free_port());
    let config = write(
        d.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: mgmt\n  static_configs:\n  - targets: ['{metrics_addr}']\n"
        ),
    );
    let tsdb = d.path().join("tsdb");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={config}"))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus)");
    let query = "/api/v1/query?query=mgmt_checkapply_total%7Bkind%3D%22file%22%7D";
    let mut answer = String::new();
    let found = wait_until(std::time::Duration::from_secs(60), || {
        answer = http_get(&web, query).unwrap_or_default();
        let found = answer.contains("\"value\"");
        if !found {
            // Prometheus starts and scrapes once a second: no need to hurry it.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        found
    });
    // Stop it by its pid before asserting.
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(
        found.is_some(),
        "Prometheus never had the counter: {answer}"
    );
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["kind"], "file", "{answer}");
    assert_eq!(result["value"][1], "1", "{answer}");
    assert!(agent.terminate().success());
}

/// A graph that fails for good is ready too (systemd must not wait forever),
/// and its STATUS= says what failed.
#[test]
fn systemd_hears_ready_when_the_graph_failed_for_good() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: broken\nresources:\n  exec: [{name: fails, cmd: /bin/false, meta: {retry: 0}}]\n",
    );
    let agent = Agent::start_env(
        &["run", "--file", &g],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut heard = Vec::new();
    let mut buf = [0u8; 4096];
    while heard.last().map(String::as_str) != Some("READY=1") {
        let n = sock.recv(&mut buf).expect("a notification within 60 s");
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        heard
            .iter()
            .any(|m| m == "STATUS=converged: 1 resources, 1 failed"),
        "{heard:?}"
    );
    // Stopped, it exits 1: a resource failed for good.
    assert_eq!(agent.terminate().code(), Some(1));
}
