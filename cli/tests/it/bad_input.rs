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

/// `--hostname` picks `PREFIX/HOSTNAME/`, which the store deletes when the
/// host stops being a member: a name that is not a host name exits 2 before
/// anything starts, and nothing beside or inside the prefix is touched.
#[test]
fn a_hostname_that_is_not_a_host_name_is_refused() {
    let top = tempfile::tempdir().unwrap();
    let prefix = top.path().join("p");
    std::fs::create_dir_all(prefix.join("h2")).unwrap();
    std::fs::write(prefix.join("h2/state"), "another host's").unwrap();
    std::fs::write(top.path().join("beside"), "keep").unwrap();
    let target = top.path().join("made");
    let g = write(
        top.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: {}, content: x}}]\n",
            target.display()
        ),
    );
    let long = "a".repeat(256);
    let absolute = top.path().display().to_string();
    for name in [
        "..",
        "",
        ".",
        "a/b",
        absolute.as_str(),
        "../x",
        long.as_str(),
        "a-",
        "a_b",
    ] {
        let port = free_port();
        let out = run_to_end(&[
            "run",
            "--file",
            &g,
            "--converged-timeout",
            "0",
            "--hostname",
            name,
            "--prefix",
            prefix.to_str().unwrap(),
            "--client-urls",
            &format!("http://127.0.0.1:{port}"),
            "--server-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name:?}: {err}");
        assert!(
            err.contains("--hostname: invalid host name"),
            "{name:?}: {err}"
        );
        assert!(!target.exists(), "{name:?}: the graph ran");
        assert_eq!(
            std::fs::read_to_string(top.path().join("beside")).unwrap(),
            "keep"
        );
        assert_eq!(
            std::fs::read_to_string(prefix.join("h2/state")).unwrap(),
            "another host's"
        );
        assert_eq!(
            std::fs::read_dir(&prefix).unwrap().count(),
            1,
            "{name:?} made something in the prefix"
        );
    }
}

#[test]
fn a_graph_for_an_invalid_hostname_is_a_located_error() {
    let err = rejected(&format!("graph: g\nhostname: ../h1\nresources:\n{FILE}"));
    assert!(
        err.contains("bad.yaml:2:11: hostname: invalid host name"),
        "{err}"
    );
}

/// A FIFO with no writer and a device that never ends are refused at once
/// (not waited on, not read into memory), as is a directory.
#[test]
fn the_graph_must_be_a_regular_file() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("graph.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fifo.to_str().unwrap();
    let dir = d.path().to_str().unwrap();
    for (path, what) in [
        (fifo, "a FIFO"),
        ("/dev/zero", "a character device"),
        (dir, "a directory"),
    ] {
        for cmd in ["run", "graph"] {
            let out = run_to_end(
                &[cmd, "--file", path, "--converged-timeout", "0"]
                    [..if cmd == "run" { 5 } else { 3 }],
            );
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} {path}: {err}");
            assert!(
                err.contains(&format!(
                    "error: {path}: the graph must be a regular file, this is {what}"
                )),
                "{cmd} {path}: {err}"
            );
        }
    }
}

#[test]
fn a_graph_over_the_size_cap_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  noop: [{name: a}]\n",
    );
    let with_cap = |cap: &str| {
        run_to_end(&[
            "run",
            "--file",
            &g,
            "--converged-timeout",
            "0",
            "--max-graph-bytes",
            cap,
        ])
    };
    let out = with_cap("10");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("larger than 10 bytes (raise --max-graph-bytes"),
        "{err}"
    );
    let out = with_cap("1000");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// TLS flags that do not fit the URLs: exit 2 with a message, before the
/// graph runs or anything listens.
#[test]
fn tls_flags_that_do_not_fit_the_urls_are_refused() {
    let top = tempfile::tempdir().unwrap();
    let pki = top.path().join("pki");
    let init = run_to_end(&["tls", "init", pki.to_str().unwrap(), "--hosts", "h1"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let f = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let (cert, key, ca) = (f("h1.crt"), f("h1.key"), f("ca.crt"));
    let target = top.path().join("made");
    let g = write(
        top.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file: [{{name: {}, content: x}}]\n",
            target.display()
        ),
    );
    let (c, p) = (free_port(), free_port());
    let http_c = format!("http://127.0.0.1:{c}");
    let https_c = format!("https://127.0.0.1:{c}");
    let https_p = format!("https://127.0.0.1:{p}");
    let http_p = format!("http://127.0.0.1:{p}");
    let mixed = format!("{http_c},https://127.0.0.1:{}", free_port());
    let missing = top.path().join("nope.crt").to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--client-urls", &mixed],
            "--client-urls mixes http:// and https://",
        ),
        (
            vec![
                "--client-urls",
                &http_c,
                "--cert-file",
                &cert,
                "--key-file",
                &key,
            ],
            "apply to https:// client URLs",
        ),
        (
            vec!["--client-urls", &https_c, "--trusted-ca-file", &ca],
            "need --cert-file and --key-file",
        ),
        (
            vec![
                "--client-urls",
                &https_c,
                "--cert-file",
                &cert,
                "--key-file",
                &key,
            ],
            "need --trusted-ca-file",
        ),
        (
            vec![
                "--client-urls",
                &https_c,
                "--cert-file",
                &missing,
                "--key-file",
                &key,
                "--trusted-ca-file",
                &ca,
            ],
            "nope.crt",
        ),
        (
            vec!["--server-urls", &http_p, "--peer-cert-file", &cert],
            "apply to https:// --server-urls",
        ),
        (
            vec![
                "--server-urls",
                &https_p,
                "--peer-cert-file",
                &cert,
                "--peer-key-file",
                &key,
            ],
            "--peer-trusted-ca-file",
        ),
        (
            vec!["--no-server", "--seeds", &https_c],
            "https:// seeds need --trusted-ca-file",
        ),
    ];
    let prefix = top.path().join("prefix");
    for (flags, message) in cases {
        let mut args = vec![
            "run",
            "--file",
            &g,
            "--converged-timeout",
            "0",
            "--hostname",
            "h1",
            "--prefix",
            prefix.to_str().unwrap(),
        ];
        if !flags.contains(&"--client-urls") {
            args.extend(["--client-urls", &http_c]);
        }
        if !flags.contains(&"--server-urls") {
            args.extend(["--server-urls", &http_p]);
        }
        args.extend(flags.iter().copied());
        let out = run_to_end(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(
            err.contains(message),
            "{flags:?}: wanted {message:?} in {err}"
        );
        assert!(!target.exists(), "{flags:?}: the graph ran");
        assert!(!prefix.exists(), "{flags:?}: the store started");
    }
}
