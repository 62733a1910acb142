#!/usr/bin/env bash
# Fails (status 1) when the EL2 kernel's build for its target depends on a crate the trusted base
# must not contain: serde or postcard (the kernel sends and decodes fixed layouts only: fault
# messages, guest calls, invocations; docs/ipc.md). Prints the offending crates and the path by
# which each is reached.
#
#   scripts/check-kernel-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden=(serde postcard)
tree=$(cargo tree --locked -q -p capvisor-kernel --target aarch64-unknown-none-softfloat \
  -e normal --prefix none --no-dedupe)
status=0
for crate in "${forbidden[@]}"; do
  if grep -qE "^${crate} v" <<<"$tree"; then
    echo "check-kernel-deps: the kernel depends on ${crate}:" >&2
    cargo tree --locked -q -p capvisor-kernel --target aarch64-unknown-none-softfloat -e normal \
      -i "$crate" >&2 || true
    status=1
  fi
done
if [ "$status" -eq 0 ]; then
  echo "check-kernel-deps: no ${forbidden[*]} in the kernel's dependencies"
fi
exit "$status"
