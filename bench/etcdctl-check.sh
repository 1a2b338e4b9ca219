#!/usr/bin/env bash
# etcd's own load checks, `etcdctl check perf` and `check datascale`, against
# one mgmt member (the release build, store on) and one etcd 3.4 member, one
# after the other, on loopback; prints both.
#
#   bench/etcdctl-check.sh [LOAD]        # s (default), m, l, xl
#
# datascale reads process_resident_memory_bytes from /metrics on the client
# port before and after its writes.
set -u
load=${1:-s}
cd "$(dirname "$0")/.."
mgmt=${MGMT:-target/release/mgmt}
[ -x "$mgmt" ] || { echo "build it first: cargo build --release -p mgmt" >&2; exit 2; }
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$1" "${@:2}" 2>&1 | tr '\r' '\n' | grep -E "PASS|FAIL"; }
check() {
    echo "== $1"
    ctl "$2" check perf --load "$load"
    ctl "$2" check datascale --load "$load"
}
m=$(mktemp -d) e=$(mktemp -d)
"$mgmt" run --prefix "$m" --hostname bench --client-urls http://127.0.9.1:23790 \
    --peer-urls http://127.0.9.1:23800 --file examples/noop1.yaml >"$m/log" 2>&1 &
pid=$!
sleep 2
check "mgmt (store on)" 127.0.9.1:23790
kill "$pid"; wait "$pid" 2>/dev/null
etcd --data-dir "$e" --listen-client-urls http://127.0.9.2:23791 \
    --advertise-client-urls http://127.0.9.2:23791 --listen-peer-urls http://127.0.9.2:23801 \
    --initial-advertise-peer-urls http://127.0.9.2:23801 \
    --initial-cluster default=http://127.0.9.2:23801 >"$e/log" 2>&1 &
pid=$!
sleep 2
check "etcd $(etcd --version | head -1 | cut -d' ' -f3)" 127.0.9.2:23791
kill "$pid"; wait "$pid" 2>/dev/null
rm -rf "$m" "$e"
