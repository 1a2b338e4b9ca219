//! Bad input never touches the machine: a located error, a non-zero exit,
//! nothing on disk changed.

use crate::support::*;

/// Runs `mgmt run` on `body` (which also declares a valid file resource) and
/// returns stderr after checking the exit status and that the file was not made.
fn rejected(body: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("must-not-exist");
    let text = body.replace("TARGET", &target.to_string_lossy());
    let g = write(d.path(), "bad.yaml", &text);
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!target.exists(), "bad input changed the disk");
    assert!(
        err.lines().count() <= 20,
        "error longer than a screen:\n{err}"
    );
    assert!(
        err.contains(&format!("{}/bad.yaml", d.path().display())),
        "{err}"
    );
    err
}

const FILE: &str = "  file: [{name: f, path: TARGET, content: x}]\n";

#[test]
fn malformed_yaml() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}  noop: [{{name: a}}}}\n"
    ));
    assert!(err.contains("bad.yaml:4:"), "{err}");
}

#[test]
fn cycle() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}  noop: [{{name: a}}, {{name: b}}]\nedges:\n- {{name: e1, from: {{kind: noop, name: a}}, to: {{kind: noop, name: b}}}}\n- {{name: e2, from: {{kind: noop, name: b}}, to: {{kind: noop, name: a}}}}\n"
    ));
    assert!(
        err.contains("cycle: Noop[a] -> Noop[b] -> Noop[a]"),
        "{err}"
    );
}

#[test]
fn unknown_kind() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}  frob: [{{name: a}}]\n"
    ));
    assert!(err.contains("bad.yaml:4:3: unknown field `frob`"), "{err}");
}

#[test]
fn unknown_key() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}  noop: [{{name: a, colour: red}}]\n"
    ));
    assert!(
        err.contains("bad.yaml:4:") && err.contains("colour"),
        "{err}"
    );
}

#[test]
fn missing_edge_endpoint() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}edges:\n- {{name: e1, from: {{kind: noop, name: ghost}}, to: {{kind: file, name: f}}}}\n"
    ));
    assert!(
        err.contains("bad.yaml:5:") && err.contains("no resource Noop[ghost]"),
        "{err}"
    );
}

#[test]
fn invalid_value_names_the_resource() {
    let err = rejected(&format!(
        "graph: g\nresources:\n{FILE}  exec: [{{name: e, cmd: x, timeout: -1}}]\n"
    ));
    assert!(err.contains("Exec[e]: timeout (s) must be >= 0"), "{err}");
}

#[test]
fn missing_file() {
    let out = run_to_end(&["run", "--file", "/nonexistent/graph.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/graph.yaml"),
        "{}",
        stderr(&out)
    );
}
