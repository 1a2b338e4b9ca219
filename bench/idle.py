#!/usr/bin/env python3
"""What a converged agent costs while nothing happens, with its store on (the
default path) and with --no-server, for one host and for three.

Each agent runs `mgmt run --file G` (one file resource, its own --prefix, free
loopback ports; hosts of the three-agent cluster on 127.0.0.1-3, the second
and third seeded with the first). Once every agent has applied its graph (and, for
three, the cluster has its three members: `etcdctl member list`), it waits
SETTLE seconds, then over IDLE seconds (60 by default) reads per agent:

- CPU clock ticks (utime + stime from /proc/PID/stat, USER_HZ);
- wake-ups: voluntary + involuntary context switches summed over the
  process's threads (/proc/PID/task/*/status).

Run it on a quiet machine: other jobs' CPU use shows up as involuntary
switches.

What remains on one host should be its lease keep-alives (one every third of
the 10 s TTL) and nothing else; with three, raft heartbeats too.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wakeups(pid):
    """Context switches per thread (tid -> count)."""
    out = {}
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        tid = status.split("/")[4]
        try:
            with open(status) as f:
                out[tid] = sum(
                    int(line.split()[1])
                    for line in f
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
                )
        except FileNotFoundError:
            pass  # a thread ended
    return out


def woke(before, after):
    """Wake-ups between two `wakeups` readings (threads that came or went count
    what they did while seen)."""
    return sum(n - before.get(tid, 0) for tid, n in after.items())


GRAPH = """graph: idle
resources:
  file:
  - name: f1
    path: "{path}"
    content: "idle\\n"
"""


def start(mgmt, work, name, ip, seeds, server, extra=()):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    graph = os.path.join(d, "g.yaml")
    with open(graph, "w") as f:
        f.write(GRAPH.format(path=os.path.join(d, "f1")))
    cmd = [mgmt, "run", "--file", graph, "--hostname", name, "--prefix", os.path.join(d, "state")]
    client = None
    if server:
        cp, sp = free_ports(2)
        client = f"http://{ip}:{cp}"
        cmd += ["--client-urls", client, "--server-urls", f"http://{ip}:{sp}"]
        if seeds:
            cmd += ["--seeds", seeds]
    else:
        cmd += ["--no-server"]
    cmd += list(extra)
    log = open(os.path.join(d, "log"), "w")
    env = dict(os.environ, RUST_LOG="info")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    return proc, client, os.path.join(d, "log")


def wait_for(cond, what, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"idle: {what} not within {timeout_s} s")
        time.sleep(0.2)


def members(client):
    r = subprocess.run(
        ["etcdctl", "--endpoints", client.removeprefix("http://"), "member", "list"],
        capture_output=True,
        text=True,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    return len([l for l in r.stdout.splitlines() if l.strip()]) if r.returncode == 0 else 0


def measure(mgmt, hosts, server, settle_s, idle_s, work):
    procs = []
    try:
        seeds = None
        for i in range(hosts):
            p, client, log = start(mgmt, work, f"h{i + 1}", f"127.0.0.{i + 1}", seeds, server)
            procs.append((p, client, log))
            seeds = seeds or client
        for i, (p, _, log) in enumerate(procs):
            target = os.path.join(work, f"h{i + 1}", "f1")
            right = lambda: os.path.exists(target) and open(target).read() == "idle\n"  # noqa: E731
            wait_for(lambda: right() or p.poll() is not None, "the graph applied")
            if p.poll() is not None:
                sys.exit(f"idle: mgmt exited with {p.returncode}; see {log}")
        if server and hosts > 1:
            wait_for(lambda: members(procs[0][1]) == hosts, f"{hosts} members", 120)
        time.sleep(settle_s)
        t0 = [ticks(p.pid) for p, _, _ in procs]
        w0 = [wakeups(p.pid) for p, _, _ in procs]
        time.sleep(idle_s)
        t1 = [ticks(p.pid) for p, _, _ in procs]
        w1 = [wakeups(p.pid) for p, _, _ in procs]
    finally:
        for p, _, _ in procs:
            p.terminate()
        for p, _, _ in procs:
            p.wait()
    return [(b - a, woke(c, d)) for a, b, c, d in zip(t0, t1, w0, w1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after converging")
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    # Not under /tmp: the agent watches a managed file's ancestor directories,
    # and other jobs' files in /tmp would wake it.
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    if not shutil.which("etcdctl"):
        sys.exit("idle: needs etcdctl (apt-get install etcd-client)")
    print(f"idle {args.idle:.0f} s, USER_HZ {os.sysconf('SC_CLK_TCK')}")
    print("| agents | store | per agent: CPU ticks | per agent: wake-ups |")
    print("| --- | --- | --- | --- |")
    for hosts, server in [(1, False), (1, True), (3, True)]:
        work = tempfile.mkdtemp(prefix="mgmt-idle-", dir=args.workdir)
        try:
            rows = measure(args.mgmt, hosts, server, args.settle, args.idle, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        t = ", ".join(str(r[0]) for r in rows)
        w = ", ".join(str(r[1]) for r in rows)
        print(f"| {hosts} | {'on' if server else '--no-server'} | {t} | {w} |", flush=True)


if __name__ == "__main__":
    main()
