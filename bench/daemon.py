#!/usr/bin/env python3
"""Daemon figures for mgmt: what it costs to keep N files right, not to fix them once.

For each N (1 and 10 000 by default) the desired state is a directory plus N files
"hello i\\n", mode 0644 (the same state as bench/peers.py). It measures:

- start to converged: `mgmt run --converged-timeout 0` into an empty directory
  (cold: create everything), and into the converged state (warm: check everything);
- RSS of the running daemon (VmHWM = peak, VmRSS = now) once it has converged;
- CPU used while idle: utime + stime from /proc/PID/stat over 10 s of nothing;
- drift-repair latency: write "drift" into one managed file in place, then poll
  (every 0.1 ms) until its content is right again; p50 / p99 / max over SAMPLES
  writes, spread over the files, with a pause between writes so each is measured
  alone.

The daemon always runs with --no-server, so no store binds a port.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import clear, content, gen_mgmt, run, verify  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def mem_mib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def wait_right(path, want, timeout_s=10.0):
    """Polls until `path` holds `want`; returns when it does (or fails)."""
    deadline = time.perf_counter() + timeout_s
    while True:
        try:
            with open(path) as f:
                if f.read() == want:
                    return
        except FileNotFoundError:
            pass
        if time.perf_counter() > deadline:
            sys.exit(f"daemon: {path} was not repaired within {timeout_s} s")
        time.sleep(0.0001)


def drift(path):
    with open(path, "w") as f:
        f.write("drift\n")


def drift_latencies(out, n, samples):
    """Writes "drift" into `samples` of the n managed files in turn, each alone,
    and polls until it is repaired: the repair latencies in ms."""
    lat = []
    for k in range(samples):
        i = (k * 7919) % n
        p = f"{out}/f{i}"
        t0 = time.perf_counter()
        drift(p)
        wait_right(p, content(i))
        lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    return lat


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def measure(mgmt, n, samples, idle_s, work):
    out = os.path.join(work, f"out{n}")
    graph = os.path.join(work, f"g{n}.yaml")
    gen_mgmt(n, out, graph)
    env = dict(os.environ, RUST_LOG="warn")
    once = [mgmt, "run", "--file", graph, "--converged-timeout", "0", "--no-server"]
    clear(out)
    cold, _ = run(once, env)
    verify(n, out)
    warm, _ = run(once, env)
    verify(n, out)

    proc = subprocess.Popen(
        [mgmt, "run", "--file", graph, "--no-server"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        # Ready when a drift on the last file is repaired: its watch is live.
        probe = f"{out}/f{n - 1}"
        drift(probe)
        wait_right(probe, content(n - 1), timeout_s=60)
        time.sleep(0.5)
        mem = mem_mib(proc.pid)
        c0 = cpu_s(proc.pid)
        time.sleep(idle_s)
        idle_cpu = cpu_s(proc.pid) - c0
        lat = drift_latencies(out, n, samples)
        time.sleep(0.2)
        verify(n, out)
        mem_after = mem_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    return {
        "n": n,
        "cold_s": cold,
        "warm_s": warm,
        "hwm": max(mem["VmHWM"], mem_after["VmHWM"]),
        "rss": mem_after["VmRSS"],
        "idle_cpu": idle_cpu,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "max": max(lat),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,10000")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement")
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mgmt-daemon-")
    rows = [measure(args.mgmt, int(n), args.samples, args.idle, work) for n in args.sizes.split(",")]
    shutil.rmtree(work, ignore_errors=True)
    print(f"\ndrift repair over {args.samples} writes; idle CPU over {args.idle:g} s\n")
    print(
        "| N files | start to converged, cold s | start to converged, warm s | RSS peak / now MiB"
        " | idle CPU s | drift repair p50 ms | p99 ms | max ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['cold_s']:.3f} | {r['warm_s']:.3f} | {r['hwm']:.1f} / {r['rss']:.1f}"
            f" | {r['idle_cpu']:.2f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} |"
        )


if __name__ == "__main__":
    main()
