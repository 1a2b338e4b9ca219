//! The Debian package (`cargo deb -p mgmt`; `./test.sh` builds it and names
//! it in `MGMT_DEB`): installed with dpkg, its `mgmt.service` started in a
//! real systemd of its own namespaces is `active` only once the graph
//! converged, shows its STATUS= line, and stops cleanly; the package is
//! purged afterwards.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use crate::system::NsSystemd;

/// `dpkg ARGS`, waiting (a minute at most) while another dpkg holds its lock:
/// PackageKit may be finishing a transaction of an earlier test.
fn dpkg(args: &[&str]) -> std::process::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("dpkg").args(args).output().unwrap();
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || std::time::Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Purges the package when the test ends, passed or not.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = dpkg(&["--purge", "mgmt"]);
        if !out.status.success() {
            eprintln!("dpkg --purge mgmt: {out:?}");
        }
    }
}

#[test]
fn the_package_runs_as_a_notify_service_in_a_real_systemd() {
    let deb = std::env::var("MGMT_DEB")
        .expect("MGMT_DEB: the package ./test.sh builds (cargo deb -p mgmt)");
    assert!(
        !Path::new("/usr/bin/mgmt").exists(),
        "/usr/bin/mgmt exists already: this test installs and purges the package"
    );
    let out = dpkg(&["-i", &deb]);
    let _installed = Installed;
    assert!(
        out.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shipped in [
        "/usr/bin/mgmt",
        "/lib/systemd/system/mgmt.service",
        "/etc/mgmt/graph.yaml",
        "/usr/share/man/man1/mgmt.1.gz",
        "/usr/share/bash-completion/completions/mgmt",
        "/usr/share/zsh/vendor-completions/_mgmt",
        "/usr/share/fish/vendor_completions.d/mgmt.fish",
    ] {
        assert!(Path::new(shipped).exists(), "{shipped} not installed");
    }
    // `cargo deb -p mgmt` alone made them (build.rs): the man page is the
    // one the installed binary prints, gzipped; the binary is stripped.
    let page = Command::new("gzip")
        .args(["-dc", "/usr/share/man/man1/mgmt.1.gz"])
        .output()
        .unwrap();
    let printed = Command::new("/usr/bin/mgmt").arg("man").output().unwrap();
    assert!(page.status.success() && printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        String::from_utf8_lossy(&printed.stdout),
        "the packaged man page is not the binary's"
    );
    let completion =
        std::fs::read_to_string("/usr/share/bash-completion/completions/mgmt").unwrap();
    assert!(completion.contains("--converged-timeout"), "{completion}");
    let binary = std::fs::read("/usr/bin/mgmt").unwrap();
    assert!(
        !binary.windows(7).any(|w| w == b".symtab"),
        "/usr/bin/mgmt is not stripped (it has a symbol table)"
    );
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/mgmt.conffiles").unwrap();
    assert!(conffiles.contains("/etc/mgmt/graph.yaml"), "{conffiles}");

    // The shipped unit, with a drop-in that keeps the test's state, ports
    // and graph off the machine's: a command that takes two seconds, then a
    // file.
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("marker");
    let graph = write(
        d.path(),
        "g.yaml",
        &format!(
            "graph: pkg\nresources:\n  exec: [{{name: slow, cmd: 'sleep 2; touch {}', shell: /bin/sh}}]\n  file: [{{name: f, path: {}, content: x}}]\nedges:\n- {{name: e, from: {{kind: exec, name: slow}}, to: {{kind: file, name: f}}}}\n",
            marker.display(),
            d.path().join("f").display()
        ),
    );
    let (c, p) = (free_port(), free_port());
    let dropin = format!(
        "[Service]\nExecStart=\nExecStart=/usr/bin/mgmt run --file {graph} --hostname pkg1 --prefix {} \
         --client-urls http://127.0.0.1:{c} --server-urls http://127.0.0.1:{p}\nStateDirectory=\n",
        d.path().join("prefix").display()
    );
    let sd = NsSystemd::start(&[("mgmt.service.d/test.conf", &dropin)]);
    sd.exec(&["systemctl", "start", "--no-block", "mgmt.service"]);
    let state = || sd.exec(&["systemctl", "is-active", "mgmt.service"]);
    // Every state it passes through until `active`: the command's two
    // seconds are spent `activating`, and `active` comes only after it.
    let mut seen = Vec::new();
    let active = wait_until(Duration::from_secs(60), || {
        let now = state();
        if now == "active" {
            assert!(
                marker.exists(),
                "active before the graph converged: {seen:?}"
            );
            return true;
        }
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        false
    });
    assert!(active.is_some(), "never active: {seen:?}");
    assert!(seen.iter().any(|s| s == "activating"), "{seen:?}");
    let status = sd.exec(&["systemctl", "status", "--no-pager", "mgmt.service"]);
    assert!(
        status.contains("Status: \"converged: 2 resources"),
        "{status}"
    );
    sd.exec(&["systemctl", "stop", "mgmt.service"]);
    assert_eq!(state(), "inactive");
    assert_eq!(sd.property("mgmt.service", "Result"), "success");
    assert_eq!(sd.property("mgmt.service", "ExecMainStatus"), "0");
}
