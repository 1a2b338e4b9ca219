#!/usr/bin/env python3
"""A fleet on this machine: N `mgmt run` agents with no graph of their own,
each on its own loopback address (127.0.1.I), h1 starting the cluster and the
others joining through it (the store's ideal size stays 5: 5 members, the
rest clients). Then, as an operator does it:

1. `mgmt deploy --wait` of one template (examples' style): every host keeps
   its own file, exports one file and collects every host's export. Measured:
   from the deploy command's start to its exit (every live host runs it and
   converged), and checked on disk: every host holds every host's export.
2. A deploy that changes one host's export only: from the command's start
   until every host's copy of that export holds the new text (read on disk).
3. RSS of every agent (VmRSS), members and clients apart, and the fleet's CPU
   over --idle seconds of nothing happening (ticks of every agent, as % of
   one core).

    python3 bench/fleet.py                          # N = 10, 30, 100
    python3 bench/fleet.py --sizes 30 --mgmt target/release/mgmt --idle 20

Needs fs.inotify.max_user_instances above N (one instance per agent; the
script raises it as root). Every agent is stopped by pid at the end.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")

TEMPLATE = """graph: fleet-bench
resources:
  file:
  - name: own
    path: "OUT/{{ host.name }}/own"
    content: "{{ host.name }} has {{ host.cpus }} cpus\\n"
    state: exists
  - name: "@@from-{{ host.name }}"
    path: "OUT/exports/from-{{ host.name }}"
    content: "exported by {{ host.name }} VERSION\\n"
    state: exists
collect:
- kind: file
  pattern: "OUT/{{ host.name }}/"
"""


def ip(i):
    return f"127.0.1.{i}"


def url(i, port):
    return f"http://{ip(i)}:{port}"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def mgmt_json(mgmt, *args):
    out = subprocess.run([mgmt, *args], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return None


def wait(what, cond, within):
    start = time.monotonic()
    while time.monotonic() - start < within:
        if cond():
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"fleet: {what} not within {within} s")


def deploy(mgmt, seeds, path):
    start = time.monotonic()
    out = subprocess.run([mgmt, "deploy", "--seeds", seeds, "--file", path, "--wait", "--timeout", "120"],
                         capture_output=True, text=True)
    took = time.monotonic() - start
    if out.returncode != 0:
        raise SystemExit(f"fleet: deploy failed: {out.stderr[-2000:]}")
    return int(out.stdout.split()[0]), took, start


def run_size(mgmt, n, idle):
    work = tempfile.mkdtemp(prefix=f"mgmt-fleet-{n}-")
    out_dir = os.path.join(work, "out")
    procs = []
    seeds = url(1, 2379)
    try:
        for i in range(1, n + 1):
            args = [mgmt, "run", "--hostname", f"h{i}", "--prefix", os.path.join(work, f"state-h{i}"),
                    "--client-urls", url(i, 2379), "--server-urls", url(i, 2380)]
            if i > 1:
                args += ["--seeds", seeds]
            log = open(os.path.join(work, f"h{i}.log"), "w")
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log,
                                          env=dict(os.environ, RUST_LOG="warn")))
            if i == 1:
                time.sleep(0.3)
        started = wait(f"{n} agents reporting", lambda: len([
            r for r in (mgmt_json(mgmt, "status", "--json", "--seeds", seeds) or []) if r["reachable"]
        ]) == n, 300)
        for i in range(1, n + 1):
            os.makedirs(os.path.join(out_dir, f"h{i}"), exist_ok=True)

        graph = os.path.join(work, "site.yaml")
        with open(graph, "w") as f:
            f.write(TEMPLATE.replace("OUT", out_dir).replace("VERSION", "v1"))
        _, deploy_s, _ = deploy(mgmt, seeds, graph)

        def holds(i, j, version):
            try:
                with open(os.path.join(out_dir, f"h{i}", f"from-h{j}")) as f:
                    return f.read() == f"exported by h{j} {version}\n"
            except OSError:
                return False

        # --wait saw every host converge on its graph; the exports of hosts
        # that converged later may still be on their way to the others.
        extra = wait("every export everywhere", lambda: all(
            holds(i, j, "v1") for i in range(1, n + 1) for j in range(1, n + 1)), 120)

        with open(graph, "w") as f:
            f.write(TEMPLATE.replace("OUT", out_dir).replace(
                "VERSION", "{% if host.name == 'h1' %}v2{% else %}v1{% endif %}"))
        _, _, t0 = deploy(mgmt, seeds, graph)
        wait("the changed export everywhere", lambda: all(holds(i, 1, "v2") for i in range(1, n + 1)), 120)
        export_s = time.monotonic() - t0

        rows = mgmt_json(mgmt, "status", "--json", "--seeds", seeds) or []
        role = {r["host"]: r["status"]["store"] for r in rows}
        time.sleep(2)
        members, clients = [], []
        for i, p in enumerate(procs, 1):
            kib = rss_kib(p.pid)
            (clients if role.get(f"h{i}") == "client" else members).append(kib / 1024)
        before = sum(ticks(p.pid) for p in procs)
        time.sleep(idle)
        cpu = (sum(ticks(p.pid) for p in procs) - before) / TICK / idle * 100

        def mb(xs):
            return f"{statistics.median(xs):.1f} (max {max(xs):.1f})" if xs else "-"

        print(f"N={n:<4} start {started:5.1f} s | deploy converged {deploy_s:5.2f} s "
              f"(+{extra:.2f} s until every export everywhere) | changed export everywhere {export_s:5.2f} s | "
              f"RSS MiB members {mb(members)}, clients {mb(clients)} | idle CPU {cpu:.1f}% of a core",
              flush=True)
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,30,100")
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    ap.add_argument("--idle", type=float, default=10)
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    with open("/proc/sys/fs/inotify/max_user_instances") as f:
        limit = int(f.read())
    if limit < max(sizes) * 2 + 16:
        if os.geteuid() == 0:
            subprocess.run(["sysctl", "-q", "-w", f"fs.inotify.max_user_instances={max(sizes) * 2 + 128}"], check=True)
        else:
            sys.exit(f"fleet: fs.inotify.max_user_instances is {limit}: raise it above {max(sizes) * 2 + 16}")
    if not os.access(a.mgmt, os.X_OK):
        sys.exit(f"fleet: no {a.mgmt}: cargo build --release -p mgmt")
    print(f"mgmt {subprocess.run([a.mgmt, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{os.cpu_count()} CPUs; targets: 100 agents converged on a deploy within 2 s, a client under 25 MiB")
    for n in sizes:
        run_size(a.mgmt, n, a.idle)


if __name__ == "__main__":
    main()
