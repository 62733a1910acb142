#!/usr/bin/env bash
# Runs one cargo-fuzz target for a bounded time on stable Rust.
#
#   scripts/fuzz.sh <fuzz-crate-dir> <target> <seconds>
#
# <fuzz-crate-dir> is the cargo-fuzz crate (its own workspace), inside the crate it fuzzes, as
# `cargo fuzz init` lays it out (e.g. services/s2walk/fuzz); <target> is a [[bin]] of it.
# Installs cargo-fuzz if it is missing. cargo-fuzz needs nightly-only flags (sanitizers);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. Exits non-zero when the target
# crashes (libFuzzer leaves the reproducer under <fuzz-crate-dir>/artifacts/<target>/).
set -euo pipefail

if [ "$#" -ne 3 ]; then
    echo "usage: $0 <fuzz-crate-dir> <target> <seconds>" >&2
    exit 2
fi
dir=$1
target=$2
seconds=$3
case "$seconds" in
    ''|*[!0-9]*) echo "fuzz.sh: <seconds> must be a whole number, got '$seconds'" >&2; exit 2 ;;
esac
if [ ! -f "$dir/Cargo.toml" ]; then
    echo "fuzz.sh: no Cargo.toml in '$dir' (expected a cargo-fuzz crate)" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz is not installed; installing it (cargo install --locked cargo-fuzz)" >&2
    if ! cargo install --locked cargo-fuzz; then
        echo "fuzz.sh: could not install cargo-fuzz; install it by hand with" >&2
        echo "         cargo install --locked cargo-fuzz" >&2
        exit 3
    fi
fi

# An absolute CARGO_TARGET_DIR given by the caller is kept; otherwise the fuzz crate (its own
# workspace, built with sanitizer flags) builds in its own target/ directory.
case "${CARGO_TARGET_DIR:-}" in
    /*) ;;
    *) unset CARGO_TARGET_DIR ;;
esac
cd "$dir"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export RUSTC_BOOTSTRAP=1
mkdir -p "corpus/$target"
echo "fuzz.sh: fuzzing $dir:$target for ${seconds}s" >&2
# -max_total_time bounds the run; libFuzzer exits non-zero on a crash, a leak or a timeout of
# one input (-timeout, seconds), which set -e turns into this script's failure.
cargo fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
