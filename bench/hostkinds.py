#!/usr/bin/env python3
"""Drift repair latency of the host kinds: user, group, line, mount,
hostname and sysctl.

One agent (the release build, `mgmt run --file`, no store) runs in mount, UTS
and network namespaces of its own with a private copy of /etc bind-mounted
over /etc and tmpfs over /home, /var/log and /var/mail, exactly as the tests
do; the host's own files and settings are never touched (checked at the
end). Each drift is made from inside the namespaces (nsenter) by the tool an
operator would use, and the time until the state is right again is measured
from outside by reading it every millisecond. Every kind is watched by an
event (inotify, or the kernel's POLLPRI on /proc/self/mountinfo and
/proc/sys/kernel/hostname) except a sysctl's live value: /proc/sys has no
events, so it is checked every `interval` (1 s here) and its latency is
bounded by that interval.

    sudo python3 bench/hostkinds.py [--rounds 20] [--mgmt target/release/mgmt]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRAPH = """graph: hostkinds
resources:
  group:
  - name: benchweb
    gid: 23460
  user:
  - name: benchbob
    uid: 23460
    group: benchweb
    shell: /bin/sh
  line:
  - name: root-login
    path: /etc/bench.conf
    line: PermitRootLogin no
    match: ^#?PermitRootLogin
    create: true
  mount:
  - name: {dir}/t
    device: tmpfs
    fstype: tmpfs
    options: nodev,size=1m
  hostname:
  - name: bench-01
  sysctl:
  - name: net.ipv4.ip_forward
    value: 1
    interval: 1
"""

SETUP = """etc=$1; shift
for ns in mnt net uts; do
    eval "host=\\$HOST_NS_$ns"
    [ "$(readlink /proc/self/ns/$ns)" != "$host" ] || { echo "not in a new $ns namespace" >&2; exit 99; }
done
mount --bind "$etc" /etc
for d in /home /var/log /var/mail; do [ -d "$d" ] && mount -t tmpfs tmpfs "$d"; done
exec "$@"
"""

HOST_FILES = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/fstab", "/etc/hostname",
              "/proc/sys/kernel/hostname", "/proc/sys/net/ipv4/ip_forward"]


def host_state():
    out = {}
    for f in HOST_FILES:
        with open(f, "rb") as fh:
            out[f] = fh.read()
    return out


def inside(pid, *cmd):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "-u", "--", *cmd],
                          check=True, capture_output=True, text=True).stdout


def wait(cond, limit=15.0):
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if cond():
            return True
        time.sleep(0.001)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the agent needs namespaces of its own")
    before = host_state()
    tmp = tempfile.mkdtemp(prefix="mgmt-hostkinds-")
    etc = os.path.join(tmp, "etc")
    subprocess.run(["cp", "-a", "/etc", etc], check=True)
    graph = os.path.join(tmp, "g.yaml")
    with open(graph, "w") as f:
        f.write(GRAPH.format(dir=tmp))
    env = dict(os.environ, RUST_LOG="warn")
    for ns in ["mnt", "net", "uts"]:
        env[f"HOST_NS_{ns}"] = os.readlink(f"/proc/self/ns/{ns}")
    agent = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--net", "--uts", "--",
         "sh", "-ec", SETUP, "sh", etc, args.mgmt, "run", "--file", graph, "--no-server"],
        env=env)
    pid = agent.pid

    def read(name):
        try:
            with open(os.path.join(etc, name)) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    bob = "benchbob:x:23460:23460::/home/benchbob:/bin/sh"
    checks = {
        "user": lambda: bob in read("passwd").splitlines(),
        "group": lambda: "benchweb:x:23460:" in read("group"),
        "line": lambda: read("bench.conf") == "PermitRootLogin no\n",
        "mount": lambda: any(l.split()[4] == f"{tmp}/t" for l in
                             inside(pid, "cat", "/proc/self/mountinfo").splitlines()),
        "hostname": lambda: inside(pid, "cat", "/proc/sys/kernel/hostname").strip() == "bench-01",
        "sysctl": lambda: inside(pid, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "1",
    }
    drifts = [
        ("user: userdel", "user", ["userdel", "benchbob"]),
        ("user: usermod -s", "user", ["usermod", "-s", "/bin/bash", "benchbob"]),
        ("group: groupmod -g", "group", ["groupmod", "-g", "23999", "benchweb"]),
        ("line: sed -i", "line", ["sed", "-i", "/PermitRootLogin/d", "/etc/bench.conf"]),
        ("mount: umount", "mount", ["umount", f"{tmp}/t"]),
        ("hostname: hostname", "hostname", ["hostname", "drifted"]),
        ("sysctl: live write (1 s check)", "sysctl",
         ["sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]),
    ]
    try:
        if not wait(lambda: all(c() for c in checks.values()), 30):
            sys.exit("the graph did not converge")
        print(f"{'drift':34} {'median':>9} {'p90':>9} {'max':>9}  (ms, {args.rounds} rounds)")
        for name, kind, cmd in drifts:
            took = []
            for _ in range(args.rounds):
                start = time.monotonic()
                inside(pid, *cmd)
                if not wait(checks[kind]):
                    sys.exit(f"{name}: not repaired")
                took.append((time.monotonic() - start) * 1000)
                # Let the repair's own echo settle before the next drift.
                time.sleep(0.05)
            took.sort()
            p90 = took[min(len(took) - 1, int(len(took) * 0.9))]
            print(f"{name:34} {statistics.median(took):9.1f} {p90:9.1f} {took[-1]:9.1f}")
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    if host_state() != before:
        sys.exit("the host's own files or settings changed")
    print("host files and settings unchanged")


if __name__ == "__main__":
    main()
