# Sourced by the benchmark wrappers: installs the tools named (apt packages)
# that are missing, builds the release binary and sets $mgmt to it.
# Usage: bench_setup PACKAGE...   (each "command:package", e.g. cf-agent:cfengine3)
bench_setup() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  cargo build --release -p mgmt -q
  local target
  target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  mgmt="$target/release/mgmt"
  echo "machine: $(nproc) cores, $(uname -r); $("$mgmt" --version); $(cf-agent --version | head -1)"
}
