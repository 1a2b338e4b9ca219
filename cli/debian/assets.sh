#!/usr/bin/env bash
# Writes what the package ships beside the binary and cannot be checked in:
# the man page and completions, printed by the release binary itself, into
# target/deb-assets/. Then: cargo deb -p mgmt --no-build.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/mgmt
out=target/deb-assets
mkdir -p "$out"
"$bin" man | gzip -9n >"$out/mgmt.1.gz"
"$bin" completions bash >"$out/mgmt"
"$bin" completions zsh >"$out/_mgmt"
"$bin" completions fish >"$out/mgmt.fish"
