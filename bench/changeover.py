#!/usr/bin/env python3
"""Live graph changeover: the time from saving a 10 000-resource graph with
one change to that change being on disk, and how many CheckApplies it caused.

A running `mgmt run --file G` (its store on, as the README runs it; own
--prefix and free loopback ports) manages N files (default 10 000, in 100
directories). Each round an editor-style save (a temp file renamed over G)
changes one file's content; the clock stops when the file has its new
content. CheckApplies are counted from the agent's debug log between the
save and one second after. Median of ROUNDS rounds.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def graph(work, n, changed, version):
    lines = ["graph: many", "resources:", "  file:"]
    for i in range(n):
        content = f"v{version} {i}" if i == changed else f"same {i}"
        lines.append(f'  - {{name: f{i}, path: {work}/t/d{i % 100}/f{i}, content: "{content}\\n"}}')
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mgmt", default=os.path.join(ROOT, "target/release/mgmt"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mgmt-changeover-", dir="/var/tmp")
    g = os.path.join(work, "g.yaml")
    with open(g, "w") as f:
        f.write(graph(work, args.files, None, 0))
    client, peer = free_ports(2)
    env = dict(os.environ, RUST_LOG="debug,notify=info,mio=info,openraft=warn,h2=info,tonic=info,hyper=info,tower=info")
    agent = subprocess.Popen(
        [args.mgmt, "run", "--file", g, "--prefix", os.path.join(work, "prefix"), "--hostname", "bench",
         "--client-urls", f"http://127.0.0.1:{client}", "--server-urls", f"http://127.0.0.1:{peer}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    lines = []
    lock = threading.Lock()

    def read():
        for line in agent.stderr:
            with lock:
                lines.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        last = os.path.join(work, f"t/d{(args.files - 1) % 100}/f{args.files - 1}")
        deadline = time.monotonic() + 120
        while not os.path.exists(last):
            if time.monotonic() > deadline:
                sys.exit("changeover: the graph did not apply")
            time.sleep(0.05)
        time.sleep(2)
        took, counts = [], []
        for r in range(1, args.rounds + 1):
            # The same file each round, to a new content: one change per save.
            changed = args.files // 2
            target = os.path.join(work, f"t/d{changed % 100}/f{changed}")
            want = f"v{r} {changed}\n"
            text = graph(work, args.files, changed, r)
            swp = g + ".swp"
            with open(swp, "w") as f:
                f.write(text)
            start = time.monotonic()
            os.rename(swp, g)
            while True:
                try:
                    with open(target) as f:
                        if f.read() == want:
                            break
                except FileNotFoundError:
                    pass
                if time.monotonic() - start > 30:
                    sys.exit(f"round {r}: not applied within 30 s")
                time.sleep(0.001)
            took.append(time.monotonic() - start)
            time.sleep(1)
            with lock:
                runs = [l for t, l in lines if t >= start and ": CheckApply: " in l]
            counts.append(len(runs))
            if os.environ.get("CHANGEOVER_SHOW"):
                print("".join(runs), end="")
        print(f"changeover of a {args.files}-resource graph, one file changed, {args.rounds} rounds:")
        print(f"  save -> on disk: median {statistics.median(took) * 1000:.0f} ms "
              f"(min {min(took) * 1000:.0f}, max {max(took) * 1000:.0f})")
        print(f"  CheckApplies per changeover: {counts}")
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
