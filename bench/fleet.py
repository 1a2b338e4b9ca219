#!/usr/bin/env python3
"""A fleet on this machine: N `mgmt run` agents with no graph of their own,
each on its own loopback address (127.0.1.I), h1 starting the cluster and the
others joining through it (the store's ideal size stays 5: 5 members, the
rest clients). Once every agent reports and the store has its 5 members, as an operator does it:

1. `mgmt deploy --wait` of one template: every host keeps a file of its own
   render. Measured from the deploy command's start to its exit (every live
   host runs it and converged).
2. A deploy that adds, on every host, an exported file and the collection of
   every host's: N new files on each. Measured: to the command's exit, and
   until every host holds every host's export (read on disk).
3. A deploy that changes one host's export only: from the command's start
   until every host's copy of that export holds the new text (on disk).
4. RSS of every agent (VmRSS), members and clients apart, and the fleet's CPU
   over --idle seconds of nothing happening (ticks of every agent, as % of
   one core).

    python3 bench/fleet.py                          # N = 10, 30, 100
    python3 bench/fleet.py --sizes 30 --mgmt target/release/mgmt --idle 20

FLEET_PERF=h50 records that agent with perf through the first deploy
(/tmp/fleet.perf). FLEET_LOG=info keeps the agents' logs at that level, FLEET_KEEP=1 keeps
their directory (logs hN.log) for a look afterwards.

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
    # The managed files on tmpfs: N*N files created right after an earlier
    # run deleted as many would measure ext4's inode allocator (its
    # recently_deleted scan, bench/README.md), not the fleet. The stores
    # stay on disk, fsyncs and all.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    out_dir = tempfile.mkdtemp(prefix=f"mgmt-fleet-{n}-out-", dir=shm)
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
                                          env=dict(os.environ, RUST_LOG=os.environ.get("FLEET_LOG", "warn"))))
            if i == 1:
                time.sleep(0.3)
        def formed():
            rows = [r for r in (mgmt_json(mgmt, "status", "--json", "--seeds", seeds) or []) if r["reachable"]]
            members = [r for r in rows if r["status"]["store"] in ("leader", "member")]
            learners = [r for r in rows if r["status"]["store"] == "learner"]
            return len(rows) == n and len(members) == min(5, n) and not learners

        # Every agent reports, and the store has grown to its 5 members.
        started = wait(f"{n} agents reporting, the store formed", formed, 300)
        for i in range(1, n + 1):
            os.makedirs(os.path.join(out_dir, f"h{i}"), exist_ok=True)

        rows = mgmt_json(mgmt, "status", "--json", "--seeds", seeds) or []
        role = {r["host"]: r["status"]["store"] for r in rows}
        is_client = [role.get(f"h{i}") == "client" for i in range(1, n + 1)]

        def cpu_by_role():
            t = [ticks(p.pid) for p in procs]
            return (sum(x for x, c in zip(t, is_client) if not c), sum(x for x, c in zip(t, is_client) if c))

        def cpu_since(c0):
            c = cpu_by_role()
            return f"CPU s members {(c[0] - c0[0]) / TICK:.1f}, clients {(c[1] - c0[1]) / TICK:.1f}"

        def holds(i, j, version):
            try:
                with open(os.path.join(out_dir, f"h{i}", f"from-h{j}")) as f:
                    return f.read() == f"exported by h{j} {version}\n"
            except OSError:
                return False

        graph = os.path.join(work, "site.yaml")
        perf = None
        if os.environ.get("FLEET_PERF"):
            # perf record of one agent (hN) through the three deploys.
            pid = procs[int(os.environ["FLEET_PERF"].lstrip("h")) - 1].pid
            perf = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-o", "/tmp/fleet.perf", "-p", str(pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

        # 1. A deploy: one file per host, its own render.
        cpu0 = cpu_by_role()
        with open(graph, "w") as f:
            f.write(TEMPLATE.split("  - name: \"@@")[0].replace("OUT", out_dir))
        _, deploy_s, _ = deploy(mgmt, seeds, graph)
        deploy_cpu = cpu_since(cpu0)

        # 2. A deploy that adds an export per host and the collection of all:
        #    N new files on every host (N*N in all).
        cpu0 = cpu_by_role()
        with open(graph, "w") as f:
            f.write(TEMPLATE.replace("OUT", out_dir).replace("VERSION", "v1"))
        _, exports_s, t0 = deploy(mgmt, seeds, graph)
        # --wait saw every host converge on its graph; the exports of hosts
        # that converged later may still be on their way to the others.
        wait("every export everywhere", lambda: all(
            holds(i, j, "v1") for i in range(1, n + 1) for j in range(1, n + 1)), 120)
        everywhere_s = time.monotonic() - t0
        exports_cpu = cpu_since(cpu0)

        # 3. One host's export changes (a deploy that changes h1's render
        #    only): until every host holds the new text.
        with open(graph, "w") as f:
            f.write(TEMPLATE.replace("OUT", out_dir).replace(
                "VERSION", "{% if host.name == 'h1' %}v2{% else %}v1{% endif %}"))
        _, _, t0 = deploy(mgmt, seeds, graph)
        wait("the changed export everywhere", lambda: all(holds(i, 1, "v2") for i in range(1, n + 1)), 120)
        export_s = time.monotonic() - t0
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()

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

        print(f"N={n:<4} formed in {started:4.1f} s\n"
              f"  deploy, every host converged          {deploy_s:6.2f} s  ({deploy_cpu})\n"
              f"  deploy adding {n} exports, converged  {exports_s:6.2f} s, every export on every host "
              f"{everywhere_s:.2f} s  ({exports_cpu})\n"
              f"  one changed export on every host      {export_s:6.2f} s\n"
              f"  RSS MiB: members {mb(members)}, clients {mb(clients)}; idle CPU of the fleet "
              f"{cpu:.1f}% of a core", flush=True)
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
        if os.environ.get("FLEET_KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(out_dir, ignore_errors=True)


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
