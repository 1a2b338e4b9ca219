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
tools=(cf-agent:cfengine3 /usr/bin/time:time)
[ "$puppet" = 1 ] && tools+=(puppet:puppet)
. bench/setup.sh
bench_setup "${tools[@]}"
if [ "$puppet" = 1 ]; then echo "puppet $(puppet --version)"; fi
exec python3 bench/peers.py --mgmt "$mgmt" --sizes "$sizes" "${extra[@]}"
