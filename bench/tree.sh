#!/usr/bin/env bash
# A directory tree kept in sync with its source, one shot: mgmt's file
# `source` + `recurse` against `rsync -a --delete` (and with `--checksum`,
# which compares content as mgmt does) and cf-agent's `copy_from` (digest
# compare, purge). Two scenarios: the first copy into an empty target, and a
# converged check (nothing to do). Median of RUNS alternating runs.
#
#   bench/tree.sh [FILES [RUNS]]     # default 10000 files (100 directories), 5 runs
#
# mgmt runs as the README runs it (`mgmt run --file G --converged-timeout 0`,
# store included; a temporary --prefix). Installs cfengine3 and rsync if missing.
set -euo pipefail
files=${1:-10000}
runs=${2:-5}
cd "$(dirname "$0")/.."
need=()
command -v cf-agent >/dev/null || need+=(cfengine3)
command -v rsync >/dev/null || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p mgmt --locked -q
mgmt=$PWD/target/release/mgmt

# Not under /tmp: other jobs' files there would wake nothing of ours, but
# keep the trees on one quiet filesystem all the same.
W=$(mktemp -d /var/tmp/mgmt-bench-tree.XXXXXX)
trap 'rm -rf "$W"' EXIT
src=$W/src dst=$W/dst
dirs=$(( (files + 99) / 100 ))
for ((d = 0; d < dirs; d++)); do
    mkdir -p "$src/d$d"
    for ((f = 0; f < 100 && d * 100 + f < files; f++)); do
        printf 'file %d/%d\n%01000d\n' "$d" "$f" "$((d * 100 + f))" >"$src/d$d/f$f"
    done
done
printf 'graph: tree\nresources:\n  file:\n  - name: tree\n    path: %s/\n    source: %s/\n    recurse: true\n' \
    "$dst" "$src" >"$W/g.yaml"
cat >"$W/p.cf" <<EOF
body common control
{
  bundlesequence => { "main" };
}
body copy_from sync
{
  source => "$src";
  compare => "digest";
  purge => "true";
  preserve => "true";
}
body depth_search all
{
  depth => "inf";
}
bundle agent main
{
  files:
    "$dst/."
      create => "true",
      copy_from => sync,
      depth_search => all;
}
EOF

run() { # tool -> its command
    case $1 in
    mgmt) "$mgmt" run --file "$W/g.yaml" --converged-timeout 0 --prefix "$W/prefix" --hostname bench ;;
    rsync) rsync -a --delete "$src/" "$dst/" ;;
    rsync-c) rsync -a --delete --checksum "$src/" "$dst/" ;;
    cf-agent) cf-agent -K -f "$W/p.cf" ;;
    esac
}
timed() {
    local s e
    s=$(date +%s%N)
    run "$1" >"$W/last.log" 2>&1 || { echo "failed: $1" >&2; cat "$W/last.log" >&2; exit 1; }
    e=$(date +%s%N)
    echo $(( (e - s) / 1000 ))
}
same() { diff -r "$src" "$dst" >/dev/null; }
median() { tr ' ' '\n' | sort -n | awk '{a[NR] = $1} END {printf "%.3f", a[int((NR + 1) / 2)] / 1e6}'; }

tools=(mgmt rsync rsync-c cf-agent)
declare -A copy check
for ((r = 0; r < runs; r++)); do
    for t in "${tools[@]}"; do
        rm -rf "$dst"
        sync
        copy[$t]+="$(timed "$t") "
        same || { echo "$t: the copy differs from the source" >&2; exit 1; }
        check[$t]+="$(timed "$t") "
        same || { echo "$t: the check changed the copy" >&2; exit 1; }
    done
done

echo "Tree sync, $files files in $dirs directories, median of $runs runs, seconds ($(nproc) cores):"
echo
echo "| scenario | mgmt | rsync -a --delete | rsync -a --delete --checksum | cf-agent copy_from (digest) |"
echo "|---|---|---|---|---|"
for s in copy check; do
    declare -n col=$s
    row="| $([ $s = copy ] && echo "first copy" || echo "converged check") |"
    for t in "${tools[@]}"; do
        row+=" $(echo "${col[$t]}" | median) |"
    done
    echo "$row"
done
echo
m=$(echo "${check[mgmt]}" | median) c=$(echo "${check[cf-agent]}" | median) k=$(echo "${check[rsync-c]}" | median)
mc=$(echo "${copy[mgmt]}" | median) cc=$(echo "${copy[cf-agent]}" | median) rc=$(echo "${copy[rsync]}" | median)
awk -v m="$m" -v c="$c" -v k="$k" -v mc="$mc" -v cc="$cc" -v rc="$rc" 'BEGIN {
    printf "converged check: cf-agent / mgmt %.1fx, rsync --checksum / mgmt %.1fx\n", c / m, k / m
    printf "first copy: cf-agent / mgmt %.1fx, rsync / mgmt %.1fx\n", cc / mc, rc / mc
}'
