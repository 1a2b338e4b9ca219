#!/usr/bin/env bash
# Side-by-side benchmark of mgmt against cf-agent (and Puppet with --puppet).
# Usage: bench/peers.sh [--big] [--puppet] [--runs N]
#   --big      also N = 10000
#   --puppet   install and include Puppet (slow: minutes at N = 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=10,100,1000
extra=()
puppet=0
while [ $# -gt 0 ]; do
  case "$1" in
    --big) sizes=10,100,1000,10000 ;;
    --puppet) puppet=1; extra+=(--puppet) ;;
    --runs) extra+=(--runs "$2"); shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
need=()
command -v cf-agent >/dev/null || need+=(cfengine3)
[ -x /usr/bin/time ] || need+=(time)
[ "$puppet" = 1 ] && ! command -v puppet >/dev/null && need+=(puppet)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p mgmt -q
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
mgmt="$target/release/mgmt"
echo "machine: $(nproc) cores, $(uname -r); $("$mgmt" --version); $(cf-agent --version | head -1)"
if [ "$puppet" = 1 ]; then echo "puppet $(puppet --version)"; fi
exec python3 bench/peers.py --mgmt "$mgmt" --sizes "$sizes" "${extra[@]}"
