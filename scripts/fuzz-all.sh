#!/usr/bin/env bash
# Runs every cargo-fuzz target of the project for a bounded time each (FUZZ_SECONDS, default 8),
# failing on the first crash. Longer runs: scripts/fuzz.sh <crate-dir> <target> <seconds>.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-8}
# One target directory for every fuzz crate: libFuzzer's C++ and the shared dependencies are
# built once with the instrumentation flags, not once per crate.
export CARGO_TARGET_DIR="$PWD/target/fuzz"
found=0
for dir in $(find . -path ./target -prune -o -type d -name fuzz -print | sort); do
  [ -f "$dir/Cargo.toml" ] || continue
  for target in $(ls "$dir/fuzz_targets" 2>/dev/null | sed -n 's/\.rs$//p'); do
    found=$((found + 1))
    echo "fuzz: $dir $target (${seconds}s)"
    scripts/fuzz.sh "$dir" "$target" "$seconds"
  done
done
echo "fuzz: $found target(s) ran without a crash"
