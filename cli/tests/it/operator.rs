//! What an operator reads of a run: JSON log lines that `jq` takes one by
//! one, the summary line, `--report`, shell completions and the man page.

use std::process::{Command, Stdio};

use crate::support::*;

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
    let mut jq = Command::new("jq")
        .args(["-c", "select(.time and .level and .message)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jq is installed");
    use std::io::Write;
    jq.stdin.take().unwrap().write_all(logs.as_bytes()).unwrap();
    let parsed = jq.wait_with_output().unwrap();
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
    let mut bash = Command::new("bash")
        .args(["-c", "source /dev/stdin; complete -p mgmt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    bash.stdin
        .take()
        .unwrap()
        .write_all(&script.stdout)
        .unwrap();
    let out = bash.wait_with_output().unwrap();
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
