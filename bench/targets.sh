#!/usr/bin/env bash
# Every performance target of issue 27 beside what this machine measures
# (bench/targets.py; its docstring gives the method). Installs what is missing
# with apt-get, builds the release binary, then runs the script.
# Usage: bench/targets.sh [--runs N] [--samples N] [--skip-etcdctl] [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/setup.sh
bench_setup cf-agent:cfengine3 /usr/bin/time:time etcd:etcd-server etcdctl:etcd-client
exec python3 bench/targets.py --mgmt "$mgmt" "$@"
