//! Real system daemons for the pkg and svc tests, each started by the test
//! that needs it and stopped by pid when it is dropped (recipes:
//! shared/notes/real-components.md).
//!
//! - [`PackageKitBus`]: a dbus-daemon with the system policy on a private
//!   socket, and polkitd and packagekitd (apt backend, Debian's repositories)
//!   on it; mgmt is pointed at it with `DBUS_SYSTEM_BUS_ADDRESS`. Nothing uses
//!   the machine's `/run/dbus`, so apt's PackageKit hook stays quiet.
//! - [`NsSystemd`]: a real systemd as PID 1 of its own cgroup, pid, mount and
//!   uts namespaces (never on the host's cgroup), with test units installed;
//!   its system bus is reachable from the host through a socket file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn temp_dir(what: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mgmt-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Daemons that drop to their own users (polkitd) must reach the socket.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Stops a child: SIGTERM, up to `grace` to exit, then SIGKILL; always reaped.
fn stop(child: &mut Child, grace: Duration) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `cond` every 20 ms, at most `within`.
fn wait(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn busctl_ok(address: &str, args: &[&str]) -> bool {
    Command::new("busctl")
        .env("DBUS_SYSTEM_BUS_ADDRESS", address)
        .arg("--system")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A private system bus with polkitd and packagekitd on it.
pub struct PackageKitBus {
    dir: PathBuf,
    /// dbus-daemon, then the services, in start order (stopped in reverse).
    children: Vec<Child>,
    pub address: String,
}

impl PackageKitBus {
    /// With `packagekit: false`, only the bus (and no service files, so
    /// nothing can be activated): a machine without PackageKit.
    pub fn start(packagekit: bool) -> PackageKitBus {
        let dir = temp_dir("bus");
        let socket = dir.join("system_bus_socket");
        let address = format!("unix:path={}", socket.display());
        let config = if packagekit {
            PathBuf::from("/usr/share/dbus-1/system.conf")
        } else {
            let c = dir.join("bare.conf");
            std::fs::write(
                &c,
                format!("<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>system</type><auth>EXTERNAL</auth><listen>{address}</listen>\
                 <policy context=\"default\"><allow send_destination=\"*\" eavesdrop=\"true\"/>\
                 <allow eavesdrop=\"true\"/><allow own=\"*\"/></policy></busconfig>\n"),
            )
            .unwrap();
            c
        };
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg(format!("--address={address}"))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed (apt-get install dbus)");
        let mut me = PackageKitBus {
            dir,
            children: vec![bus],
            address,
        };
        assert!(
            wait(Duration::from_secs(10), || busctl_ok(
                &me.address,
                &["status", "org.freedesktop.DBus"]
            )),
            "the private bus did not come up"
        );
        if packagekit {
            for (cmd, args) in [
                ("/usr/lib/polkit-1/polkitd", &["--no-debug"][..]),
                // It clears its environment unless told not to, and would then
                // look for the machine's bus instead of ours.
                (
                    "/usr/libexec/packagekitd",
                    &["--disable-timer", "--keep-environment"][..],
                ),
            ] {
                let child = Command::new(cmd)
                    .args(args)
                    .env("DBUS_SYSTEM_BUS_ADDRESS", &me.address)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{cmd}: {e} (apt-get install packagekit polkitd)"));
                me.children.push(child);
            }
            // packagekitd loads apt's cache before it takes its name: under
            // the load of a full test run that once took over 20 s, and once,
            // in a fresh clone's first .ci/run, over 60 s.
            for name in ["org.freedesktop.PolicyKit1", "org.freedesktop.PackageKit"] {
                assert!(
                    wait(Duration::from_secs(180), || busctl_ok(
                        &me.address,
                        &["status", name]
                    )),
                    "{name} did not appear on the private bus"
                );
            }
        }
        me
    }

    /// A command with this bus as its system bus.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }
}

impl Drop for PackageKitBus {
    fn drop(&mut self) {
        while let Some(mut child) = self.children.pop() {
            stop(&mut child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The host's PID 1 cgroups, to check that a namespaced systemd left them alone.
fn pid1_cgroups() -> String {
    std::fs::read_to_string("/proc/1/cgroup").unwrap()
}

/// A real systemd in namespaces of its own, with `units` installed.
pub struct NsSystemd {
    dir: PathBuf,
    cgroup: PathBuf,
    unshare: Child,
    /// systemd's pid on the host (the child of `unshare`).
    pub pid: i32,
    pub address: String,
    pid1_before: String,
}

impl NsSystemd {
    /// `units`: (file name, contents) to install into its `/etc/systemd/system`
    /// (a name may be a drop-in's, `x.service.d/y.conf`).
    pub fn start(units: &[(&str, &str)]) -> NsSystemd {
        NsSystemd::start_in(units, false)
    }

    /// [`NsSystemd::start`] with a private copy of the host's `/etc` as the
    /// namespace's `/etc`: see [`NsSystemd::etc`].
    pub fn start_with_private_etc(units: &[(&str, &str)]) -> NsSystemd {
        NsSystemd::start_in(units, true)
    }

    /// The namespace's private `/etc`, as the host sees it.
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    fn start_in(units: &[(&str, &str)], private_etc: bool) -> NsSystemd {
        let dir = temp_dir("systemd");
        if private_etc {
            let copy = Command::new("cp")
                .args(["-a", "/etc"])
                .arg(dir.join("etc"))
                .status()
                .unwrap();
            assert!(copy.success(), "cp -a /etc");
        }
        std::fs::create_dir_all(dir.join("bus")).unwrap();
        std::fs::create_dir_all(dir.join("units")).unwrap();
        for (name, text) in units {
            // A drop-in (`x.service.d/y.conf`) brings its directory.
            let path = dir.join("units").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let pid1_before = pid1_cgroups();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        // Its own cgroup first: started in the root cgroup, systemd would move
        // every process of the machine into its init.scope.
        let cgroup = Path::new("/sys/fs/cgroup/unified").join(&name);
        std::fs::create_dir(&cgroup).expect("a cgroup2 hierarchy at /sys/fs/cgroup/unified");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/ns-systemd.sh");
        let unshare = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec unshare --cgroup --pid --fork --mount --uts \
                 --propagation private --mount-proc {} {}",
                cgroup.display(),
                script.display(),
                dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and unshare run");
        let address = format!("unix:path={}/bus/system_bus_socket", dir.display());
        let mut me = NsSystemd {
            dir,
            cgroup,
            unshare,
            pid: 0,
            address,
            pid1_before,
        };
        let running = wait(Duration::from_secs(30), || {
            Command::new("busctl")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &me.address)
                .args([
                    "--system",
                    "get-property",
                    "org.freedesktop.systemd1",
                    "/org/freedesktop/systemd1",
                    "org.freedesktop.systemd1.Manager",
                    "SystemState",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "s \"running\"")
        });
        assert!(running, "the namespaced systemd did not reach running");
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            me.unshare.id(),
            me.unshare.id()
        ))
        .unwrap();
        me.pid = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("unshare has systemd as its child");
        me
    }

    /// Runs `args` inside the namespaces (systemctl, kill...); returns stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-m", "-p", "-u", "--"])
            .args(args)
            .output()
            .expect("nsenter runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `systemctl show -p PROPERTY --value UNIT`.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.exec(&["systemctl", "show", "-p", property, "--value", unit])
    }
}

impl Drop for NsSystemd {
    fn drop(&mut self) {
        // SIGRTMIN+4 is systemd's "power off": it stops every unit and exits,
        // and the pid namespace takes whatever is left with it.
        send_signal(self.pid, SIGRTMIN_PLUS_4);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.unshare.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        remove_cgroup_tree(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.dir);
        let after = pid1_cgroups();
        if !std::thread::panicking() {
            assert_eq!(after, self.pid1_before, "the host's PID 1 changed cgroups");
        }
    }
}

/// SIGRTMIN+4 on Linux (SIGRTMIN is 34: glibc keeps two for itself).
const SIGRTMIN_PLUS_4: i32 = 38;

/// kill(1) with a signal nix's `Signal` enum cannot name (a real-time one).
fn send_signal(pid: i32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A real `systemd --user` (the manager `session: true` talks to), in a
/// cgroup and mount namespace of its own; its bus is `$XDG_RUNTIME_DIR/bus`.
pub struct UserSystemd {
    dir: PathBuf,
    cgroup: PathBuf,
    child: Child,
    xdg: PathBuf,
    /// The value for `DBUS_SESSION_BUS_ADDRESS`.
    pub address: String,
    pid1_before: String,
}

impl UserSystemd {
    /// `units`: (file name, contents) to install as user units.
    pub fn start(units: &[(&str, &str)]) -> UserSystemd {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("user-systemd");
        let xdg = dir.join("xdg");
        let unit_dir = xdg.join("systemd/user");
        std::fs::create_dir_all(&unit_dir).unwrap();
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        for (name, text) in units {
            std::fs::write(unit_dir.join(name), text).unwrap();
        }
        let pid1_before = pid1_cgroups();
        let cgroup = Path::new("/sys/fs/cgroup/unified").join(dir.file_name().unwrap());
        std::fs::create_dir(&cgroup).expect("a cgroup2 hierarchy at /sys/fs/cgroup/unified");
        // `systemd --user` refuses to run unless /run/systemd/system exists:
        // a private /run gives it one without touching the host's.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {cg}/cgroup.procs && exec unshare --cgroup --mount --propagation private \
                 sh -c 'umount -n -R /sys/fs/cgroup && mount -n -t cgroup2 cgroup2 /sys/fs/cgroup \
                 && mount -n -t tmpfs tmpfs /run && mkdir -p /run/systemd/system \
                 && XDG_RUNTIME_DIR={xdg} exec /lib/systemd/systemd --user'",
                cg = cgroup.display(),
                xdg = xdg.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and unshare run");
        let address = format!("unix:path={}/bus", xdg.display());
        let me = UserSystemd {
            dir,
            cgroup,
            child,
            xdg,
            address,
            pid1_before,
        };
        let up = wait(Duration::from_secs(30), || {
            me.systemctl(&["is-system-running"])
                .is_some_and(|s| s == "running")
        });
        assert!(up, "systemd --user did not reach running");
        me
    }

    /// `systemctl --user ARGS` against this manager; stdout, or `None` if it
    /// could not run. Run in the manager's mount namespace: systemctl, like
    /// systemd, believes only a machine with /run/systemd/system.
    pub fn systemctl(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.child.id().to_string(),
                "-m",
                "--",
                "systemctl",
                "--user",
            ])
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_RUNTIME_DIR", &self.xdg)
            .output()
            .ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for UserSystemd {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(10));
        remove_cgroup_tree(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.dir);
        if !std::thread::panicking() {
            assert_eq!(
                pid1_cgroups(),
                self.pid1_before,
                "the host's PID 1 changed cgroups"
            );
        }
    }
}
