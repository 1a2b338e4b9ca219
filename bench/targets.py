#!/usr/bin/env python3
"""Every performance target of issue 27, each beside what this machine measures.

All on the default path: mgmt's store ON (no --no-server), as the README runs it.
Where a target runs the store with its defaults (targets 1 and 2), mgmt uses the
default prefix (/var/lib/mgmt/) and ports (127.0.0.1:2379 client, 2380 peer) if
nothing listens on them; otherwise it falls back to `--prefix WORK/state` and two
free loopback ports, and says so. State it created under the default prefix
(PREFIX/HOSTNAME when it did not exist before) is removed at the end.

1. One-shot runs, N = 1 000 files ("hello i\\n", mode 0644, in one directory),
   method of bench/peers.py: the tools alternate within each round (--runs,
   default 9): a cold apply into an empty stage, then a check of the converged
   state; content and mode verified after each apply, mtimes unchanged after each
   check; median wall, each run after a `sync` (bench/peers.py's `run`).
   mgmt: `mgmt run --file G --converged-timeout 0`; cf-agent:
   `cf-agent -K -f P.cf`; `mgmt ... --no-server` beside them for reference.
   Targets: check >= 20x faster than cf-agent, apply >= 5x (cf-agent median wall
   / mgmt median wall).
2. A daemon keeping 10 000 files (`mgmt run --file G`): once converged (a drift of
   the last file is repaired), VmRSS < 40 MiB; drift repair p99 < 20 ms over
   --samples writes (bench/daemon.py's method).
3. `mgmt graph --file X` (stdout to /dev/null) of a chain of 150 000 noops (one
   edge to the next) and of 100 000 files in 10 directories (the directories
   declared, AutoEdges adds dir -> file): median wall and peak RSS (GNU time) of
   3 runs; targets < 1 s and < 200 MiB each.
4. A minimal agent (examples/noop1.yaml) a few seconds after it converged:
   VmRSS < 15 MiB with --no-server, < 25 MiB as a store member (own free ports,
   a temp --prefix).
5. `etcdctl check perf --load m` and `--load l` against one mgmt member and one
   etcd 3.4 member (127.0.9.1 / 127.0.9.2, as bench/etcdctl-check.sh; a fresh
   member for every check): mgmt's slowest request <= etcd's, its stddev <=
   etcd's, and it passes every check etcd passes. About 60 s per check;
   --skip-etcdctl skips them.

--quick = --runs 3 --samples 50 --skip-etcdctl (smoke test). Exit status 0
whether or not the targets are met; non-zero only if a measurement failed.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from daemon import drift, drift_latencies, mem_mib, pct, wait_right  # noqa: E402
from peers import clear, content, fmt, free_ports, gen_cf, gen_mgmt, run, verify  # noqa: E402

DEFAULT_PREFIX = "/var/lib/mgmt"
MIB = 1024  # GNU time's %M is in KiB


class Target:
    def __init__(self, name, goal, measured="skipped", met=None):
        self.name, self.goal, self.measured, self.met = name, goal, measured, met


def say(text=""):
    print(text, flush=True)


def progress(text):
    print(f"  {text}", file=sys.stderr, flush=True)


def show(cmd):
    return " ".join(cmd)


# ---------------------------------------------------------------- processes


class Procs:
    """Every long-running process this script starts, stopped by its pid."""

    def __init__(self):
        self.live = []

    def start(self, cmd, env, log):
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self.live.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self):
        for proc in list(self.live):
            self.stop(proc)


def tail(path, n=2000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


# ---------------------------------------------------------------- the store's place


def port_in_use(port, host="127.0.0.1"):
    """Someone listens (a connect succeeds) or holds the port (a bind fails)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port_on(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class StorePlace:
    """Where the store of targets 1 and 2 lives: mgmt's defaults when free, else
    a prefix in the work directory and free ports."""

    def __init__(self, work):
        self.host_dir = os.path.join(DEFAULT_PREFIX, socket.gethostname())
        self.prefix_existed = os.path.isdir(DEFAULT_PREFIX)
        self.host_dir_existed = os.path.isdir(self.host_dir)
        busy = [p for p in (2379, 2380) if port_in_use(p)]
        writable = os.access(DEFAULT_PREFIX if self.prefix_existed else os.path.dirname(DEFAULT_PREFIX), os.W_OK)
        self.default = not busy and writable
        if self.default:
            self.args = []
            self.label = f"default prefix {DEFAULT_PREFIX}/, ports 127.0.0.1:2379 (client) and 2380 (peer)"
        else:
            ports = free_ports(2)
            self.args = [
                "--prefix", os.path.join(work, "state"),
                "--client-urls", f"http://127.0.0.1:{ports[0]}",
                "--server-urls", f"http://127.0.0.1:{ports[1]}",
            ]
            why = f"127.0.0.1:{','.join(map(str, busy))} in use" if busy else f"{DEFAULT_PREFIX} not writable"
            self.label = f"FALLBACK ({why}): {show(self.args)}"

    def cleanup(self):
        """Removes what the runs created under the default prefix, nothing else."""
        if not self.default:
            return
        if not self.prefix_existed:
            shutil.rmtree(DEFAULT_PREFIX, ignore_errors=True)
        elif not self.host_dir_existed:
            shutil.rmtree(self.host_dir, ignore_errors=True)


# ---------------------------------------------------------------- 1. one-shot apply and check


def apply_then_check(cmd, n, out, env):
    """A cold apply into an empty stage, then a check; both verified (peers.py)."""
    clear(out)
    apply_wall, _ = run(cmd, env)
    before = verify(n, out)
    check_wall, _ = run(cmd, env)
    if verify(n, out) != before:
        sys.exit(f"{cmd[0]}: a check of the converged state rewrote files")
    return apply_wall, check_wall


def one_shot(ctx, n=1000):
    out = os.path.join(ctx.work, "out")
    graph, policy = os.path.join(ctx.work, f"{n}.yaml"), os.path.join(ctx.work, f"{n}.cf")
    gen_mgmt(n, out, graph)
    gen_cf(n, out, policy)
    once = [ctx.mgmt, "run", "--file", graph, "--converged-timeout", "0"]
    tools = {
        "mgmt": once + ctx.store.args,
        "mgmt --no-server": once + ["--no-server"],
        "cf-agent": ["cf-agent", "-K", "-f", policy],
    }
    say(f"== 1. one-shot apply and check of {n} files, {ctx.runs} rounds, tools alternating")
    say(f"   store: {ctx.store.label}")
    for tool, cmd in tools.items():
        say(f"   {tool}: {show(cmd)}")
    walls = {(w, t): [] for w in ("apply", "check") for t in tools}
    for r in range(ctx.runs):
        for tool, cmd in tools.items():
            a, c = apply_then_check(cmd, n, out, ctx.env)
            walls[("apply", tool)].append(a)
            walls[("check", tool)].append(c)
        progress(f"one-shot round {r + 1}/{ctx.runs} verified")
    say("   | work | tool | wall s median (min-max) | cf-agent / tool |")
    say("   |---|---|---|---|")
    for work in ("apply", "check"):
        cf = statistics.median(walls[(work, "cf-agent")])
        for tool in tools:
            med = statistics.median(walls[(work, tool)])
            say(f"   | {work} | {tool} | {fmt(walls[(work, tool)])} | {cf / med:.1f}x |")
    say()
    targets = []
    for work, goal in (("check", 20), ("apply", 5)):
        cf = statistics.median(walls[(work, "cf-agent")])
        mg = statistics.median(walls[(work, "mgmt")])
        targets.append(Target(
            f"one-shot {work}, {n} files: cf-agent / mgmt",
            f">= {goal}x",
            f"{cf:.3f} s / {mg:.3f} s = {cf / mg:.1f}x",
            cf / mg >= goal,
        ))
    return targets


# ---------------------------------------------------------------- 2. a daemon keeping 10 000 files


def daemon_10k(ctx, n=10000):
    out = os.path.join(ctx.work, "daemon")
    graph = os.path.join(ctx.work, f"daemon{n}.yaml")
    gen_mgmt(n, out, graph)
    cmd = [ctx.mgmt, "run", "--file", graph] + ctx.store.args
    say(f"== 2. a daemon keeping {n} files, {ctx.samples} drift writes")
    say(f"   store: {ctx.store.label}")
    say(f"   applied first by: {show(cmd[:4] + ['--converged-timeout', '0'] + cmd[4:])}")
    say(f"   daemon: {show(cmd)}")
    clear(out)
    run(cmd[:4] + ["--converged-timeout", "0"] + cmd[4:], ctx.env)
    verify(n, out)
    proc = ctx.procs.start(cmd, ctx.env, os.path.join(ctx.work, "daemon.log"))
    try:
        probe = f"{out}/f{n - 1}"  # converged once a drift of the last file is repaired
        drift(probe)
        wait_right(probe, content(n - 1), timeout_s=60)
        time.sleep(0.5)
        mem = mem_mib(proc.pid)
        lat = drift_latencies(out, n, ctx.samples)
        time.sleep(0.2)
        verify(n, out)
    finally:
        ctx.procs.stop(proc)
    p99 = pct(lat, 99)
    say(f"   VmRSS {mem['VmRSS']:.1f} MiB (VmHWM {mem['VmHWM']:.1f}) once converged")
    say(f"   drift repair p50 {pct(lat, 50):.2f} ms, p99 {p99:.2f} ms, max {max(lat):.2f} ms")
    say()
    return [
        Target(f"daemon, {n} files: VmRSS once converged", "< 40 MiB", f"{mem['VmRSS']:.1f} MiB", mem["VmRSS"] < 40),
        Target(f"daemon, {n} files: drift repair p99", "< 20 ms", f"{p99:.2f} ms ({len(lat)} writes)", p99 < 20),
    ]


# ---------------------------------------------------------------- 3. compile big graphs


def gen_chain(n, path):
    """n noops, each with an edge to the next (as cli/tests/it/run.rs writes it)."""
    lines = ["graph: chain", "resources:", "  noop:"]
    lines += [f"  - name: n{i:06}" for i in range(n)]
    lines.append("edges:")
    lines += [
        f"- {{name: e{i}, from: {{kind: noop, name: n{i - 1:06}}}, to: {{kind: noop, name: n{i:06}}}}}"
        for i in range(1, n)
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def gen_dirs(dirs, per_dir, root, path):
    """`dirs` directories (a path ending in '/') and `per_dir` files in each; the
    dir -> file edges come from AutoEdges (as core/benches/core.rs writes it)."""
    lines = ["graph: files", "resources:", "  file:"]
    lines += [f"  - {{name: {root}/d{d}/}}" for d in range(dirs)]
    lines += [
        f'  - {{name: {root}/d{d}/f{i:05}, content: "x\\n"}}'
        for d in range(dirs)
        for i in range(per_dir)
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def graph_json(ctx, path):
    out = subprocess.run([ctx.mgmt, "graph", "--file", path], capture_output=True, text=True, env=ctx.env)
    if out.returncode != 0:
        sys.exit(f"mgmt graph --file {path} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def check_generators(ctx):
    """Small versions of both graphs compile to the expected resource edges."""
    small = os.path.join(ctx.work, "small.yaml")
    gen_chain(10, small)
    g = graph_json(ctx, small)
    if len(g["vertices"]) != 10 or len(g["resource_edges"]) != 9:
        sys.exit("compile: the small chain did not compile to 10 vertices and 9 edges")
    gen_dirs(3, 4, os.path.join(ctx.work, "tree"), small)
    auto = [e for e in graph_json(ctx, small)["resource_edges"] if e["auto"]]
    if len(auto) != 12:
        sys.exit(f"compile: 3 dirs x 4 files gave {len(auto)} autoedges, not 12")


def compile_big(ctx, runs=3):
    check_generators(ctx)
    chain = os.path.join(ctx.work, "chain150k.yaml")
    files = os.path.join(ctx.work, "files100k.yaml")
    gen_chain(150_000, chain)
    gen_dirs(10, 10_000, os.path.join(ctx.work, "tree"), files)
    say(f"== 3. compile (`mgmt graph`, stdout to /dev/null), median of {runs} runs")
    targets = []
    for what, path in (("150 000-noop chain", chain), ("100 000 files in 10 dirs", files)):
        cmd = [ctx.mgmt, "graph", "--file", path]
        walls, rss = [], []
        for _ in range(runs):
            w, r = run(cmd, ctx.env)
            walls.append(w)
            rss.append(r / MIB)
        wall, mib = statistics.median(walls), statistics.median(rss)
        size = os.path.getsize(path) / 1e6
        say(f"   {what} ({size:.1f} MB of YAML): {show(cmd)}")
        say(f"     wall s {fmt(walls)}, peak RSS MiB median {mib:.1f} ({min(rss):.1f}-{max(rss):.1f})")
        targets.append(Target(f"compile {what}: wall", "< 1 s", f"{wall:.3f} s", wall < 1))
        targets.append(Target(f"compile {what}: peak RSS", "< 200 MiB", f"{mib:.1f} MiB", mib < 200))
        progress(f"compiled {what}")
    say()
    return targets


# ---------------------------------------------------------------- 4. a minimal agent


def minimal_graph():
    path = os.path.join(ROOT, "examples/noop1.yaml")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing")
    return path


def wait_converged(log, proc, limit_s=10.0):
    """Until stderr says it converged or runs its graph (bounded); then 3 s more."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the agent exited with {proc.returncode}:\n{tail(log)}")
        text = tail(log, 1 << 20)
        if "converged" in text or "running graph" in text:
            break
        time.sleep(0.05)
    time.sleep(3)


def agent_rss(ctx, extra, name):
    cmd = [ctx.mgmt, "run", "--file", minimal_graph()] + extra
    log = os.path.join(ctx.work, f"agent-{name}.log")
    env = dict(ctx.env, RUST_LOG="info")  # for its "running graph" line
    proc = ctx.procs.start(cmd, env, log)
    try:
        wait_converged(log, proc)
        mem = mem_mib(proc.pid)
    finally:
        ctx.procs.stop(proc)
    return cmd, mem


def minimal_agent(ctx):
    say("== 4. a minimal agent (examples/noop1.yaml), VmRSS 3 s after it runs its graph")
    alone_cmd, alone = agent_rss(ctx, ["--no-server"], "alone")
    ports = free_ports(2)
    member = [
        "--prefix", os.path.join(ctx.work, "agent-state"),
        "--client-urls", f"http://127.0.0.1:{ports[0]}",
        "--server-urls", f"http://127.0.0.1:{ports[1]}",
    ]
    member_cmd, mem = agent_rss(ctx, member, "member")
    say(f"   without the store: {show(alone_cmd)}: VmRSS {alone['VmRSS']:.1f} MiB")
    say(f"   store member: {show(member_cmd)}: VmRSS {mem['VmRSS']:.1f} MiB")
    say()
    return [
        Target("minimal agent, --no-server: VmRSS", "< 15 MiB", f"{alone['VmRSS']:.1f} MiB", alone["VmRSS"] < 15),
        Target("minimal agent, store member: VmRSS", "< 25 MiB", f"{mem['VmRSS']:.1f} MiB", mem["VmRSS"] < 25),
    ]


# ---------------------------------------------------------------- 5. etcdctl check perf

CHECKS = ("throughput", "slowest", "stddev", "overall")


def etcdctl(endpoint, *args, timeout=600):
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def parse_perf(text):
    """etcdctl 3.4's verdict lines (its progress bar is redrawn with \\r):
    "PASS: Throughput is N writes/s" / "FAIL: Throughput too low: N writes/s",
    "PASS: Slowest request took Xs" / "Slowest request took too long: Xs",
    "PASS: Stddev is Xs" / "Stddev too high: Xs" (a failed slowest or stddev
    has no FAIL: in front), "FAIL: too many errors", then PASS|FAIL."""
    res = {"passed": {c: True for c in CHECKS} | {"errors": True}}
    lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
    verdicts = ("PASS", "FAIL", "Slowest request took", "Stddev")
    for line in (x for x in lines if x.startswith(verdicts)):
        ok = line.startswith("PASS")
        if m := re.search(r"Throughput (?:is|too low:) (\d+) writes/s", line):
            res["passed"]["throughput"], res["throughput"] = ok, int(m.group(1))
        elif m := re.search(r"Slowest request took (?:too long: )?([0-9.]+)s", line):
            res["passed"]["slowest"], res["slowest"] = ok, float(m.group(1))
        elif m := re.search(r"Stddev (?:is|too high:) ([0-9.]+)s", line):
            res["passed"]["stddev"], res["stddev"] = ok, float(m.group(1))
        elif line in ("PASS", "FAIL"):
            res["passed"]["overall"] = ok
        elif "error" in line.lower():
            res["passed"]["errors"] = False
    if "slowest" not in res or "stddev" not in res:
        return None
    return res


def wait_healthy(endpoint, proc, log, limit_s=20.0):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the member on {endpoint} exited with {proc.returncode}:\n{tail(log)}")
        if etcdctl(endpoint, "--dial-timeout", "1s", "endpoint", "health", timeout=10).returncode == 0:
            time.sleep(1)
            return
        time.sleep(0.2)
    sys.exit(f"the member on {endpoint} was not healthy within {limit_s:g} s:\n{tail(log)}")


def member_cmd(ctx, system, data):
    """One fresh member, started as bench/etcdctl-check.sh starts it."""
    ip = "127.0.9.1" if system == "mgmt" else "127.0.9.2"
    client, peer = f"http://{ip}:{free_port_on(ip)}", f"http://{ip}:{free_port_on(ip)}"
    if system == "mgmt":
        cmd = [
            ctx.mgmt, "run", "--prefix", data, "--hostname", "bench", "--client-urls", client,
            "--peer-urls", peer, "--file", minimal_graph(),
        ]
    else:
        cmd = [
            "etcd", "--data-dir", data, "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"default={peer}",
        ]
    return cmd, client.removeprefix("http://")


def check_perf(ctx, system, load):
    data = tempfile.mkdtemp(prefix=f"{system}-", dir=ctx.work)
    cmd, endpoint = member_cmd(ctx, system, os.path.join(data, "data"))
    log = os.path.join(data, "log")
    proc = ctx.procs.start(cmd, ctx.env, log)
    try:
        wait_healthy(endpoint, proc, log)
        progress(f"etcdctl check perf --load {load} against {system} (about a minute)")
        out = etcdctl(endpoint, "check", "perf", "--load", load)
    finally:
        ctx.procs.stop(proc)
        shutil.rmtree(data, ignore_errors=True)
    res = parse_perf(out.stdout + out.stderr)
    if res is None:
        sys.exit(f"etcdctl check perf against {system} gave no verdict:\n{(out.stdout + out.stderr)[-2000:]}")
    say(f"   {system}: {show(cmd)}")
    say(f"     ETCDCTL_API=3 etcdctl --endpoints {endpoint} check perf --load {load}:"
        f" throughput {res.get('throughput', '?')} writes/s, slowest {res['slowest']:.6f} s,"
        f" stddev {res['stddev']:.6f} s, {passes(res)}")
    return res


def passes(res):
    return "/".join("P" if res["passed"][c] else "F" for c in CHECKS)


def etcdctl_targets(ctx, loads):
    say("== 5. etcdctl check perf, one fresh member each (P/F = throughput/slowest/stddev/overall)")
    say(f"   {subprocess.run(['etcd', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}")
    targets = []
    for load in loads:
        m, e = check_perf(ctx, "mgmt", load), check_perf(ctx, "etcd", load)
        everywhere = all(m["passed"][c] or not e["passed"][c] for c in CHECKS + ("errors",))
        targets += [
            Target(f"check perf --load {load}: slowest request", "mgmt <= etcd",
                   f"{m['slowest']:.4f} s vs {e['slowest']:.4f} s", m["slowest"] <= e["slowest"]),
            Target(f"check perf --load {load}: stddev", "mgmt <= etcd",
                   f"{m['stddev']:.5f} s vs {e['stddev']:.5f} s", m["stddev"] <= e["stddev"]),
            Target(f"check perf --load {load}: verdicts", "mgmt passes where etcd does",
                   f"mgmt {passes(m)}, etcd {passes(e)}", everywhere),
        ]
    say()
    return targets


def skipped_etcdctl(loads):
    return [
        Target(f"check perf --load {load}: {what}", goal)
        for load in loads
        for what, goal in (("slowest request", "mgmt <= etcd"), ("stddev", "mgmt <= etcd"),
                           ("verdicts", "mgmt passes where etcd does"))
    ]


# ---------------------------------------------------------------- the table


def print_table(targets):
    say("| target | goal | measured | met |")
    say("|---|---|---|---|")
    for t in targets:
        met = "skipped" if t.met is None else ("yes" if t.met else "no")
        say(f"| {t.name} | {t.goal} | {t.measured} | {met} |")
    measured = [t for t in targets if t.met is not None]
    skipped = len(targets) - len(measured)
    note = f" ({skipped} skipped)" if skipped else ""
    say(f"\n{sum(t.met for t in measured)} of {len(measured)} targets met{note}")


class Context:
    def __init__(self, args):
        self.mgmt = os.path.abspath(args.mgmt)
        self.runs, self.samples = args.runs, args.samples
        self.env = dict(os.environ, RUST_LOG="warn")
        self.work = tempfile.mkdtemp(prefix="mgmt-targets-")
        self.procs = Procs()
        self.store = StorePlace(self.work)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    ap.add_argument("--runs", type=int, default=9, help="rounds of the one-shot runs (default 9)")
    ap.add_argument("--samples", type=int, default=200, help="drift writes of the daemon (default 200)")
    ap.add_argument("--skip-etcdctl", action="store_true", help="skip etcdctl check perf (minutes)")
    ap.add_argument("--quick", action="store_true", help="--runs 3 --samples 50 --skip-etcdctl")
    ap.add_argument("--etcdctl-loads", default="m,l", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.runs, args.samples, args.skip_etcdctl = 3, 50, True
    loads = args.etcdctl_loads.split(",")
    if not os.access(args.mgmt, os.X_OK):
        sys.exit(f"{args.mgmt} is not an executable (build it: cargo build --release -p mgmt)")

    ctx = Context(args)
    targets = []
    try:
        targets += one_shot(ctx)
        targets += daemon_10k(ctx)
        targets += compile_big(ctx)
        targets += minimal_agent(ctx)
        targets += skipped_etcdctl(loads) if args.skip_etcdctl else etcdctl_targets(ctx, loads)
    finally:
        ctx.procs.stop_all()
        ctx.store.cleanup()
        shutil.rmtree(ctx.work, ignore_errors=True)
    print_table(targets)


if __name__ == "__main__":
    main()
