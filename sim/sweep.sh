#!/usr/bin/env bash
# A long sweep of the simulator over fresh seeds: run it before calling any
# change to clustering done (CI runs a fixed 200 seeds; a fresh range is
# what finds new bugs).
#
#   sim/sweep.sh [FIRST [COUNT [CHUNK]]]      # default: 5000 10000 250
#
# Builds the simulator once (the `sim` profile, `--cfg tokio_unstable`, so a
# seed replays exactly), then runs the seeds in chunks of CHUNK, each in a
# process of its own and under a time limit (a hung seed stops only its
# chunk). Every failing seed is printed with the command that replays it, and
# the sweep goes on after it. Exit status: 0 if every seed passed. Logs of
# failing and hung chunks are kept in $SWEEP_LOGS (default /tmp/sim-sweep).
set -u
first=${1:-5000}
count=${2:-10000}
chunk=${3:-250}
limit=${SWEEP_CHUNK_TIMEOUT:-900}
logs=${SWEEP_LOGS:-/tmp/sim-sweep}
mkdir -p "$logs"
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg tokio_unstable"
bin=$(cargo test --profile sim -p sim --test sim --no-run --locked --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "sim":
        print(m["executable"])')
if [ -z "$bin" ]; then
    echo "sweep: cannot build the simulator" >&2
    exit 2
fi
# A copy: a build during the sweep replaces the binary in target/.
cp "$bin" "$logs/sim-under-sweep"
bin="$logs/sim-under-sweep"

replay() {
    echo "  replay: RUSTFLAGS=\"--cfg tokio_unstable\" SIM_SEED=$1 SIM_SHRINK=0 cargo test --profile sim -p sim --test sim seeded_schedules -- --nocapture"
}

failed=0
seed=$first
end=$((first + count))
start=$(date +%s)
while [ "$seed" -lt "$end" ]; do
    n=$((end - seed < chunk ? end - seed : chunk))
    log="$logs/chunk-$seed.log"
    SIM_SEED=$seed SIM_SEEDS=$n SIM_SHRINK=0 timeout "$limit" "$bin" --exact seeded_schedules >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        rm -f "$log"
        seed=$((seed + n))
        echo "sweep: seeds $first..$((seed - 1)) run ($(($(date +%s) - start)) s)"
        continue
    fi
    failed=1
    bad=$(grep -oE '^seed [0-9]+:' "$log" | head -1 | grep -oE '[0-9]+')
    # A panic that aborts the process names no seed: the last one started is it.
    started=$(grep -oE '^sim seed [0-9]+ ' "$log" | tail -1 | grep -oE '[0-9]+')
    if [ -n "$bad" ]; then
        echo "sweep: FAIL $(grep -E '^seed [0-9]+:' "$log" | head -1)"
        replay "$bad"
        seed=$((bad + 1))
    elif [ $rc -ne 124 ] && [ -n "$started" ]; then
        echo "sweep: FAIL seed $started: the process died (exit $rc): $(grep -m1 -A1 'panicked at' "$log" | tail -1)"
        replay "$started"
        seed=$((started + 1))
    elif [ $rc -eq 124 ]; then
        # The chunk hung: run its seeds one by one to name the culprit.
        echo "sweep: seeds $seed..$((seed + n - 1)) hung after ${limit}s; trying them one by one"
        for s in $(seq "$seed" $((seed + n - 1))); do
            if ! SIM_SEED=$s SIM_SEEDS=1 SIM_SHRINK=0 timeout 120 "$bin" --exact seeded_schedules >"$logs/seed-$s.log" 2>&1; then
                echo "sweep: FAIL seed $s (see $logs/seed-$s.log)"
                replay "$s"
            else
                rm -f "$logs/seed-$s.log"
            fi
        done
        seed=$((seed + n))
    else
        echo "sweep: seeds $seed..$((seed + n - 1)) failed without naming a seed (exit $rc); see $log"
        seed=$((seed + n))
    fi
done
[ $failed -eq 0 ] && echo "sweep: all $count seeds from $first pass ($(($(date +%s) - start)) s)"
exit $failed
