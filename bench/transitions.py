#!/usr/bin/env python3
"""How long the cluster takes to change shape: the four agents of the
articles on loopback (127.0.0.1-4, as `cli`'s four-agent test runs them),
the first bootstrapping with --ideal-cluster-size 3.

Times, each from the operator's `etcdctl put /_mgmt/idealClusterSize N` (or
from the agents' start, for "form 3") until every member, asked on its own
client port, lists exactly that many voters:

    form 3, grow to 4 (ideal 5), shrink to 1, regrow to 3

Rounds: --rounds (default 3), a fresh cluster each; the median and range are
printed.
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
from idle import ROOT, start  # noqa: E402


def etcdctl(client, *args):
    r = subprocess.run(
        ["etcdctl", "--dial-timeout=300ms", "--command-timeout=300ms",
         "--endpoints", client.removeprefix("http://"), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, ETCDCTL_API="3"),
    )
    return r.stdout if r.returncode == 0 else None


def voters(client):
    out = etcdctl(client, "member", "list")
    if out is None:
        return None
    rows = [line.split(", ") for line in out.splitlines() if line.strip()]
    # id, status, name, peer, client, is_learner
    return sorted(r[2] for r in rows if len(r) >= 6 and r[5].strip() == "false" and r[2])


def until_members(clients, n, timeout_s=60.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        seen = [voters(c) for c in clients]
        lists = [s for s in seen if s]
        if lists and all(len(s) == n for s in lists):
            names = lists[0]
            # Every member agrees.
            if all(voters(clients[int(h[1:]) - 1]) == names for h in names):
                return time.monotonic() - t0, names
        time.sleep(0.02)
    sys.exit(f"transitions: never {n} members")


def round_once(mgmt, work):
    procs = []
    try:
        t0 = time.monotonic()
        p, c1, _ = start(mgmt, work, "h1", "127.0.0.1", None, True, ["--ideal-cluster-size", "3"])
        procs.append(p)
        clients = [c1]
        for i in (2, 3, 4):
            p, c, _ = start(mgmt, work, f"h{i}", f"127.0.0.{i}", c1, True)
            procs.append(p)
            clients.append(c)
        until_members(clients, 3)
        form = time.monotonic() - t0  # from the agents' start
        etcdctl(c1, "put", "/_mgmt/idealClusterSize", "5")
        grow, _ = until_members(clients, 4)
        etcdctl(c1, "put", "/_mgmt/idealClusterSize", "1")
        shrink, one = until_members(clients, 1)
        survivor = clients[int(one[0][1:]) - 1]
        etcdctl(survivor, "put", "/_mgmt/idealClusterSize", "3")
        regrow, _ = until_members(clients, 3)
        return form, grow, shrink, regrow
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    args = ap.parse_args()
    rows = []
    for _ in range(args.rounds):
        work = tempfile.mkdtemp(prefix="mgmt-transitions-")
        try:
            rows.append(round_once(args.mgmt, work))
        finally:
            if os.environ.get("KEEP"):
                print(f"logs kept in {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
    print("| transition | median s | min-max s |")
    print("| --- | --- | --- |")
    for i, name in enumerate(["form 3", "grow to 4", "shrink to 1", "regrow to 3"]):
        xs = [r[i] for r in rows]
        print(f"| {name} | {statistics.median(xs):.2f} | {min(xs):.2f}-{max(xs):.2f} |")


if __name__ == "__main__":
    main()
