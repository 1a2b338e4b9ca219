//! timer and msg: ticks from the engine's clock, refreshes to what follows.

use std::time::{Duration, Instant};

use crate::support::{Agent, example, run_to_end, stderr, wait_until, write};

#[test]
fn timer1_and_msg1_run_unchanged_and_a_timer_alone_does_not_hold_off_convergence() {
    for (file, line) in [
        (
            "timer1.yaml",
            "Exec[exec1]: CheckApply: ran \"echo hello world\"",
        ),
        (
            "timer2.yaml",
            "Exec[exec2]: CheckApply: ran \"echo hello world 60\"",
        ),
        ("msg1.yaml", "Msg[msg1]: mgmt logged this message"),
    ] {
        let started = Instant::now();
        let out = run_to_end(&["run", "--file", &example(file), "--converged-timeout", "1"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{file}: {err}");
        assert!(err.contains(line), "{file}: {err}");
        // The next tick is 30 s away: the run converged a second after the first.
        assert!(err.contains("converged"), "{file}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{file} waited for a tick"
        );
    }
}

#[test]
fn a_timer_refreshes_what_follows_it_every_interval() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("ticks");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  timer:\n  - name: t\n    interval: 1\n  exec:\n  - name: e\n    \
             cmd: echo tick >> {}\n    shell: /bin/sh\n  msg:\n  - name: m\n    body: ticked\n\
             edges:\n- {{name: e1, from: {{kind: timer, name: t}}, to: {{kind: exec, name: e}}}}\n\
             - {{name: e2, from: {{kind: timer, name: t}}, to: {{kind: msg, name: m}}}}\n",
            out.display()
        ),
    );
    let agent = Agent::start(&["run", "--file", &g]);
    let lines = || {
        std::fs::read_to_string(&out)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let took = wait_until(Duration::from_secs(15), || lines() >= 4);
    eprintln!("four runs of the exec after {took:?}");
    assert!(
        took.is_some(),
        "the timer did not refresh its child: {} runs",
        lines()
    );
    for _ in 0..3 {
        agent.wait_for_line("Msg[m]: ticked", Duration::from_secs(5));
    }
    assert!(agent.terminate().success());
}

#[test]
fn a_msg_for_the_journal_says_plainly_when_there_is_none() {
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  msg:\n  - name: m\n    body: hello journal\n    priority: Notice\n    \
         journal: true\n    fields:\n      APP: test\n",
    );
    let out = run_to_end(&["run", "--file", &g, "--converged-timeout", "0"]);
    let err = stderr(&out);
    assert!(
        err.contains("Msg[m]: hello journal (APP=\"test\")"),
        "{err}"
    );
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        assert!(out.status.success(), "{err}");
        assert!(err.contains("sent it to the journal"), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("journal: /run/systemd/journal/socket does not exist: no systemd journal runs on this machine"),
            "{err}"
        );
    }
}
