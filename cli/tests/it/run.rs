use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::*;

fn file_graph(path: &str, extra: &str) -> String {
    format!(
        "graph: g\nresources:\n  noop: [{{name: n1}}]\n  file:\n  - name: f1\n    path: {path}\n    content: \"hello\\n\"\n    mode: \"0644\"\n{extra}edges:\n- {{name: e1, from: {{kind: noop, name: n1}}, to: {{kind: file, name: f1}}}}\n"
    )
}

#[test]
fn run_creates_the_file_and_exits_zero_when_converged() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("sub/f1");
    let g = write(
        d.path(),
        "g.yaml",
        &file_graph(&target.to_string_lossy(), ""),
    );
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello\n");
    assert!(
        stderr(&out).contains("File[f1]: CheckApply: created parent"),
        "{}",
        stderr(&out)
    );
    // A second run finds nothing to do.
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("CheckApply: "), "{}", stderr(&out));
}

#[test]
fn drift_is_repaired_at_once_and_idle_costs_no_cpu() {
    // Not under /tmp: the agent watches every ancestor of its file, and other
    // tests churning /tmp would wake it (that is events, not polling).
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let target = d.path().join("f1");
    let g = write(
        d.path(),
        "g.yaml",
        &file_graph(&target.to_string_lossy(), ""),
    );
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line(
        "File[f1]: CheckApply: created file",
        Duration::from_secs(10),
    );
    let good = || std::fs::read_to_string(&target).ok().as_deref() == Some("hello\n");
    let mode_ok = || {
        std::fs::metadata(&target)
            .map(|m| m.permissions().mode() & 0o777 == 0o644)
            .unwrap_or(false)
    };

    std::fs::write(&target, "drift\n").unwrap();
    let edit = wait_until(Duration::from_secs(5), good).expect("content repaired");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let chmod = wait_until(Duration::from_secs(5), mode_ok).expect("mode repaired");
    std::fs::remove_file(&target).unwrap();
    let delete = wait_until(Duration::from_secs(5), || good() && mode_ok()).expect("file restored");
    eprintln!("drift repair latency: edit {edit:?}, chmod {chmod:?}, delete {delete:?}");

    // Converged and idle: no polling loop means no CPU time at all.
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(agent.pid()) - before;
    eprintln!("CPU while idle for 2 s: {used} ticks");
    assert!(used <= 1, "idle agent used {used} clock ticks of CPU");
    assert!(agent.terminate().success());
}

#[test]
fn parent_directory_deleted_and_recreated_is_repaired() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("a/b/f1");
    let g = write(
        d.path(),
        "g.yaml",
        &file_graph(&target.to_string_lossy(), ""),
    );
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line(
        "File[f1]: CheckApply: created parent",
        Duration::from_secs(10),
    );
    // Move the whole tree away in one step (rm -rf would race with the repair).
    std::fs::rename(d.path().join("a"), d.path().join("moved")).unwrap();
    wait_until(Duration::from_secs(5), || target.exists())
        .expect("file restored after its parents vanished");
    std::fs::rename(d.path().join("a/b"), d.path().join("moved-b")).unwrap();
    wait_until(Duration::from_secs(5), || target.exists())
        .expect("file restored after its parent vanished");
    assert!(agent.terminate().success());
}

#[test]
fn independent_execs_run_in_parallel_and_the_join_waits_for_all() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy();
    let mut y = String::from("graph: par\nresources:\n  exec:\n");
    for i in 1..=4 {
        y += &format!(
            "  - {{name: s{i}, shell: /bin/sh, cmd: 'date +%s%N > {dir}/start{i}; sleep 1; date +%s%N > {dir}/end{i}'}}\n"
        );
    }
    y += &format!("  - {{name: join, shell: /bin/sh, cmd: 'date +%s%N > {dir}/join'}}\nedges:\n");
    for i in 1..=4 {
        y += &format!(
            "- {{name: e{i}, from: {{kind: exec, name: s{i}}}, to: {{kind: exec, name: join}}}}\n"
        );
    }
    let g = write(d.path(), "g.yaml", &y);
    let started = Instant::now();
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |n: &str| -> u128 {
        std::fs::read_to_string(d.path().join(n))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let last_start = (1..=4).map(|i| read(&format!("start{i}"))).max().unwrap();
    let first_end = (1..=4).map(|i| read(&format!("end{i}"))).min().unwrap();
    let last_end = (1..=4).map(|i| read(&format!("end{i}"))).max().unwrap();
    eprintln!("4 x sleep 1 + join converged in {took:?}");
    assert!(
        last_start < first_end,
        "the four execs did not overlap: they ran one after another"
    );
    assert!(
        read("join") >= last_end,
        "join ran before all four finished"
    );
}

#[test]
fn noop_reports_and_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("f1");
    let g = write(
        d.path(),
        "g.yaml",
        &file_graph(&target.to_string_lossy(), ""),
    );
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0", "--noop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!target.exists());
    assert!(
        stderr(&out).contains("File[f1]: CheckApply: would have: created file"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&target, "other").unwrap();
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0", "--noop"]);
    assert!(
        stderr(&out).contains("would have: changed content"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "other");
}

#[test]
fn permanent_failure_exits_nonzero_and_blocks_only_dependents() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy();
    let y = format!(
        "graph: g\nresources:\n  exec:\n  - {{name: bad, cmd: 'false', meta: {{retry: 2, delay: 10}}}}\n  - {{name: after, shell: /bin/sh, cmd: 'touch {dir}/after'}}\n  - {{name: other, shell: /bin/sh, cmd: 'touch {dir}/other'}}\nedges:\n- {{name: e, from: {{kind: exec, name: bad}}, to: {{kind: exec, name: after}}}}\n"
    );
    let g = write(d.path(), "g.yaml", &y);
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("retrying in 10 ms").count(), 2, "{err}");
    assert!(
        err.contains("Exec[bad]: failed: Exec[bad]: \"false\" exited with status 1"),
        "{err}"
    );
    assert!(!d.path().join("after").exists());
    assert!(d.path().join("other").exists());
}

#[test]
fn notify_edge_reruns_exec_when_upstream_changes() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("conf");
    let log = d.path().join("log");
    let y = format!(
        "graph: g\nresources:\n  file: [{{name: conf, path: {t}, content: \"v1\\n\"}}]\n  exec: [{{name: reload, shell: /bin/sh, cmd: 'echo reload >> {l}'}}]\nedges:\n- {{name: e, from: {{kind: file, name: conf}}, to: {{kind: exec, name: reload}}, notify: true}}\n",
        t = target.display(),
        l = log.display()
    );
    let g = write(d.path(), "g.yaml", &y);
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line("Exec[reload]: CheckApply: ran", Duration::from_secs(10));
    std::fs::write(&target, "drift\n").unwrap();
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            == 2
    })
    .expect("a change to the file refreshes the exec");
    assert!(agent.terminate().success());
}

#[test]
fn watchcmd_lines_rerun_the_exec() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let y = format!(
        "graph: g\nresources:\n  exec:\n  - name: w\n    shell: /bin/sh\n    cmd: 'echo run >> {l}'\n    watchshell: /bin/sh\n    watchcmd: 'sleep 0.2; echo a; sleep 0.2; echo b; sleep 30'\n",
        l = log.display()
    );
    let g = write(d.path(), "g.yaml", &y);
    let agent = Agent::start(&["run", "--file", &g]);
    wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
            == 3
    })
    .expect("the first run, then one run per watch line");
    assert!(agent.terminate().success());
}

#[test]
fn sigterm_ends_running_commands() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("pid");
    let y = format!(
        "graph: g\nresources:\n  exec: [{{name: long, shell: /bin/sh, cmd: 'echo $$ > {p}; exec sleep 1000'}}]\n",
        p = pidfile.display()
    );
    let g = write(d.path(), "g.yaml", &y);
    let agent = Agent::start(&["run", "--file", &g]);
    wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .expect("exec started");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    agent.terminate();
    let gone = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    });
    assert!(gone.is_some(), "the exec's process {pid} outlived mgmt");
}

#[test]
fn graphviz_and_graph_json_describe_the_compiled_graph() {
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        &file_graph("/nonexistent-mgmt-test/f", ""),
    );
    let out = run_to_end(&["graph", "--file", &g]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vertices"][0]["id"], "File[f1]");
    assert_eq!(json["edges"][0]["from"], "Noop[n1]");
    assert_eq!(json["edges"][0]["auto"], false);
    let dot = d.path().join("g.dot");
    let out = run_to_end(&[
        "run",
        "--file",
        &g,
        "--noop",
        "--converged-timeout",
        "0",
        "--graphviz",
        &dot.to_string_lossy(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(&dot)
            .unwrap()
            .contains("\"Noop[n1]\" -> \"File[f1]\";")
    );
}

#[test]
fn version_prints_the_version() {
    let out = run_to_end(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("mgmt {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_example_compiles() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            // Hermetic: no system bus, so package AutoEdges ask no PackageKit.
            let out = run_to_end_env(
                &["graph", "--file", &path.to_string_lossy()],
                &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
            );
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
            n += 1;
        }
    }
    assert!(n >= 5, "found only {n} examples");
}

/// Inotify watches a process holds, from /proc/PID/fdinfo.
pub fn inotify_watches(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}

#[test]
fn ten_thousand_files_need_few_watches_and_drift_is_repaired() {
    let d = tempfile::tempdir().unwrap();
    let mut y = String::from("graph: many\nresources:\n  file:\n");
    for dir in 0..4 {
        for i in 0..2500 {
            y += &format!(
                "  - {{name: f{dir}-{i}, path: {}/d{dir}/f{i}, content: \"hello {i}\\n\"}}\n",
                d.path().display()
            );
        }
    }
    let g = write(d.path(), "g.yaml", &y);
    let agent = Agent::start(&["run", "--file", &g]);
    let last = d.path().join("d3/f2499");
    wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&last).is_ok_and(|s| s == "hello 2499\n")
    })
    .expect("all files created");
    let watches = inotify_watches(agent.pid());
    eprintln!("10 000 managed files in 4 directories: {watches} inotify watches");
    assert!(watches <= 32, "{watches} inotify watches for 4 directories");

    let victim = d.path().join("d1/f1234");
    std::fs::write(&victim, "drift").unwrap();
    let took = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&victim).is_ok_and(|s| s == "hello 1234\n")
    })
    .expect("drift repaired");
    eprintln!("drift repair with 10 000 managed files: {took:?}");
    assert!(agent.terminate().success());
}

#[test]
fn drift_in_a_group_rechecks_only_the_member_it_touched() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    // Converged before the start, so the only writes are ours.
    std::fs::write(&a, "A\n").unwrap();
    std::fs::write(&b, "B\n").unwrap();
    let y = format!(
        "graph: pair\nresources:\n  file:\n  - {{name: a, path: {}, content: \"A\\n\"}}\n  - {{name: b, path: {}, content: \"B\\n\"}}\n",
        a.display(),
        b.display()
    );
    let g = write(d.path(), "g.yaml", &y);
    let agent = Agent::start_with_log(&["run", "--file", &g], "debug");
    // The first run is full: both members are checked (b is logged last).
    agent.wait_for_line("File[b]: CheckApply: ok", Duration::from_secs(10));
    // Results are logged in member order, so a CheckApply of a would show
    // before b's repair: until then, a must not be looked at.
    std::fs::write(&b, "drift").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = agent.lines.recv_timeout(left).expect("b repaired");
        assert!(
            !line.contains("File[a]: CheckApply"),
            "a was re-checked: {line}"
        );
        if line.contains("File[b]: CheckApply: changed content") {
            break;
        }
    }
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "B\n");
    assert!(agent.terminate().success());
}

/// Reads one line from a child's pipe, then closes the reading end (`| head -1`).
fn first_line_then_close(pipe: impl std::io::Read) -> String {
    use std::io::BufRead;
    let mut first = String::new();
    std::io::BufReader::new(pipe).read_line(&mut first).unwrap();
    first
}

/// Logs into a pipe whose reader goes away after one line (`2>&1 | head -1`,
/// a restarted journald, a closed terminal): the agent goes on applying,
/// watching and repairing, and exits with the status it would have had.
#[test]
fn a_closed_log_pipe_never_stops_the_agent() {
    let d = tempfile::tempdir().unwrap();
    let files: Vec<_> = (0..10).map(|i| d.path().join(format!("f{i}"))).collect();
    let mut g =
        String::from("graph: g\nresources:\n  exec: [{name: wait, cmd: sleep 0.3}]\n  file:\n");
    let mut edges = String::from("edges:\n");
    for (i, f) in files.iter().enumerate() {
        g += &format!("  - {{name: f{i}, path: {}, content: x}}\n", f.display());
        edges += &format!(
            "- {{name: e{i}, from: {{kind: exec, name: wait}}, to: {{kind: file, name: f{i}}}}}\n"
        );
    }
    let g = write(d.path(), "g.yaml", &(g + &edges));
    for timeout in ["0", "-1"] {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let mut child = mgmt()
            .args([
                "run",
                "--no-server",
                "--file",
                &g,
                "--converged-timeout",
                timeout,
            ])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Every later log line meets a closed pipe.
        let first = first_line_then_close(child.stderr.take().unwrap());
        assert!(first.contains("INFO"), "{first}");
        let all_made = || {
            files
                .iter()
                .all(|f| std::fs::read_to_string(f).is_ok_and(|t| t == "x"))
        };
        assert!(
            wait_until(Duration::from_secs(20), all_made).is_some(),
            "not applied after the log pipe closed (timeout {timeout})"
        );
        if timeout == "-1" {
            // Still watching: drift is repaired, and SIGTERM stops it cleanly.
            std::fs::write(&files[3], "drift").unwrap();
            assert!(
                wait_until(Duration::from_secs(10), all_made).is_some(),
                "drift not repaired"
            );
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("mgmt hung after its log pipe closed (timeout {timeout})");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "timeout {timeout}: {status}");
    }
}

/// `mgmt graph | head -1` is not an error.
#[test]
fn a_closed_stdout_ends_mgmt_graph_quietly() {
    let d = tempfile::tempdir().unwrap();
    let mut g = String::from("graph: g\nresources:\n  noop:\n");
    for i in 0..2000 {
        g += &format!("  - name: n{i}\n");
    }
    let g = write(d.path(), "g.yaml", &g);
    let mut child = mgmt()
        .args(["graph", "--file", &g])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = first_line_then_close(child.stdout.take().unwrap());
    let out = child.wait_with_output().unwrap();
    assert_eq!(first.trim(), "{");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A run killed mid-apply leaves its temp files beside the targets (never a
/// half-written target). The next run removes them: only names of mgmt's
/// pattern, only beside files the graph manages, only of writers that are gone.
#[test]
fn temp_files_of_a_killed_run_are_removed_on_start() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("conf");
    std::fs::create_dir_all(&dir).unwrap();
    // A pid that is certainly gone: a child that exited and was reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let alive = std::process::id();
    let stale: Vec<_> = ["a", "b"]
        .iter()
        .map(|f| dir.join(format!(".{f}.mgmt-{dead}.tmp")))
        .collect();
    let kept = [
        dir.join(format!(".a.mgmt-{alive}.tmp")), // a live writer's
        dir.join(format!(".unmanaged.mgmt-{dead}.tmp")), // beside no managed file
        dir.join(format!(".a.mgmt-{dead}.tmp.bak")), // not our pattern
        dir.join(format!("a.mgmt-{dead}.tmp")),
    ];
    for p in stale.iter().chain(&kept) {
        std::fs::write(p, "partial").unwrap();
    }
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - {{name: {0}/a, content: x}}\n  - {{name: {0}/b, content: y}}\n",
            dir.display()
        ),
    );
    // --noop changes nothing, temp files included, and says what it would do.
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0", "--noop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stale.iter().all(|p| p.exists()));
    assert!(stderr(&out).contains("would remove"), "{}", stderr(&out));
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for p in &stale {
        assert!(!p.exists(), "{} left", p.display());
        assert!(
            stderr(&out).contains(&format!("removed {}, left by a killed run", p.display())),
            "{}",
            stderr(&out)
        );
    }
    for p in &kept {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            "partial",
            "{}",
            p.display()
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "x");
}

/// AutoGroup's reachability is linear in the graph for chains: a chain of
/// 150 000 noops (every pair comparable, nothing groups) compiles under a
/// 1 GiB address-space limit. The full n^2 closure needed 5.5 GB and aborted.
#[test]
fn a_chain_of_150_000_noops_compiles_in_bounded_memory() {
    use std::os::unix::process::CommandExt;
    let n = 150_000;
    let mut g = String::from("graph: chain\nresources:\n  noop:\n");
    for i in 0..n {
        g += &format!("  - name: n{i:06}\n");
    }
    g += "edges:\n";
    for i in 1..n {
        g += &format!(
            "- {{from: {{kind: noop, name: n{:06}}}, to: {{kind: noop, name: n{i:06}}}}}\n",
            i - 1
        );
    }
    let d = tempfile::tempdir().unwrap();
    let g = write(d.path(), "chain.yaml", &g);
    let limit = 1 << 30;
    let mut cmd = mgmt();
    cmd.args(["graph", "--file", &g]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vertices"].as_array().unwrap().len(), n);
    assert_eq!(json["edges"].as_array().unwrap().len(), n - 1);
}

/// mgmt's own atomic writes are not taken for drift (one CheckApply per
/// change, not one more for its echo), but a rename over a managed file by
/// anyone else, right after one of ours, is.
#[test]
fn a_rename_over_a_managed_file_is_drift_even_right_after_our_own_write() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - {{name: f, path: {}, content: \"ours\\n\"}}\n",
            f.display()
        ),
    );
    let agent = Agent::start(&["run", "--file", &g]);
    agent.wait_for_line("File[f]: CheckApply: created file", Duration::from_secs(20));
    for round in 0..3 {
        let tmp = d.path().join(format!("theirs{round}"));
        std::fs::write(&tmp, "theirs\n").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        let took = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&f).is_ok_and(|s| s == "ours\n")
        });
        eprintln!("rename over the file, round {round}: repaired after {took:?}");
        assert!(
            took.is_some(),
            "round {round}: a rename by someone else was not repaired"
        );
    }
    assert!(agent.terminate().success());
}

/// With many agents on one machine the per-user inotify limit runs out.
/// Here a user namespace of the test's own sets it to 0 for the agent
/// alone (`user.max_inotify_instances` is per user namespace): the agent
/// stays up, its store serves, its file is still made, and the watch
/// failure names the cause; once instances free up, the file is watched
/// again.
#[test]
fn an_agent_without_inotify_stays_up_says_why_and_watches_once_it_can() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("f");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - name: {}\n    content: \"hi\\n\"\n",
            target.display()
        ),
    );
    let client = free_port();
    let mut c = std::process::Command::new("unshare");
    c.args(["--user", "--map-root-user", "--", "sh", "-ec"])
        .arg("echo 0 > /proc/sys/user/max_inotify_instances; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_mgmt"))
        .args(["run", "--file", &g, "--hostname", "h1", "--prefix"])
        .arg(d.path().join("state"))
        .arg("--client-urls")
        .arg(format!("http://127.0.0.1:{client}"))
        .arg("--peer-urls")
        .arg(format!("http://127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "info");
    let agent = Agent::spawn(c);
    agent.wait_for_line("cannot start the file watcher", Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(20), || std::fs::read_to_string(&target)
            .is_ok_and(|t| t == "hi\n"))
        .is_some(),
        "the file was not made"
    );
    etcdctl(client, &["put", "k", "v"]);
    assert_eq!(
        etcdctl(client, &["get", "k", "--print-value-only"]).trim(),
        "v"
    );
    // Instances free up (here: the namespace's limit is raised): the
    // watcher starts, and drift of the file is repaired from its watch.
    let raised = std::process::Command::new("nsenter")
        .args(["--target", &agent.pid().to_string(), "--user", "--"])
        .args([
            "sh",
            "-c",
            "echo 128 > /proc/sys/user/max_inotify_instances",
        ])
        .status()
        .unwrap();
    assert!(raised.success());
    agent.wait_for_line("file resources are watched again", Duration::from_secs(10));
    std::fs::write(&target, "drifted\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&target)
            .is_ok_and(|t| t == "hi\n"))
        .is_some(),
        "drift was not repaired once the watcher started"
    );
    assert!(agent.terminate().success());
}

/// `   0.004302647s  INFO ` of a human log line: its stamp in seconds, then its level.
fn stamp_and_level(line: &str) -> (f64, &str) {
    let (stamp, rest) = line.trim_start().split_once("s ").expect(line);
    let (secs, nanos) = stamp.split_once('.').expect(line);
    assert!(
        secs.bytes().all(|b| b.is_ascii_digit()) && nanos.len() == 9,
        "{line}"
    );
    (
        stamp.parse().expect(line),
        rest.split(' ').nth(1).expect(line),
    )
}

#[test]
fn the_compile_s_notes_are_log_lines_like_the_others_and_come_first() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("sub");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  file:\n  - {{name: sub, path: {0}/, state: exists}}\n  - {{name: f, path: {0}/f, content: x}}\n",
            dir.display()
        ),
    );
    let out = run_to_end(&[
        "run",
        "--file",
        &g,
        "--converged-timeout",
        "0",
        "--no-server",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {err}"))
    };
    let note = line("AutoEdge: adding File[sub] -> File[f]");
    let running = line("running graph");
    let (note_at, note_level) = stamp_and_level(note);
    let (running_at, running_level) = stamp_and_level(running);
    assert_eq!((note_level, running_level), ("INFO", "INFO"), "{err}");
    assert!(note_at <= running_at, "{err}");
    assert_eq!(
        note.find("AutoEdge"),
        running.find("running"),
        "the same columns:\n{note}\n{running}"
    );
}
