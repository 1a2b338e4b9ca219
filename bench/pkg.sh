#!/usr/bin/env bash
# The articles' package benchmark: installing and checking one package
# (powertop) and three (powertop, sl, cowsay), side by side for mgmt, Puppet,
# pkcon and apt-get, with warm caches. Prints a table of medians and the
# ratios the pkg/svc issue sets as targets.
#
#   bench/pkg.sh [RUNS]        # as root; default 5 runs per cell (at least 3)
#
# mgmt runs as the README runs it (`mgmt run --file G --converged-timeout 0`,
# store included; only its state directory is a temporary --prefix). PackageKit
# (for mgmt and pkcon) runs on a private system bus this script starts and
# stops, as the tests do; Puppet uses its apt provider (apt-get). Between
# install runs the packages are removed with their auto-installed
# dependencies (not timed). It installs Puppet (apt-get install puppet) if
# missing, and builds mgmt in release mode.
set -euo pipefail
runs=${1:-5}
[ "$runs" -ge 3 ] || { echo "at least 3 runs" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "bench/pkg.sh: run as root" >&2; exit 2; }
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

command -v puppet >/dev/null || apt-get install -y -qq puppet >/dev/null
cargo build --release -p mgmt --locked -q
mgmt=$PWD/target/release/mgmt

W=$(mktemp -d /tmp/mgmt-bench-pkg.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() {
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
        wait "${pids[$i]}" 2>/dev/null || true
    done
    remove_all
    rm -rf "$W"
}
one=(powertop)
three=(powertop sl cowsay)
remove_all() {
    local present=()
    for p in "${three[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 && present+=("$p")
    done
    [ ${#present[@]} -eq 0 ] || apt-get -y -qq remove --autoremove "${present[@]}" >/dev/null 2>&1
}
trap cleanup EXIT

export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$W/system_bus_socket
dbus-daemon --config-file=/usr/share/dbus-1/system.conf --address="$DBUS_SYSTEM_BUS_ADDRESS" \
    --nofork --nopidfile >/dev/null 2>&1 &
pids+=($!)
until busctl --system status org.freedesktop.DBus >/dev/null 2>&1; do sleep 0.02; done
/usr/lib/polkit-1/polkitd --no-debug >/dev/null 2>&1 &
pids+=($!)
/usr/libexec/packagekitd --disable-timer --keep-environment >/dev/null 2>&1 &
pids+=($!)
until busctl --system status org.freedesktop.PackageKit >/dev/null 2>&1; do sleep 0.05; done

printf 'graph: bench\nresources:\n  pkg:\n  - name: powertop\n    state: installed\n' >"$W/one.yaml"
cp examples/autogroup2.yaml "$W/three.yaml"
echo "package { ['powertop']: ensure => installed }" >"$W/one.pp"
echo "package { ['powertop', 'sl', 'cowsay']: ensure => installed }" >"$W/three.pp"

# One timed command (seconds, 3 decimals); its output goes to $W/last.log.
timed() {
    local s e
    s=$(date +%s.%N)
    "$@" >"$W/last.log" 2>&1 || { echo "failed: $* (see below)" >&2; cat "$W/last.log" >&2; exit 1; }
    e=$(date +%s.%N)
    echo "$s $e" | awk '{printf "%.3f", $2 - $1}'
}
median() { tr ' ' '\n' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

tool_cmd() { # tool scenario(one|three) -> the command
    local tool=$1 n=$2 pk
    if [ "$n" = one ]; then pk=("${one[@]}"); else pk=("${three[@]}"); fi
    case $tool in
    mgmt) echo "$mgmt run --file $W/$n.yaml --converged-timeout 0 --prefix $W/prefix --hostname bench" ;;
    puppet) echo "puppet apply $W/$n.pp" ;;
    # pkcon exits 5 ("nothing useful was done") when all are installed: its check.
    pkcon) echo "sh -c 'pkcon -y -p install ${pk[*]}; rc=\$?; [ \$rc -eq 0 ] || [ \$rc -eq 5 ]'" ;;
    apt-get) echo "apt-get install -y -qq ${pk[*]}" ;;
    esac
}

declare -A result
for n in one three; do
    for tool in mgmt puppet pkcon apt-get; do
        cmd=$(tool_cmd "$tool" "$n")
        # Warm caches: one untimed install and check.
        remove_all
        eval "$cmd" >/dev/null 2>&1 || true
        installs=() checks=()
        for ((r = 0; r < runs; r++)); do
            remove_all
            installs+=("$(timed eval "$cmd")")
            checks+=("$(timed eval "$cmd")")
        done
        result[$tool,$n,install]=$(echo "${installs[*]}" | median)
        result[$tool,$n,check]=$(echo "${checks[*]}" | median)
        echo "$tool $n: install ${installs[*]} | check ${checks[*]}" >&2
    done
done

echo
echo "Medians of $runs runs, seconds (warm caches, $(nproc) cores):"
echo
echo "| scenario | mgmt | Puppet | pkcon | apt-get | Puppet / mgmt |"
echo "|---|---|---|---|---|---|"
for n in one three; do
    label=$([ $n = one ] && echo "1 package" || echo "3 packages")
    for what in install check; do
        m=${result[mgmt,$n,$what]} p=${result[puppet,$n,$what]}
        ratio=$(awk -v p="$p" -v m="$m" 'BEGIN {printf "%.2f", p / m}')
        echo "| $label, $what | $m | $p | ${result[pkcon,$n,$what]} | ${result[apt-get,$n,$what]} | ${ratio}x |"
    done
done
echo
m3i=${result[mgmt,three,install]} k3i=${result[pkcon,three,install]}
awk -v m="$m3i" -v p="${result[puppet,three,install]}" -v k="$k3i" -v mc="${result[mgmt,three,check]}" \
    -v pc="${result[puppet,three,check]}" 'BEGIN {
    printf "3-package install: %.2fx faster than Puppet (target >= 2.39x), %+.0f%% against pkcon (target within 10%%)\n", p / m, (m / k - 1) * 100
    printf "3-package check: %.1fx faster than Puppet (target >= 12x)\n", pc / mc
}'
