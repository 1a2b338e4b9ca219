//! The svc resource against a real systemd (in namespaces of its own, see
//! `system.rs`), over its D-Bus API, with a `sleep infinity` service of the
//! test's own.

use std::time::Duration;

use crate::support::{Agent, example, run_to_end_env, stderr, wait_until, write};
use crate::system::{NsSystemd, UserSystemd};

const SLEEPER: &str = "[Unit]\nDescription=mgmt test sleeper\n[Service]\n\
    ExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n";

/// The same for a user's manager (its default target is default.target).
const SLEEPER_USER: &str = "[Unit]\nDescription=mgmt test sleeper\n[Service]\n\
    ExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n";

fn active(sd: &NsSystemd, unit: &str) -> bool {
    sd.exec(&["systemctl", "is-active", unit]) == "active"
}

fn enabled(sd: &NsSystemd, unit: &str) -> bool {
    sd.exec(&["systemctl", "is-enabled", unit]) == "enabled"
}

#[test]
fn a_stopped_or_killed_service_is_restarted_and_startup_survives_disable() {
    let sd = NsSystemd::start(&[("mgmt-sleep.service", SLEEPER)]);
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  svc:\n  - name: mgmt-sleep\n    state: running\n    startup: enabled\n",
    );
    let agent = Agent::start_env(
        &["run", "--file", &g],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sd.address)],
    );
    agent.wait_for_line(
        "Svc[mgmt-sleep]: CheckApply: enabled, started",
        Duration::from_secs(30),
    );
    assert!(active(&sd, "mgmt-sleep.service") && enabled(&sd, "mgmt-sleep.service"));

    sd.exec(&["systemctl", "stop", "mgmt-sleep.service"]);
    let back = wait_until(Duration::from_secs(10), || {
        active(&sd, "mgmt-sleep.service")
    });
    eprintln!("systemctl stop: running again after {back:?}");
    assert!(back.is_some(), "not restarted after systemctl stop");

    let main = sd.property("mgmt-sleep.service", "MainPID");
    assert!(main.parse::<u32>().is_ok_and(|p| p > 1), "MainPID {main:?}");
    sd.exec(&["kill", "-9", &main]);
    let back = wait_until(Duration::from_secs(10), || {
        let now = sd.property("mgmt-sleep.service", "MainPID");
        now != main && now != "0" && active(&sd, "mgmt-sleep.service")
    });
    eprintln!("kill -9 of the main process: running again after {back:?}");
    assert!(back.is_some(), "not restarted after kill -9");

    sd.exec(&["systemctl", "disable", "mgmt-sleep.service"]);
    let back = wait_until(Duration::from_secs(10), || {
        enabled(&sd, "mgmt-sleep.service")
    });
    eprintln!("systemctl disable: enabled again after {back:?}");
    assert!(
        back.is_some(),
        "startup: enabled did not survive systemctl disable"
    );
    assert!(agent.terminate().success());
}

#[test]
fn svc1_runs_unchanged_and_a_notify_edge_restarts_the_service_when_its_config_changes() {
    // The original's example manages a service named purpleidea: give it one.
    let sd = NsSystemd::start(&[("purpleidea.service", SLEEPER)]);
    let out = run_to_end_env(
        &[
            "run",
            "--file",
            &example("svc1.yaml"),
            "--converged-timeout",
            "0",
        ],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sd.address)],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        active(&sd, "purpleidea.service") && enabled(&sd, "purpleidea.service"),
        "{err}"
    );

    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("sleeper.conf");
    let graph = |content: &str| {
        format!(
            "graph: g\nresources:\n  file:\n  - name: conf\n    path: {}\n    content: {content}\n  \
             svc:\n  - name: purpleidea\n    state: running\nedges:\n- name: e1\n  notify: true\n  \
             from: {{kind: file, name: conf}}\n  to: {{kind: svc, name: purpleidea}}\n",
            conf.display()
        )
    };
    let g = write(d.path(), "g.yaml", &graph("one"));
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", sd.address.as_str())];
    let before = sd.property("purpleidea.service", "MainPID");
    let out = run_to_end_env(&["run", "--file", &g, "--converged-timeout", "0"], &env);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let after = sd.property("purpleidea.service", "MainPID");
    assert_ne!(
        before, after,
        "a changed config restarts its service:\n{err}"
    );
    assert!(
        err.contains("Svc[purpleidea]: CheckApply: reloaded or restarted"),
        "{err}"
    );

    // Nothing changed upstream: no restart.
    let out = run_to_end_env(&["run", "--file", &g, "--converged-timeout", "0"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sd.property("purpleidea.service", "MainPID"), after);
}

#[test]
fn a_unit_that_does_not_exist_fails_alone_and_names_itself() {
    let sd = NsSystemd::start(&[]);
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("independent");
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  svc:\n  - name: mgmt-no-such-unit\n    state: running\n  \
             file:\n  - name: {}\n    content: x\n",
            file.display()
        ),
    );
    let out = run_to_end_env(
        &["run", "--file", &g, "--converged-timeout", "0"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sd.address)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unit mgmt-no-such-unit.service does not exist"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn a_session_service_is_managed_in_the_users_own_manager() {
    let sd = UserSystemd::start(&[("mgmt-sleep.service", SLEEPER_USER)]);
    // A user manager's first start enables and starts units by preset: undo it.
    sd.systemctl(&["disable", "--now", "mgmt-sleep.service"]);
    let is = |what: &str| {
        sd.systemctl(&[what, "mgmt-sleep.service"])
            .unwrap_or_default()
    };
    assert_eq!(
        (is("is-active"), is("is-enabled")),
        ("inactive".into(), "disabled".into())
    );
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  svc:\n  - name: mgmt-sleep\n    session: true\n    state: running\n    \
         startup: enabled\n",
    );
    let agent = Agent::start_env(
        &["run", "--file", &g],
        &[("DBUS_SESSION_BUS_ADDRESS", &sd.address)],
    );
    agent.wait_for_line(
        "Svc[mgmt-sleep]: CheckApply: enabled, started",
        Duration::from_secs(30),
    );
    let is = |what: &str| {
        sd.systemctl(&[what, "mgmt-sleep.service"])
            .unwrap_or_default()
    };
    assert_eq!(
        (is("is-active"), is("is-enabled")),
        ("active".into(), "enabled".into())
    );
    sd.systemctl(&["stop", "mgmt-sleep.service"]);
    let back = wait_until(Duration::from_secs(10), || is("is-active") == "active");
    eprintln!("systemctl --user stop: running again after {back:?}");
    assert!(back.is_some(), "not restarted in the user's manager");
    assert!(agent.terminate().success());
}

#[test]
fn a_unit_that_cannot_be_enabled_fails_once_and_does_not_loop() {
    // No [Install] section: `systemctl enable` has nothing to link.
    let sd = NsSystemd::start(&[(
        "mgmt-static.service",
        "[Unit]\nDescription=static\n[Service]\nExecStart=/bin/sleep infinity\n",
    )]);
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  svc:\n  - name: mgmt-static\n    startup: enabled\n",
    );
    let out = run_to_end_env(
        &["run", "--file", &g, "--converged-timeout", "2"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sd.address)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("unit mgmt-static.service cannot be enabled"),
        "{err}"
    );
    assert_eq!(
        err.matches("cannot be enabled").count(),
        1,
        "it looped:\n{err}"
    );
}
