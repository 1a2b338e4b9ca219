#!/usr/bin/env python3
"""Write availability under leader faults: three mgmt agents against a
three-member etcd 3.4, the same schedule on each, one after the other.

A put starts every --every seconds (etcdctl, every endpoint given, as an
operator's client does), whether or not the ones before it finished. Every few seconds the leader is killed (kill -9, restarted
from its data once writes resumed) or paused (SIGSTOP for --pause seconds,
longer than an election timeout, then SIGCONT). For each fault the outage is
the time from the fault to the first write acknowledged that was started
after it. Printed per system: the outages (median, worst), and the faults
after which writes never resumed within --give-up seconds (the surviving
majority elected no leader).

    python3 bench/faults.py                           # 20 faults each
    python3 bench/faults.py --faults 40 --mgmt target/release/mgmt

Members listen on 127.0.2.N (etcd) and 127.0.3.N (mgmt), ports 2379/2380.
FAULTS_LOG sets the agents' RUST_LOG (default info); FAULTS_KEEP=1 keeps
their directory (logs hN.log) for a look afterwards.
Every process started is stopped by pid at the end.
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
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ip(net, i):
    return f"127.0.{net}.{i}"


def client_url(net, i):
    return f"http://{ip(net, i)}:2379"


def peer_url(net, i):
    return f"http://{ip(net, i)}:2380"


class Cluster:
    """Three members of one system, started and restarted by the same command."""

    def __init__(self, kind, binary, top, net):
        self.kind, self.binary, self.net = kind, binary, net
        self.dir = os.path.join(top, kind)
        os.makedirs(self.dir)
        self.procs = {}
        self.logs = {}

    def endpoints(self):
        return ",".join(f"{ip(self.net, i)}:2379" for i in (1, 2, 3))

    def command(self, i):
        name, data = f"h{i}", os.path.join(self.dir, f"h{i}")
        if self.kind == "etcd":
            initial = ",".join(f"h{j}={peer_url(self.net, j)}" for j in (1, 2, 3))
            return [
                self.binary, "--name", name, "--data-dir", data,
                "--listen-client-urls", client_url(self.net, i),
                "--advertise-client-urls", client_url(self.net, i),
                "--listen-peer-urls", peer_url(self.net, i),
                "--initial-advertise-peer-urls", peer_url(self.net, i),
                "--initial-cluster", initial, "--initial-cluster-state", "new",
            ]
        cmd = [
            self.binary, "run", "--hostname", name, "--prefix", data,
            "--client-urls", client_url(self.net, i),
            "--server-urls", peer_url(self.net, i),
        ]
        if os.environ.get("FAULTS_KEEP"):
            cmd += ["--log-format", "json"]
        if i == 1:
            cmd += ["--ideal-cluster-size", "3"]
        else:
            cmd += ["--seeds", client_url(self.net, 1)]
        return cmd

    def start(self, i):
        log = open(os.path.join(self.dir, f"h{i}.log"), "ab")
        env = dict(os.environ, RUST_LOG=os.environ.get("FAULTS_LOG", "info"))
        self.procs[i] = subprocess.Popen(
            self.command(i), stdout=log, stderr=log, env=env, start_new_session=True
        )
        self.logs[i] = log

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def ctl(self, *args, endpoints=None, timeout="3s"):
        out = subprocess.run(
            ["etcdctl", "--endpoints", endpoints or self.endpoints(),
             f"--command-timeout={timeout}", *args],
            capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"),
        )
        return out.stdout if out.returncode == 0 else None

    def healthy(self):
        """Three started voters, and every member answering a status."""
        out = self.ctl("member", "list", "-w", "json")
        if not out:
            return False
        members = json.loads(out).get("members", [])
        voters = [m for m in members if m.get("name") and not m.get("isLearner")]
        if len(voters) != 3:
            return False
        return all(
            self.ctl("endpoint", "status", endpoints=f"{ip(self.net, i)}:2379")
            for i in (1, 2, 3)
        )

    def leader(self):
        """The index (1-3) of the member that leads now, if one does."""
        for i in (1, 2, 3):
            out = self.ctl("endpoint", "status", "-w", "json",
                           endpoints=f"{ip(self.net, i)}:2379", timeout="1s")
            if not out:
                continue
            st = json.loads(out)[0]["Status"]
            if st["header"]["member_id"] == st["leader"]:
                return i
        return None


class Writers:
    """Puts started every --every seconds, each through its own etcdctl and
    whatever the others do (a put stuck on a dead member must not delay the
    next); records (start, end) of each acknowledged one."""

    def __init__(self, cluster, every, in_flight):
        self.cluster, self.every = cluster, every
        self.acks, self.lock = [], threading.Lock()
        self.slots = threading.Semaphore(in_flight)
        self.stopping = False
        self.launcher = threading.Thread(target=self.launch)
        self.launcher.start()

    def launch(self):
        i = 0
        while not self.stopping:
            if self.slots.acquire(timeout=self.every):
                threading.Thread(target=self.put, args=(i,), daemon=True).start()
                i += 1
            time.sleep(self.every)

    def put(self, i):
        began = time.monotonic()
        try:
            if self.cluster.ctl("put", f"w/{i}", "v", timeout="2s") is not None:
                with self.lock:
                    self.acks.append((began, time.monotonic()))
        finally:
            self.slots.release()

    def first_ack_started_after(self, t):
        with self.lock:
            ends = [end for (began, end) in self.acks if began >= t]
        return min(ends) if ends else None

    def stop(self):
        self.stopping = True
        self.launcher.join()


def wait(pred, within):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def run_system(kind, binary, top, net, args):
    c = Cluster(kind, binary, top, net)
    try:
        if kind == "etcd":
            for i in (1, 2, 3):
                c.start(i)
        else:
            c.start(1)
            time.sleep(1)
            for i in (2, 3):
                c.start(i)
        if not wait(c.healthy, 60):
            sys.exit(f"{kind}: three members never came up (logs in {c.dir})")
        writers = Writers(c, args.every, args.in_flight)
        time.sleep(2)
        outages, stuck = [], []
        for n in range(args.faults):
            which = "kill" if n % 2 == 0 else "pause"
            wait(lambda: c.leader() is not None, 10)
            leader = c.leader()
            if leader is None:
                stuck.append(f"fault {n}: no leader to fault")
                continue
            pid = c.procs[leader].pid
            t, wall = time.monotonic(), time.time()
            if which == "kill":
                os.kill(pid, signal.SIGKILL)
                c.procs[leader].wait()
            else:
                os.kill(pid, signal.SIGSTOP)
            resumed = wait(lambda: writers.first_ack_started_after(t) is not None, args.give_up)
            if which == "pause":
                time.sleep(max(0.0, t + args.pause - time.monotonic()))
                os.kill(pid, signal.SIGCONT)
            else:
                c.start(leader)
            if resumed:
                outage = writers.first_ack_started_after(t) - t
                outages.append(outage)
                print(f"  {kind} fault {n:2} {which:5} h{leader}: writes back after {outage:.2f} s"
                      f"  (at {time.strftime('%H:%M:%S', time.gmtime(wall))}.{int(wall % 1 * 1000):03})",
                      flush=True)
            else:
                stuck.append(f"fault {n} ({which} h{leader}): no write within {args.give_up} s")
                print(f"  {kind} fault {n:2} {which:5} h{leader}: NO WRITE within {args.give_up} s",
                      flush=True)
            if not wait(c.healthy, 60):
                stuck.append(f"after fault {n}: three members never healthy again")
                break
            time.sleep(args.settle)
        writers.stop()
        restarted = []
        if kind == "mgmt":
            for i in (1, 2, 3):
                with open(os.path.join(c.dir, f"h{i}.log"), errors="replace") as f:
                    restarted += [f"h{i}: {l.strip()}" for l in f if "store server" in l and "start" in l]
        return outages, stuck, restarted
    finally:
        c.stop_all()


def summary(kind, outages, stuck):
    if outages:
        q = sorted(outages)
        print(f"{kind:5} faults {len(outages) + len(stuck):3}  outage median {statistics.median(q):.2f} s"
              f"  p90 {q[int(0.9 * (len(q) - 1))]:.2f} s  worst {q[-1]:.2f} s"
              f"  never resumed {len(stuck)}")
    else:
        print(f"{kind:5} no fault measured; {stuck}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    ap.add_argument("--etcd", default=shutil.which("etcd") or "etcd")
    ap.add_argument("--faults", type=int, default=20)
    ap.add_argument("--every", type=float, default=0.05, help="seconds between put starts")
    ap.add_argument("--in-flight", type=int, default=60, help="puts running at most")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds a paused leader stays stopped")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between faults once healthy")
    ap.add_argument("--give-up", type=float, default=30.0)
    ap.add_argument("--only", choices=["etcd", "mgmt"])
    args = ap.parse_args()
    top = tempfile.mkdtemp(prefix="faults-")
    results = {}
    try:
        for kind, binary, net in (("etcd", args.etcd, 2), ("mgmt", args.mgmt, 3)):
            if args.only and args.only != kind:
                continue
            print(f"{kind}: {args.faults} leader faults (kill -9 and SIGSTOP {args.pause} s, alternating)",
                  flush=True)
            results[kind] = run_system(kind, binary, top, net, args)
        print()
        for kind, (outages, stuck, restarted) in results.items():
            summary(kind, outages, stuck)
            for s in stuck:
                print(f"      {s}")
        if "mgmt" in results:
            print("mgmt restarts, as the agents logged them:")
            for line in results["mgmt"][2]:
                print(f"      {line[:160]}")
    finally:
        if os.environ.get("FAULTS_KEEP"):
            print(f"logs kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
