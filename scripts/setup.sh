#!/usr/bin/env bash
# Installs what building and booting capvisor needs, on a Debian bookworm machine, and says what
# it could not install. Safe to run again: it only installs what is missing.
#
#   - a compiler that can rebuild `core` for aarch64-unknown-none-softfloat: rustup's own with its
#     rust-src component (tried with a time limit: rustup downloads have been seen to hang), else
#     Debian's rustc-web + rust-web-src;
#   - QEMU 10 (qemu-system-aarch64) from bookworm-backports: bookworm's own 7.2 lacks CPU models
#     with FWB+DIC and FEAT_NV2;
#   - U-Boot for QEMU's virt board (Debian's u-boot-qemu), for the `booti` boot path;
#   - cargo-nextest is used when present (`./test.sh` falls back to `cargo test`);
#   - only with CAPVISOR_LINUX_GUEST=1: a real arm64 Linux guest (Debian's kernel and a busybox
#     initramfs) in target/linux-guest, made by scripts/linux-guest.sh (docs/linux-guest.md).
set -uo pipefail

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 && SUDO="sudo" || say "not root and no sudo: apt installs will fail"
fi
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then
    timeout 300 $SUDO apt-get update -qq || say "apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive timeout 900 $SUDO apt-get install -y -qq "$@"
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs) first"
command -v rustc >/dev/null 2>&1 || die "rustc not found: install Rust with rustup first"
sysroot=$(rustc --print sysroot) || die "rustc --print sysroot failed"

# 1. The linker: rust-lld ships with rustup's host toolchain.
lld="$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
[ -x "$lld" ] || die "rust-lld missing at $lld (it ships with rustup's toolchain)"

# 2. Library source to rebuild core for the bare-metal target.
if [ -f "$sysroot/lib/rustlib/src/rust/library/core/Cargo.toml" ]; then
  :
elif command -v rustup >/dev/null 2>&1 && timeout 90 rustup component add rust-src >/dev/null 2>&1 \
    && [ -f "$sysroot/lib/rustlib/src/rust/library/core/Cargo.toml" ]; then
  say "installed rustup's rust-src component"
elif [ -x /usr/bin/rustc ] && [ -f /usr/lib/rustlib/src/rust/library/core/Cargo.toml ]; then
  :
else
  say "rustup could not add rust-src (in 90 s); using Debian's rustc-web and rust-web-src instead"
  apt_install rustc-web rust-web-src \
    || die "could not install rustc-web and rust-web-src: no compiler can build the aarch64 kernel"
  [ -f /usr/lib/rustlib/src/rust/library/core/Cargo.toml ] \
    || die "rust-web-src installed but /usr/lib/rustlib/src/rust/library/core is missing"
fi

# 3. QEMU 10.
qemu_major() { qemu-system-aarch64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1; }
major=$(qemu_major)
if [ -z "$major" ] || [ "$major" -lt 10 ]; then
  say "installing QEMU 10 from bookworm-backports (found: ${major:-none})"
  if [ ! -f /etc/apt/sources.list.d/backports.list ]; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
      | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
    APT_UPDATED=0
  fi
  apt_install -t bookworm-backports qemu-system-arm \
    || die "could not install qemu-system-arm from bookworm-backports"
  major=$(qemu_major)
  [ -n "$major" ] && [ "$major" -ge 10 ] || die "qemu-system-aarch64 is still older than 10 (${major:-none})"
fi
# 4. U-Boot for QEMU's virt board, for the hardware-like `booti` boot path (tests and --uboot).
if [ ! -f /usr/lib/u-boot/qemu_arm64/u-boot.bin ]; then
  say "installing Debian's u-boot-qemu (U-Boot for QEMU's virt board)"
  apt_install u-boot-qemu || die "could not install u-boot-qemu"
fi
# 5. Opt-in: a real arm64 Linux guest, from Debian packages through a private APT configuration.
if [ "${CAPVISOR_LINUX_GUEST:-0}" = 1 ]; then
  "$(dirname "$0")/linux-guest.sh" || die "could not make the Linux guest (scripts/linux-guest.sh)"
fi
exit 0
