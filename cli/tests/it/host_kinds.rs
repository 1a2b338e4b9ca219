//! The kinds that manage a host's own configuration (`user`, `group`,
//! `line`, `sysctl`, `mount`) against the real tools and the real kernel.
//! The agent runs in a mount namespace of its own where a private copy of
//! `/etc` is bind-mounted over `/etc` (the shadow tools replace
//! `/etc/passwd` and friends by rename, which a bind mount of a single file
//! would refuse) and `/home`, `/var/log` and `/var/mail` are empty tmpfs, in
//! a network namespace of its own for `net.*` keys; each test checks
//! afterwards that the host's own files are unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The host files no test may change.
const HOST_FILES: [&str; 7] = [
    "/etc/hostname",
    "/proc/sys/kernel/hostname",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/fstab",
];

fn host_files() -> Vec<(String, Option<Vec<u8>>)> {
    HOST_FILES
        .iter()
        .map(|f| (f.to_string(), std::fs::read(f).ok()))
        .collect()
}

/// A private `/etc` for one test: a copy of the host's, and a check on drop
/// that the host's account files did not change.
struct PrivateEtc {
    dir: tempfile::TempDir,
    host_before: Vec<(String, Option<Vec<u8>>)>,
    home_before: Vec<PathBuf>,
}

fn listing(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

impl PrivateEtc {
    fn new() -> PrivateEtc {
        let dir = tempfile::tempdir().unwrap();
        let copy = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(dir.path().join("etc"))
            .status()
            .unwrap();
        assert!(copy.success(), "cp -a /etc");
        PrivateEtc {
            dir,
            host_before: host_files(),
            home_before: listing("/home"),
        }
    }

    /// A file of the private `/etc`, as the host sees it.
    fn etc(&self, name: &str) -> PathBuf {
        self.dir.path().join("etc").join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.etc(name)).unwrap_or_default()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `mgmt args...` inside a new mount namespace with this `/etc`.
    fn mgmt(&self, args: &[&str]) -> Command {
        self.mgmt_in(&[], args)
    }

    /// [`PrivateEtc::mgmt`] in more new namespaces (`--net`, `--uts`).
    fn mgmt_in(&self, namespaces: &[&str], args: &[&str]) -> Command {
        // The script refuses to start mgmt unless every namespace asked for
        // is really a new one: a test must never reach the host's settings.
        const SETUP: &str = r#"etc=$1; mgmt=$2; shift 2
for ns in $MGMT_TEST_NEW_NS; do
    eval "host=\$MGMT_TEST_HOST_NS_$ns"
    if [ "$(readlink /proc/self/ns/$ns)" = "$host" ]; then
        echo "not in a new $ns namespace: refusing to run" >&2; exit 99
    fi
done
mount --bind "$etc" /etc
for d in /home /var/log /var/mail; do
    if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
done
exec "$mgmt" "$@""#;
        let mut new_ns = vec!["mnt"];
        for flag in namespaces {
            new_ns.push(match *flag {
                "--net" => "net",
                "--uts" => "uts",
                other => panic!("no namespace check for {other}"),
            });
        }
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private"])
            .args(namespaces)
            .args(["--", "sh", "-ec", SETUP, "sh"])
            .arg(self.dir.path().join("etc"))
            .arg(env!("CARGO_BIN_EXE_mgmt"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("MGMT_TEST_NEW_NS", new_ns.join(" "));
        for ns in new_ns {
            let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
            c.env(format!("MGMT_TEST_HOST_NS_{ns}"), host);
        }
        if args.first() == Some(&"run") {
            c.arg("--no-server");
        }
        c
    }

    fn run_to_end(&self, args: &[&str]) -> Output {
        self.mgmt(args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for PrivateEtc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        assert_eq!(
            host_files(),
            self.host_before,
            "the host's account files changed"
        );
        assert_eq!(
            listing("/home"),
            self.home_before,
            "the host's /home changed"
        );
    }
}

/// `nsenter` into the namespaces of process `pid` (the agent's), then `cmd`.
fn nsenter(pid: i32, cmd: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .args([
            "--target",
            &pid.to_string(),
            "--mount",
            "--net",
            "--uts",
            "--",
        ])
        .args(cmd)
        .output()
        .unwrap()
}

/// [`inside`], or `None` if the command fails (a file not there yet).
fn try_inside(pid: i32, cmd: &[&str]) -> Option<String> {
    let out = nsenter(pid, cmd);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` in the namespaces of process `pid` (the agent's).
fn inside(pid: i32, cmd: &[&str]) -> String {
    let out = nsenter(pid, cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The edges `mgmt graph` shows between vertices, as `From -> To`.
fn graph_edges(graph: &str) -> Vec<String> {
    let out = run_to_end(&["graph", "--file", graph]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} -> {}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect()
}

fn passwd_line<'a>(etc: &'a str, user: &str) -> Option<&'a str> {
    etc.lines().find(|l| l.starts_with(&format!("{user}:")))
}

const ACCOUNTS: &str = r#"graph: accounts
resources:
  group:
  - name: mgmtweb
    gid: 23456
  user:
  - name: mgmtbob
    uid: 23456
    group: mgmtweb
    groups: [adm]
    home: /home/mgmtbob
    managehome: true
    shell: /bin/sh
    comment: Bob
  line:
  - name: root-login
    path: /etc/mgmt-test.conf
    line: PermitRootLogin no
    match: ^#?PermitRootLogin
    create: true
  - name: port
    path: /etc/mgmt-test.conf
    line: Port 2222
    match: ^#?Port
  file:
  - name: owned
    path: DIR/owned
    content: "bob's\n"
    owner: mgmtbob
    group: mgmtweb
"#;

const BOB: &str = "mgmtbob:x:23456:23456:Bob:/home/mgmtbob:/bin/sh";

#[test]
fn accounts_and_lines_converge_and_drift_is_repaired_without_polling() {
    let etc = PrivateEtc::new();
    let graph = write(
        etc.path(),
        "g.yaml",
        &ACCOUNTS.replace("DIR", &etc.path().display().to_string()),
    );

    // AutoEdges: the group before the user, the user before the file it owns.
    let edges = graph_edges(&graph);
    for want in [
        "Group[mgmtweb] -> User[mgmtbob]",
        "User[mgmtbob] -> File[owned]",
    ] {
        assert!(edges.iter().any(|e| e == want), "{want} not in {edges:?}");
    }

    let agent = Agent::spawn(etc.mgmt(&["run", "--file", &graph]));
    let converged = wait_until(Duration::from_secs(30), || {
        passwd_line(&etc.read("passwd"), "mgmtbob") == Some(BOB)
            && etc.read("mgmt-test.conf") == "Port 2222\nPermitRootLogin no\n"
            && std::fs::metadata(etc.path().join("owned"))
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 23456)
    });
    assert!(converged.is_some(), "the graph did not converge");
    assert!(etc.read("group").contains("mgmtweb:x:23456:"));
    let adm = etc.read("group");
    let adm = adm.lines().find(|l| l.starts_with("adm:")).unwrap();
    assert!(adm.contains("mgmtbob"), "{adm}");

    // Each drift is repaired from its watch: no polling is configured.
    let repaired = |what: &str, cmd: &[&str], fixed: &dyn Fn() -> bool| {
        let started = Instant::now();
        let _ = inside(agent.pid(), cmd);
        let took = wait_until(Duration::from_secs(15), fixed);
        assert!(took.is_some(), "{what}: not repaired");
        eprintln!("{what}: repaired in {:?}", started.elapsed());
    };
    repaired("userdel", &["userdel", "mgmtbob"], &|| {
        passwd_line(&etc.read("passwd"), "mgmtbob") == Some(BOB)
    });
    repaired(
        "usermod -s",
        &["usermod", "-s", "/bin/bash", "mgmtbob"],
        &|| passwd_line(&etc.read("passwd"), "mgmtbob") == Some(BOB),
    );
    repaired(
        "sed -i",
        &["sed", "-i", "/PermitRootLogin/d", "/etc/mgmt-test.conf"],
        &|| etc.read("mgmt-test.conf") == "Port 2222\nPermitRootLogin no\n",
    );
    repaired(
        "groupmod -g",
        &["groupmod", "-g", "23999", "mgmtweb"],
        &|| etc.read("group").contains("mgmtweb:x:23456:"),
    );
    assert!(agent.terminate().success());
}

#[test]
fn noop_changes_nothing_and_absent_accounts_are_removed() {
    let etc = PrivateEtc::new();
    // Without the owned file: under noop its owner does not exist yet, which
    // is an error of the file's check.
    let accounts = ACCOUNTS.split("  file:").next().unwrap();
    let graph = write(etc.path(), "g.yaml", accounts);
    let passwd = etc.read("passwd");
    let out = etc.run_to_end(&[
        "run",
        "--file",
        &graph,
        "--converged-timeout",
        "0",
        "--noop",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("User[mgmtbob]: CheckApply: would have: created"),
        "{err}"
    );
    assert_eq!(etc.read("passwd"), passwd);
    assert!(!etc.etc("mgmt-test.conf").exists());

    let out = etc.run_to_end(&["run", "--file", &graph, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(passwd_line(&etc.read("passwd"), "mgmtbob"), Some(BOB));

    // A second run finds nothing to do.
    let out = etc.run_to_end(&["run", "--file", &graph, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("CheckApply:"), "{}", stderr(&out));

    let gone = write(
        etc.path(),
        "gone.yaml",
        "graph: gone\nresources:\n  user:\n  - name: mgmtbob\n    state: absent\n    managehome: true\n  group:\n  - name: mgmtweb\n    state: absent\n  line:\n  - name: no-port\n    path: /etc/mgmt-test.conf\n    match: ^Port\n    state: absent\nedges:\n- from: {kind: user, name: mgmtbob}\n  to: {kind: group, name: mgmtweb}\n",
    );
    let out = etc.run_to_end(&["run", "--file", &gone, "--converged-timeout", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(passwd_line(&etc.read("passwd"), "mgmtbob"), None);
    assert!(!etc.read("group").contains("mgmtweb:"));
    assert_eq!(etc.read("mgmt-test.conf"), "PermitRootLogin no\n");
}

#[test]
fn bad_host_kinds_exit_2_naming_the_spot_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("lines.conf");
    // A valid line that would create its file, beside each bad resource.
    let good = format!(
        "  line:\n  - name: l\n    path: {}\n    line: x\n    create: true\n",
        target.display()
    );
    for (bad, want) in [
        (
            "  user:\n  - name: bob\n    uid: 4294967296\n",
            "g.yaml:10:10: User[bob]: uid 4294967296 is out of range",
        ),
        (
            "  line:\n  - name: rel\n    path: etc/hosts\n    line: x\n",
            "g.yaml:9:11: Line[rel]: path \"etc/hosts\" must be absolute",
        ),
        (
            "  line:\n  - name: re\n    path: /etc/hosts\n    line: x\n    match: \"(unclosed\"\n",
            "g.yaml:11:12: Line[re]: match: invalid regular expression \"(unclosed\"",
        ),
        (
            "  mount:\n  - name: /mnt/x\n    device: /dev/vdb\n    fstype: ext9\n",
            "g.yaml:11:13: Mount[/mnt/x]: unknown fstype \"ext9\"",
        ),
    ] {
        // Two `line:` keys would be a duplicate key: the bad line goes in the
        // same list.
        let text = if let Some(rest) = bad.strip_prefix("  line:\n") {
            format!("graph: bad\nresources:\n{good}{rest}")
        } else {
            format!("graph: bad\nresources:\n{good}{bad}")
        };
        let graph = write(d.path(), "g.yaml", &text);
        let out = run_to_end(&["run", "--file", &graph, "--converged-timeout", "0"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(want), "{want}\n{}", stderr(&out));
        assert!(!target.exists(), "{want}: a bad graph changed something");
    }
}

/// Counts the renames onto `name` in `dir` (each atomic write is one) while
/// `f` runs.
fn renames_onto(dir: &Path, name: &str, f: impl FnOnce()) -> usize {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
    ino.add_watch(dir, AddWatchFlags::IN_MOVED_TO).unwrap();
    f();
    let mut n = 0;
    while let Ok(events) = ino.read_events() {
        if events.is_empty() {
            break;
        }
        n += events
            .iter()
            .filter(|e| e.name.as_deref().and_then(|s| s.to_str()) == Some(name))
            .count();
    }
    n
}

#[test]
fn two_hundred_lines_of_one_file_are_one_write() {
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("many.conf");
    std::fs::write(&target, "# managed\n").unwrap();
    let mut text = String::from("graph: many\nresources:\n  line:\n");
    for i in 0..200 {
        text.push_str(&format!(
            "  - name: l{i:03}\n    path: {}\n    line: key{i:03} = {i}\n    match: ^key{i:03} =\n",
            target.display()
        ));
    }
    let graph = write(d.path(), "g.yaml", &text);
    let out = run_to_end(&["graph", "--file", &graph]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vertices"].as_array().unwrap().len(), 1, "one vertex");

    let mut out = None;
    let writes = renames_onto(d.path(), "many.conf", || {
        out = Some(run_to_end(&[
            "run",
            "--file",
            &graph,
            "--converged-timeout",
            "0",
        ]));
    });
    let out = out.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(writes, 1, "200 lines, one write");
    let content = std::fs::read_to_string(&target).unwrap();
    assert_eq!(content.lines().count(), 201);
    assert!(content.ends_with("key199 = 199\n"));

    let mut again = None;
    let writes = renames_onto(d.path(), "many.conf", || {
        again = Some(run_to_end(&[
            "run",
            "--file",
            &graph,
            "--converged-timeout",
            "0",
        ]));
    });
    assert!(again.unwrap().status.success());
    assert_eq!(writes, 0, "a converged file is not written");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), content);
}

#[test]
fn sysctl_sets_the_live_value_and_its_boot_file_in_a_network_namespace() {
    let etc = PrivateEtc::new();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let graph = write(
        etc.path(),
        "g.yaml",
        "graph: sysctl\nresources:\n  sysctl:\n  - name: net.ipv4.ip_forward\n    value: 1\n    interval: 1\n  - name: net.ipv4.ip_local_port_range\n    value: \"20000   40000\"\n    interval: 1\n",
    );
    let agent = Agent::spawn(etc.mgmt_in(&["--net"], &["run", "--file", &graph]));
    let forward = || inside(agent.pid(), &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    let boot_file = etc.etc("sysctl.d/99-mgmt-net.ipv4.ip_forward.conf");
    let converged = wait_until(Duration::from_secs(20), || {
        forward().trim() == "1"
            && std::fs::read_to_string(&boot_file).ok().as_deref()
                == Some("net.ipv4.ip_forward = 1\n")
    });
    assert!(converged.is_some(), "not converged");
    let range = inside(
        agent.pid(),
        &["cat", "/proc/sys/net/ipv4/ip_local_port_range"],
    );
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "40000"]
    );

    // The live value has no events: the 1 s check finds the drift.
    let started = Instant::now();
    let _ = inside(
        agent.pid(),
        &["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"],
    );
    assert!(
        wait_until(Duration::from_secs(10), || forward().trim() == "1").is_some(),
        "live drift not repaired"
    );
    eprintln!("sysctl -w: repaired in {:?}", started.elapsed());
    // The boot file is watched: repaired at once.
    let started = Instant::now();
    std::fs::write(&boot_file, "net.ipv4.ip_forward = 0\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&boot_file).ok().as_deref() == Some("net.ipv4.ip_forward = 1\n")
        })
        .is_some(),
        "boot file not repaired"
    );
    eprintln!("sysctl.d edit: repaired in {:?}", started.elapsed());
    assert!(agent.terminate().success());
    // The host's own network namespace was never touched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range
    );
}

/// Whether the host's mount table names `dir` (a test's mount leaked).
fn host_mounts_under(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&dir.display().to_string())
}

#[test]
fn mounts_are_made_kept_in_fstab_and_remounted_after_umount() {
    let etc = PrivateEtc::new();
    let dir = etc.path().display().to_string();
    let image = etc.path().join("disk.img");
    let mkfs = Command::new("sh")
        .args([
            "-ec",
            "truncate -s 16M \"$1\" && mkfs.ext4 -q -F \"$1\"",
            "sh",
        ])
        .arg(&image)
        .status()
        .unwrap();
    assert!(mkfs.success(), "mkfs.ext4");
    let graph_text = format!(
        "graph: mounts\nresources:\n  mount:\n  - name: scratch\n    path: {dir}/t\n    device: tmpfs\n    fstype: tmpfs\n    options: nodev,size=2m\n  - name: data\n    path: {dir}/img\n    device: {img}\n    fstype: ext4\n    options: noatime\n  file:\n  - name: {dir}/t/inside\n    content: \"on the tmpfs\\n\"\n",
        img = image.display()
    );
    let graph = write(etc.path(), "g.yaml", &graph_text);
    let want = format!("Mount[scratch] -> File[{dir}/t/inside]");
    let edges = graph_edges(&graph);
    assert!(edges.contains(&want), "{want} not in {edges:?}");

    let agent = Agent::spawn(etc.mgmt(&["run", "--file", &graph]));
    let mounted = |path: &str, fstype: &str| {
        let info = inside(agent.pid(), &["cat", "/proc/self/mountinfo"]);
        mgmt_core::mounts::parse_mountinfo(&info)
            .iter()
            .any(|e| e.mount_point == path && e.fstype == fstype)
    };
    let (t, img) = (format!("{dir}/t"), format!("{dir}/img"));
    let converged = wait_until(Duration::from_secs(30), || {
        mounted(&t, "tmpfs")
            && mounted(&img, "ext4")
            && etc
                .read("fstab")
                .contains(&format!("tmpfs {t} tmpfs nodev,size=2m 0 0"))
            && try_inside(agent.pid(), &["cat", &format!("{t}/inside")]).as_deref()
                == Some("on the tmpfs\n")
    });
    assert!(converged.is_some(), "not converged");
    // The file went onto the tmpfs, not under it: the host sees none of it.
    assert!(!Path::new(&format!("{t}/inside")).exists());
    assert!(!host_mounts_under(etc.path()));

    // Each drift is repaired from the mount table's change event.
    for (what, cmd, path, fstype) in [
        ("umount tmpfs", vec!["umount", t.as_str()], &t, "tmpfs"),
        (
            "umount ext4 image",
            vec!["umount", img.as_str()],
            &img,
            "ext4",
        ),
    ] {
        let started = Instant::now();
        let _ = inside(agent.pid(), &cmd);
        let took = wait_until(Duration::from_secs(15), || mounted(path, fstype));
        assert!(took.is_some(), "{what}: not repaired");
        eprintln!("{what}: repaired in {:?}", started.elapsed());
    }
    let started = Instant::now();
    let _ = inside(agent.pid(), &["sed", "-i", "/ ext4 /d", "/etc/fstab"]);
    let fixed = wait_until(Duration::from_secs(15), || {
        etc.read("fstab")
            .contains(&format!("{} {img} ext4 noatime 0 0", image.display()))
    });
    assert!(fixed.is_some(), "fstab edit not repaired");
    eprintln!("fstab edit: repaired in {:?}", started.elapsed());

    // The graph changes to absent: both unmounted, both entries gone.
    let absent = graph_text
        .split("  file:")
        .next()
        .unwrap()
        .replace(
            "    options: noatime\n",
            "    options: noatime\n    state: absent\n",
        )
        .replace(
            "    options: nodev,size=2m\n",
            "    options: nodev,size=2m\n    state: absent\n",
        );
    std::fs::write(&graph, absent).unwrap();
    let gone = wait_until(Duration::from_secs(15), || {
        !mounted(&t, "tmpfs") && !mounted(&img, "ext4") && !etc.read("fstab").contains(&dir)
    });
    assert!(gone.is_some(), "absent mounts not removed");
    assert!(agent.terminate().success());
}

#[test]
fn hostname_is_set_in_a_uts_namespace_and_kept() {
    let etc = PrivateEtc::new();
    let graph = write(
        etc.path(),
        "g.yaml",
        "graph: name\nresources:\n  hostname:\n  - name: web-01.example.test\n",
    );
    // No system bus: the files path (a hostnamed on the host's bus would
    // name the host itself).
    let mut c = etc.mgmt_in(&["--uts"], &["run", "--file", &graph]);
    c.env(
        "DBUS_SYSTEM_BUS_ADDRESS",
        "unix:path=/nonexistent/mgmt-test-bus",
    );
    let agent = Agent::spawn(c);
    let kernel = || inside(agent.pid(), &["cat", "/proc/sys/kernel/hostname"]);
    let named = || {
        kernel().trim_end() == "web-01.example.test"
            && etc.read("hostname") == "web-01.example.test\n"
    };
    assert!(
        wait_until(Duration::from_secs(20), named).is_some(),
        "not set"
    );
    // The kernel's name has no inotify event; its POLLPRI is the watch.
    for (what, cmd) in [
        ("hostname", vec!["hostname", "drifted"]),
        (
            "/etc/hostname edit",
            vec!["sh", "-c", "echo drifted > /etc/hostname"],
        ),
    ] {
        let started = Instant::now();
        let _ = inside(agent.pid(), &cmd);
        assert!(
            wait_until(Duration::from_secs(10), named).is_some(),
            "{what}: not repaired"
        );
        eprintln!("{what}: repaired in {:?}", started.elapsed());
    }
    assert!(agent.terminate().success());
}

#[test]
fn hostname_goes_through_hostnamed_in_a_namespaced_systemd() {
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_file = std::fs::read("/etc/hostname").ok();
    let sd = crate::system::NsSystemd::start_with_private_etc(&[]);
    let d = tempfile::tempdir().unwrap();
    let graph = write(
        d.path(),
        "g.yaml",
        "graph: name\nresources:\n  hostname:\n  - name: db-02.example.test\n",
    );
    // mgmt runs on the host; hostnamed in the namespace does the setting.
    let agent = Agent::start_env(
        &["run", "--file", &graph],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &sd.address)],
    );
    let named = || {
        sd.exec(&["cat", "/proc/sys/kernel/hostname"]) == "db-02.example.test"
            && std::fs::read_to_string(sd.etc().join("hostname"))
                .ok()
                .as_deref()
                == Some("db-02.example.test\n")
    };
    assert!(
        wait_until(Duration::from_secs(30), named).is_some(),
        "not set through hostnamed"
    );
    // hostnamectl goes through hostnamed too: its signal is the watch.
    let started = Instant::now();
    sd.exec(&["hostnamectl", "set-hostname", "drifted"]);
    assert!(
        wait_until(Duration::from_secs(15), named).is_some(),
        "hostnamectl set-hostname not repaired"
    );
    eprintln!(
        "hostnamectl set-hostname: repaired in {:?}",
        started.elapsed()
    );
    assert!(agent.terminate().success());
    drop(sd);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
    assert_eq!(std::fs::read("/etc/hostname").ok(), host_file);
}
