#!/usr/bin/env bash
# The whole test suite, as README.md and CI run it. On a fresh Debian machine
# it first installs what the tests use (as root): the real etcdctl and etcd,
# dbus, polkitd and PackageKit (the pkg tests install and remove small Debian
# packages through it), systemd (the svc tests boot one in namespaces of
# its own), jq (JSON log lines are read with it), man-db (the man page) and
# prometheus (a real one scrapes the agent; promtool checks the page), and
# the tools the host kinds drive (passwd's shadow tools, mount, e2fsprogs'
# mkfs.ext4 for a loop-mounted image, hostname; all in namespaces of the
# tests' own), and Patroni with PostgreSQL 15 (a gateway client of the store).
set -euo pipefail
cd "$(dirname "$0")"

need=()
for pkg in etcd-client etcd-server dbus dbus-bin procps packagekit packagekit-tools polkitd systemd util-linux jq man-db prometheus passwd mount e2fsprogs hostname patroni postgresql-15; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: missing packages ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# PackageKit resolves packages from apt's lists: a fresh machine may have none.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  [ "$(id -u)" -eq 0 ] && apt-get update -qq
fi
# Each mgmt process under test holds one inotify instance.
if [ "$(id -u)" -eq 0 ] && [ "$(sysctl -n fs.inotify.max_user_instances)" -lt 1024 ]; then
  sysctl -q -w fs.inotify.max_user_instances=1024 || true
fi
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

# The Debian package the package test installs (and purges): cargo-deb alone
# (a release build; build.rs writes the man page and completions).
cargo deb -p mgmt --locked -o target/debian/mgmt.deb >/dev/null
export MGMT_DEB="$PWD/target/debian/mgmt.deb"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --exclude sim --locked --no-fail-fast
# The simulator, optimised (profile `sim`, built in target/sim/) and bit-exact:
# under --cfg tokio_unstable turmoil seeds each host's tokio RNG. The flag only
# reaches this build, never the binaries tested above. SIM_SEEDS proptest
# schedules (README "Simulator").
RUSTFLAGS="${RUSTFLAGS:-} --cfg tokio_unstable" SIM_SEEDS="${SIM_SEEDS:-200}" \
  cargo nextest run --cargo-profile sim -p sim --locked --no-fail-fast
