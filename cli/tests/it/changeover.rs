//! Live graphs: `mgmt run` watches its `--file` and changes the graph over
//! when it changes: what stayed the same keeps running without a CheckApply.

use std::path::Path;
use std::time::Duration;

use crate::support::{Agent, wait_until, write};

/// 1 000 files in 10 directories, with `changed` given other content.
fn thousand(dir: &Path, changed: Option<usize>) -> String {
    let mut y = String::from("graph: many\nresources:\n  file:\n");
    for i in 0..1000 {
        let content = if Some(i) == changed {
            "changed"
        } else {
            "same"
        };
        y += &format!(
            "  - {{name: f{i}, path: {}/d{}/f{i}, content: \"{content} {i}\\n\"}}\n",
            dir.display(),
            i % 10
        );
    }
    y
}

/// CheckApplies the agent logs from now on, up to `line` (waited for).
fn check_applies_until(agent: &Agent, line: &str, within: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = agent
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line containing {line:?}; CheckApplies: {seen:?}"));
        if l.contains(": CheckApply: ") {
            seen.push(l.clone());
        }
        if l.contains(line) {
            return seen;
        }
    }
}

#[test]
fn an_edit_of_one_resource_in_a_running_1000_resource_graph_checks_only_that_one() {
    let d = tempfile::tempdir().unwrap();
    let g = write(d.path(), "g.yaml", &thousand(d.path(), None));
    let agent = Agent::start_with_log(&["run", "--file", &g], "debug,notify=info,mio=info");
    let last = d.path().join("d9/f999");
    agent.wait_for_line(
        "File[f999]: CheckApply: created file",
        Duration::from_secs(60),
    );
    assert!(last.exists());
    // Let the watch events of its own writes settle.
    std::thread::sleep(Duration::from_millis(500));
    while agent.lines.try_recv().is_ok() {}

    // An editor's save: a temp file renamed over the graph.
    let started = std::time::Instant::now();
    write(d.path(), "g.yaml.swp", &thousand(d.path(), Some(123)));
    std::fs::rename(d.path().join("g.yaml.swp"), &g).unwrap();
    let target = d.path().join("d3/f123");
    let took = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&target).is_ok_and(|s| s == "changed 123\n")
    });
    eprintln!(
        "saved -> applied on disk: {took:?} ({:?} since the save began)",
        started.elapsed()
    );
    assert!(took.is_some(), "the change was not applied");
    let runs = check_applies_until(
        &agent,
        "File[f123]: CheckApply: changed content",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut runs = runs;
    while let Ok(l) = agent.lines.try_recv() {
        if l.contains(": CheckApply: ") {
            runs.push(l);
        }
    }
    eprintln!("CheckApplies after the changeover: {}", runs.len());
    // One: the change itself (the echo of its own write is not drift).
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(agent.terminate().success());
}

#[test]
fn an_invalid_edit_keeps_the_running_graph_and_its_drift_repair() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    let good = format!(
        "graph: g\nresources:\n  file:\n  - {{name: f, path: {}, content: \"ok\\n\"}}\n",
        f.display()
    );
    let g = write(d.path(), "g.yaml", &good);
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line("File[f]: CheckApply: created file", Duration::from_secs(20));
    write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  file:\n  - {name: f, contnet: x}\n",
    );
    let err = agent.wait_for_line("unknown field `contnet`", Duration::from_secs(10));
    assert!(err.contains("g.yaml:4:"), "located: {err}");
    agent.wait_for_line(
        "the running graph goes on unchanged",
        Duration::from_secs(5),
    );
    std::fs::write(&f, "drift\n").unwrap();
    let took = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&f).is_ok_and(|s| s == "ok\n")
    });
    eprintln!("drift repaired under the old graph after {took:?}");
    assert!(took.is_some(), "the old graph stopped repairing");

    // A valid edit later takes over, and a removed resource is left as it is.
    let g2 = d.path().join("g2");
    write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - {{name: g2, path: {}, content: \"two\\n\"}}\n",
            g2.display()
        ),
    );
    assert!(wait_until(Duration::from_secs(10), || g2.exists()).is_some());
    agent.wait_for_line("1 started, 1 stopped", Duration::from_secs(5));
    std::fs::write(&f, "left alone\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "left alone\n",
        "f is no longer managed"
    );
    assert!(agent.terminate().success());
}
