#!/usr/bin/env bash
# Counts the EL2 kernel's code lines: every `.rs` file under kernel/src, without blank lines,
# comments (`//`, `///`, `//!`, `/* */`), items under `#[cfg(test)]` (or `cfg(any(test, ...))`)
# and test-only files (a module declared `#[cfg(test)] mod name;`, `tests.rs`).
# Items and modules under `#[cfg(feature = "...")]` or `cfg(any(test, feature = "..."))` are left
# out too: `capvisor build` builds the kernel binary with no features, so every capvisor-kernel
# feature (`invariants`, `fake`: kernel/Cargo.toml) is debug-only code for tests and fuzzing.
#
#   scripts/kernel-lines.sh            # the total, and the goal
#   scripts/kernel-lines.sh --files    # per file, largest first
#   scripts/kernel-lines.sh --max N    # also fails (status 1) above N lines
set -euo pipefail
cd "$(dirname "$0")/.."

files=0 max="" per_file=0
while [ $# -gt 0 ]; do
  case "$1" in
    --files) per_file=1 ;;
    --max) max="$2"; shift ;;
    *) echo "usage: $0 [--files] [--max N]" >&2; exit 2 ;;
  esac
  shift
done

# Test-only modules declared in a parent file: `#[cfg(test)]` then `mod name;`.
test_only=$(awk '
  FNR == 1 { cfg = 0; dir = FILENAME; sub(/[^\/]*$/, "", dir);
             base = FILENAME; sub(/^.*\//, "", base); sub(/\.rs$/, "", base);
             if (base != "mod" && base != "lib" && base != "main") dir = dir base "/" }
  /^[[:space:]]*#\[cfg\((test|any\(test|all\(test|feature *=|any\(feature *=)/ { cfg = 1; next }
  cfg && /^[[:space:]]*(pub(\([a-z]+\))? )?mod [a-z_0-9]+;/ {
    name = $0; sub(/^.*mod /, "", name); sub(/;.*$/, "", name);
    print dir name ".rs"; print dir name "/mod.rs"; cfg = 0; next }
  /^[[:space:]]*#\[/ { next }
  { cfg = 0 }
' $(find kernel/src -name '*.rs'))

count() {
  awk "$(cat scripts/lib/rust-code.awk)"'
    BEGIN { in_block = 0; skipping = 0; depth = 0; pending = 0; n = 0 }
    {
      line = code($0)
      if (line ~ /^[[:space:]]*$/) next
      # Items under #[cfg(test)]: skipped until their braces close (or a `;` at depth 0).
      if (!skipping && line ~ /^[[:space:]]*#\[cfg\((test|any\(test|all\(test|feature *=|any\(feature *=)/) { pending = 1; next }
      if (pending && line ~ /^[[:space:]]*#\[/) next
      if (pending) { pending = 0; skipping = 1; depth = 0; opened = 0 }
      if (skipping) {
        o = gsub(/\{/, "{", line); c = gsub(/\}/, "}", line)
        depth += o - c; if (o) opened = 1
        if ((opened && depth <= 0) || (!opened && line ~ /;[[:space:]]*$/)) skipping = 0
        next
      }
      n++
    }
    END { print n }
  ' "$1"
}

total=0
report=""
for file in $(find kernel/src -name '*.rs' | sort); do
  case "$file" in */tests.rs|*/tests/*) continue ;; esac
  if printf '%s\n' "$test_only" | grep -qx "$file"; then continue; fi
  lines=$(count "$file")
  total=$((total + lines))
  report+="$lines $file"$'\n'
done

if [ "$per_file" = 1 ]; then
  printf '%s' "$report" | sort -rn
fi
echo "kernel code lines: $total (goal 5000${max:+; at most $max})"
if [ -n "$max" ] && [ "$total" -gt "$max" ]; then
  echo "kernel-lines: $total code lines exceed the limit of $max" >&2
  exit 1
fi
