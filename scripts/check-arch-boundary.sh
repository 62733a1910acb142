#!/usr/bin/env bash
# Fails (status 1) when the EL2 kernel has assembly or system-register access outside its arch
# module: an `asm!`, `global_asm!` or `naked_asm!`, a `core::arch` path, an `aarch64_cpu` path
# (typed system registers) or a `#[naked]` function in a `.rs` file under kernel/src that is not
# under kernel/src/arch/ (STYLE.md point 3: one arch module with a fixed interface;
# docs/architecture.md, "The arch module"). Comments are ignored. Prints each offending line as
# file:line: text.
#
#   scripts/check-arch-boundary.sh         # checks kernel/src
#   scripts/check-arch-boundary.sh DIR     # checks DIR, whose arch/ may hold them (the test's use:
#                                          # kernel/tests/arch_boundary.rs)
set -euo pipefail
cd "$(dirname "$0")/.."

root=${1:-kernel/src}
root=${root%/}
[ -d "$root" ] || { echo "check-arch-boundary: no directory $root" >&2; exit 2; }

found=$(find "$root" -name '*.rs' -not -path "$root/arch/*" | sort | while read -r file; do
  awk -v file="$file" "$(cat scripts/lib/rust-code.awk)"'
    BEGIN { in_block = 0 }
    {
      line = code($0)
      if (line ~ /(^|[^A-Za-z0-9_])(asm|global_asm|naked_asm)[[:space:]]*!/ ||
          line ~ /core[[:space:]]*::[[:space:]]*arch([^A-Za-z0-9_]|$)/ ||
          line ~ /(^|[^A-Za-z0-9_])aarch64_cpu([^A-Za-z0-9_]|$)/ ||
          line ~ /#\[[[:space:]]*(unsafe[[:space:]]*\([[:space:]]*)?naked/)
        printf "%s:%d: %s\n", file, FNR, $0
    }
  ' "$file"
done)

if [ -n "$found" ]; then
  printf '%s\n' "$found"
  echo "check-arch-boundary: assembly or system-register access outside $root/arch/ (above);" \
    "move it behind an arch function (kernel/src/arch/aarch64/)" >&2
  exit 1
fi
echo "check-arch-boundary: no assembly or system-register access outside $root/arch/"
