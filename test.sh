#!/usr/bin/env bash
# Runs capvisor's whole test suite, installing what is missing first: formatting, lints, host
# unit and property tests, bounded fuzzing of every decoder of untrusted bytes, and the QEMU integration
# tests (every CPU model, one and two CPUs). Ends with the test runner's summary line.
set -euo pipefail
cd "$(dirname "$0")"
# With the real Linux guest (Debian's kernel and a busybox initramfs, scripts/linux-guest.sh).
CAPVISOR_LINUX_GUEST=1 scripts/setup.sh
export CARGO_TERM_COLOR=never

step() { printf '\n== %s (%ss elapsed)\n' "$*" "$SECONDS"; }

step "formatting (cargo fmt --check)"
cargo fmt --all -- --check

step "kernel: no assembly outside kernel/src/arch/ (scripts/check-arch-boundary.sh)"
scripts/check-arch-boundary.sh

step "kernel: no serde or postcard at EL2 (scripts/check-kernel-deps.sh)"
scripts/check-kernel-deps.sh

step "lints (cargo clippy, warnings are errors)"
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --locked --workspace --all-targets -- -D warnings
else
  echo "test.sh: cargo clippy is not installed (rustup component add clippy): lints NOT checked"
fi

step "kernel size (code lines at EL2: scripts/kernel-lines.sh)"
scripts/kernel-lines.sh

step "fuzzing decoders for a bounded time"
scripts/fuzz-all.sh

step "s2walk: one million random walks against the Arm ARM reference model (release build)"
S2WALK_PROPTEST_CASES=1000000 cargo test --locked --release -q -p s2walk --test proptest_reference

step "tests: host unit/property tests and QEMU boots"
if cargo nextest --version >/dev/null 2>&1; then
  cargo test --locked --workspace --doc
  cargo nextest run --locked --workspace --no-fail-fast
else
  echo "cargo-nextest not found; using cargo test"
  cargo test --locked --workspace --no-fail-fast
fi
