//! The pkg resource against the real thing: packagekitd (apt backend) and
//! polkitd on a private system bus, installing and removing real Debian
//! packages. These tests change the machine's packages: they share one
//! nextest group so they never run at once (`.config/nextest.toml`), and each
//! removes what it installed, auto-installed dependencies included.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Agent, cpu_ticks, example, run_to_end_env, stderr, wait_until, write};
use crate::system::PackageKitBus;

fn installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
}

/// Removes `names` (those installed) with the dependencies they pulled in,
/// now and again when dropped: a failed test leaves no package behind.
struct Cleanup(&'static [&'static str]);

impl Cleanup {
    fn new(names: &'static [&'static str]) -> Cleanup {
        let c = Cleanup(names);
        c.remove();
        c
    }

    fn remove(&self) {
        let present: Vec<&str> = self.0.iter().copied().filter(|n| installed(n)).collect();
        if present.is_empty() {
            return;
        }
        let ok = Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-y", "-q", "remove", "--autoremove"])
            .args(&present)
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok || std::thread::panicking(), "cannot remove {present:?}");
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The install transactions PackageKit ran for mgmt, by id, among the last
/// ten of its own history (all `pkcon get-transactions` shows).
fn installs_by_mgmt(bus: &PackageKitBus) -> BTreeSet<String> {
    let out = bus
        .command("pkcon")
        .arg("get-transactions")
        .output()
        .expect("pkcon is installed (apt-get install packagekit-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\nTransaction: ")
        .skip(1)
        .filter(|t| t.contains("Role: install-packages"))
        .filter(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with("Command line:") && l.ends_with("/mgmt"))
        })
        .filter_map(|t| t.lines().next().map(|id| id.trim().to_string()))
        .collect()
}

#[test]
fn autogroup2_installs_three_packages_in_one_packagekit_transaction_then_changes_nothing() {
    let _cleanup = Cleanup::new(&["powertop", "sl", "cowsay"]);
    let bus = PackageKitBus::start(true);
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())];
    let before = installs_by_mgmt(&bus);
    let graph = example("autogroup2.yaml");
    let args = ["run", "--file", &graph, "--converged-timeout", "0"];

    let started = Instant::now();
    let out = run_to_end_env(&args, &env);
    let err = stderr(&out);
    eprintln!("{err}\nfirst run: {:.1} s", started.elapsed().as_secs_f64());
    assert!(out.status.success(), "{err}");
    for p in ["powertop", "sl", "cowsay"] {
        assert!(installed(p), "{p} is not installed:\n{err}");
        assert!(
            err.contains(&format!("Pkg[{p}]: CheckApply: installed {p} ")),
            "{err}"
        );
    }
    assert!(
        err.contains("one transaction for 3 packages: cowsay powertop sl"),
        "{err}"
    );
    // PackageKit's percentage, as the transaction goes.
    assert!(err.contains("installing cowsay powertop sl: 100%"), "{err}");
    let after = installs_by_mgmt(&bus);
    assert_eq!(
        after.difference(&before).count(),
        1,
        "PackageKit's history: before {before:?}, after {after:?}"
    );

    let started = Instant::now();
    let again = run_to_end_env(&args, &env);
    let err = stderr(&again);
    eprintln!(
        "{err}\nsecond run: {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert!(again.status.success(), "{err}");
    assert!(
        !err.contains("CheckApply: "),
        "the second run changed something:\n{err}"
    );
    assert_eq!(installs_by_mgmt(&bus), after, "no new transaction");
}

#[test]
fn pkg1_installs_powertop_and_pkg2_removes_it_unchanged() {
    let _cleanup = Cleanup::new(&["powertop"]);
    let bus = PackageKitBus::start(true);
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())];
    for (example, want) in [("pkg1.yaml", true), ("pkg2.yaml", false)] {
        let out = run_to_end_env(
            &[
                "run",
                "--file",
                &crate::support::example(example),
                "--converged-timeout",
                "0",
            ],
            &env,
        );
        let err = stderr(&out);
        assert!(out.status.success(), "{example}: {err}");
        assert_eq!(installed("powertop"), want, "{example}: {err}");
    }
}

#[test]
fn noop_says_what_it_would_install_and_installs_nothing() {
    let _cleanup = Cleanup::new(&["sl"]);
    let bus = PackageKitBus::start(true);
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  pkg:\n  - name: sl\n    state: installed\n",
    );
    let out = run_to_end_env(
        &["run", "--file", &g, "--converged-timeout", "0", "--noop"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Pkg[sl]: CheckApply: would have: install sl"),
        "{err}"
    );
    assert!(!installed("sl"));
}

#[test]
fn removal_behind_mgmts_back_by_apt_get_or_dpkg_is_repaired_without_polling() {
    let _cleanup = Cleanup::new(&["cowsay"]);
    let bus = PackageKitBus::start(true);
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  pkg:\n  - name: cowsay\n    state: installed\n",
    );
    let agent = Agent::start_env(
        &["run", "--file", &g],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    agent.wait_for_line(
        "Pkg[cowsay]: CheckApply: installed cowsay",
        Duration::from_secs(300),
    );
    assert!(installed("cowsay"));

    // Converged: the watch is inotify on dpkg's database, so nothing runs.
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(agent.pid()) - before;
    eprintln!("CPU while converged for 2 s: {used} ticks");
    assert!(
        used <= 1,
        "a converged agent used {used} clock ticks of CPU"
    );

    for (how, cmd) in [
        (
            "apt-get remove",
            &["apt-get", "-y", "-q", "remove", "cowsay"][..],
        ),
        ("dpkg -r", &["dpkg", "-r", "cowsay"][..]),
    ] {
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!installed("cowsay"), "{how} did not remove it");
        let back = wait_until(Duration::from_secs(120), || installed("cowsay"));
        eprintln!("{how}: cowsay installed again after {back:?}");
        assert!(back.is_some(), "{how}: not repaired");
        agent.wait_for_line(
            "Pkg[cowsay]: CheckApply: installed cowsay",
            Duration::from_secs(30),
        );
    }
    assert!(agent.terminate().success());
}

#[test]
fn a_missing_package_fails_alone_and_names_itself() {
    let _cleanup = Cleanup::new(&["sl"]);
    let bus = PackageKitBus::start(true);
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("independent");
    // The missing package and sl share a group (one transaction): sl must
    // still be installed, and the file beside them still written.
    let g = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: g\nresources:\n  pkg:\n  - name: mgmt-no-such-package\n    state: installed\n  \
             - name: sl\n    state: installed\n  file:\n  - name: {}\n    content: x\n",
            file.display()
        ),
    );
    let out = run_to_end_env(
        &["run", "--file", &g, "--converged-timeout", "0"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("package mgmt-no-such-package not found"),
        "the error names the package:\n{err}"
    );
    assert!(installed("sl"), "the other member of the group:\n{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn without_packagekit_a_pkg_fails_at_once_with_a_clear_error() {
    let bus = PackageKitBus::start(false);
    let d = tempfile::tempdir().unwrap();
    let g = write(
        d.path(),
        "g.yaml",
        "graph: g\nresources:\n  pkg:\n  - name: sl\n    state: installed\n",
    );
    let started = Instant::now();
    let out = run_to_end_env(
        &["run", "--file", &g, "--converged-timeout", "0"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let err = stderr(&out);
    // Checks read dpkg's database; the install is what needs PackageKit.
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("PackageKit is not installed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "it waited");
}

#[test]
fn autoedges3_orders_the_package_before_the_files_and_the_service_it_ships() {
    let bus = PackageKitBus::start(true);
    let out = run_to_end_env(
        &["graph", "--file", &example("autoedges3.yaml")],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let edges: Vec<(String, String)> = g["resource_edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["auto"] == true)
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for to in ["File[file1]", "File[file2]", "Svc[drbd]"] {
        assert!(
            edges.contains(&("Pkg[drbd-utils]".to_string(), to.to_string())),
            "no Pkg[drbd-utils] -> {to} in {edges:?}\n{err}"
        );
    }
    // The original's directory with content: accepted, with a warning.
    assert!(err.contains("`content` is ignored"), "{err}");
    assert!(
        !installed("drbd-utils"),
        "listing a package does not install it"
    );

    // Where PackageKit cannot say what it ships: no package edges, no error.
    let bare = PackageKitBus::start(false);
    let out = run_to_end_env(
        &["graph", "--file", &example("autoedges3.yaml")],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bare.address)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !g["resource_edges"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["from"] == "Pkg[drbd-utils]"),
        "{g}"
    );
}
