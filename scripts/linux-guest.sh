#!/usr/bin/env bash
# Makes a real arm64 Linux guest for capvisor out of Debian bookworm's packages:
#
#   OUTDIR/Image           Debian's arm64 kernel (linux-image-6.1.0-N-arm64), a raw arm64 Image
#   OUTDIR/initramfs.cpio  a newc cpio with busybox-static whose /init mounts proc, sys and devtmpfs,
#                          prints "capvisor-linux: userspace up" and `uname -a`, then runs a shell on
#                          the console with the prompt "/ # "
#
#   scripts/linux-guest.sh [--refresh] [OUTDIR]      (OUTDIR defaults to target/linux-guest)
#
# The packages come through a private APT configuration under OUTDIR/apt (architecture arm64, its own
# state and cache directories, an empty dpkg status file), so the host's dpkg and APT state are never
# touched and no root is needed; they are unpacked with `dpkg -x` under OUTDIR, never installed.
# Re-running is quick: downloaded packages are kept and only missing outputs are made again.
# --refresh runs `apt-get update` again and picks up a newer kernel if Debian has one.
#
# Check it on bare QEMU (no capvisor):
#   qemu-system-aarch64 -M virt -cpu max -m 512M -nographic -kernel OUTDIR/Image \
#     -initrd OUTDIR/initramfs.cpio -append "console=ttyAMA0 rdinit=/init"
# See docs/linux-guest.md.
set -euo pipefail

say() { printf 'linux-guest: %s\n' "$*"; }
die() { printf 'linux-guest: error: %s\n' "$*" >&2; exit 1; }

REFRESH=0
OUTDIR=""
for arg in "$@"; do
  case "$arg" in
    --refresh) REFRESH=1 ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) die "unknown option $arg (usage: $0 [--refresh] [OUTDIR])" ;;
    *) [ -z "$OUTDIR" ] || die "only one OUTDIR, please (usage: $0 [--refresh] [OUTDIR])"; OUTDIR=$arg ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=${OUTDIR:-$ROOT/target/linux-guest}
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)

for tool in apt-get apt-cache dpkg dpkg-deb python3 timeout; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (this script expects a Debian host)"
done
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$KEYRING" ] || die "$KEYRING missing: install the debian-archive-keyring package"

APTDIR=$OUTDIR/apt
DEBDIR=$OUTDIR/debs
KERNEL_ROOT=$OUTDIR/kernel-root
BUSYBOX_ROOT=$OUTDIR/busybox-root
# CAPVISOR_DEBIAN_MIRROR / CAPVISOR_DEBIAN_SECURITY_MIRROR point at another Debian mirror.
MIRROR=${CAPVISOR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${CAPVISOR_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

# --- 1. The private APT configuration -------------------------------------------------------------
mkdir -p "$APTDIR/etc/apt.conf.d" "$APTDIR/etc/sources.list.d" "$APTDIR/etc/preferences.d" "$APTDIR/etc/trusted.gpg.d" \
  "$APTDIR/state/lists/partial" "$APTDIR/cache/archives/partial" "$DEBDIR"
[ -f "$APTDIR/state/status" ] || : >"$APTDIR/state/status"
: >"$APTDIR/etc/sources.list"
: >"$APTDIR/etc/apt.conf"
cat >"$APTDIR/etc/sources.list.d/debian-arm64.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Architectures: arm64
Targets: Packages
Signed-By: $KEYRING

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main
Architectures: arm64
Targets: Packages
Signed-By: $KEYRING
EOF
{
  cat <<EOF
// Private APT configuration written by capvisor's scripts/linux-guest.sh: arm64 only, its own state
// and cache, an empty dpkg status file. Nothing here reads or writes the host's dpkg database.
APT::Architecture "arm64";
#clear APT::Architectures;
APT::Architectures { "arm64"; };
APT::Get::List-Cleanup "true";
Dir::State "$APTDIR/state";
Dir::State::Lists "$APTDIR/state/lists";
Dir::State::status "$APTDIR/state/status";
Dir::State::extended_states "$APTDIR/state/extended_states";
Dir::Cache "$APTDIR/cache";
Dir::Cache::archives "$APTDIR/cache/archives";
Dir::Cache::pkgcache "$APTDIR/cache/pkgcache.bin";
Dir::Cache::srcpkgcache "$APTDIR/cache/srcpkgcache.bin";
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/etc/sources.list.d";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
Dir::Etc::Trusted "$APTDIR/etc/trusted.gpg";
Dir::Etc::TrustedParts "$APTDIR/etc/trusted.gpg.d";
// APT reads this file before Dir::Etc::Parts and Dir::Etc::main, so these keep the host's
// /etc/apt/apt.conf.d out entirely: its hooks (cache cleaners, appstream, packagekit) would otherwise
// run as part of this private apt-get update. Proxies still come from http_proxy in the environment.
Dir::Etc::Parts "$APTDIR/etc/apt.conf.d";
Dir::Etc::main "$APTDIR/etc/apt.conf";
Acquire::Languages "none";
Acquire::Retries "2";
Acquire::http::Timeout "30";
Acquire::https::Timeout "30";
EOF
  # As root, APT downloads as the _apt user, who may not be able to enter OUTDIR; stay root instead.
  if [ "$(id -u)" = 0 ]; then echo 'APT::Sandbox::User "root";'; fi
} >"$APTDIR/apt.conf"
export APT_CONFIG=$APTDIR/apt.conf
unset APT_CONFIG_DIR 2>/dev/null || true

# --- 2. Index and package downloads (skipped when the packages are already here) -------------------
kernel_deb() { ls -1 "$DEBDIR"/linux-image-6.1.0-*-arm64_*_arm64.deb 2>/dev/null | sort -V | tail -n1; }
busybox_deb() { ls -1 "$DEBDIR"/busybox-static_*_arm64.deb 2>/dev/null | sort -V | tail -n1; }

need_download=$REFRESH
[ -n "$(kernel_deb)" ] && [ -n "$(busybox_deb)" ] || need_download=1
if [ "$need_download" = 1 ]; then
  t0=$SECONDS
  say "apt-get update (arm64 bookworm, bookworm-updates, bookworm-security; private state in $APTDIR)"
  timeout 300 apt-get update -q=2 --error-on=any \
    || die "apt-get update failed or timed out (300 s): is the Debian mirror reachable?"
  say "index downloaded in $((SECONDS - t0)) s"

  # The newest linux-image-6.1.0-N-arm64 apt knows (not -rt-, -cloud-, -unsigned or -dbg).
  best="" best_ver=""
  while read -r name; do
    ver=$(apt-cache show --no-all-versions "$name" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
    [ -n "$ver" ] || continue
    if [ -z "$best_ver" ] || dpkg --compare-versions "$ver" gt "$best_ver"; then
      best=$name best_ver=$ver
    fi
  done < <(apt-cache pkgnames linux-image-6.1 | grep -E '^linux-image-6\.1\.0-[0-9]+-arm64$' | sort -V)
  [ -n "$best" ] || die "no linux-image-6.1.0-N-arm64 package in the arm64 bookworm indexes"
  bb_ver=$(apt-cache show --no-all-versions busybox-static 2>/dev/null | sed -n 's/^Version: //p' | head -n1)
  [ -n "$bb_ver" ] || die "no busybox-static package in the arm64 bookworm indexes"
  say "kernel package: $best $best_ver; busybox-static $bb_ver"

  # Only download what is not already in $DEBDIR (apt-get download writes to the current directory).
  want=()
  ls "$DEBDIR/${best}_${best_ver//:/%3a}_arm64.deb" >/dev/null 2>&1 || want+=("$best=$best_ver")
  ls "$DEBDIR/busybox-static_${bb_ver//:/%3a}_arm64.deb" >/dev/null 2>&1 || want+=("busybox-static=$bb_ver")
  if [ "${#want[@]}" -gt 0 ]; then
    t0=$SECONDS
    say "apt-get download ${want[*]}"
    (cd "$DEBDIR" && timeout 900 apt-get download -q=2 "${want[@]}") \
      || die "apt-get download ${want[*]} failed or timed out (900 s)"
    say "packages downloaded in $((SECONDS - t0)) s"
    # A newer kernel or busybox replaces the outputs made from an older one.
    rm -f "$OUTDIR/Image" "$OUTDIR/.kernel-deb"
  fi
fi
KDEB=$(kernel_deb)
BDEB=$(busybox_deb)
[ -n "$KDEB" ] || die "no kernel package in $DEBDIR after download"
[ -n "$BDEB" ] || die "no busybox-static package in $DEBDIR after download"

# --- 3. Unpack (dpkg -x, into OUTDIR only) --------------------------------------------------------
unpack() { # DEB DIR: unpack DEB into DIR unless DIR already holds exactly that package
  local deb=$1 dir=$2 stamp=$2/.unpacked-from
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(basename "$deb")" ]; then return 0; fi
  say "unpacking $(basename "$deb") into $dir"
  rm -rf "$dir" && mkdir -p "$dir"
  dpkg -x "$deb" "$dir" || die "dpkg -x $deb failed"
  basename "$deb" >"$stamp"
}
unpack "$KDEB" "$KERNEL_ROOT"
unpack "$BDEB" "$BUSYBOX_ROOT"

# --- 4. OUTDIR/Image ------------------------------------------------------------------------------
VMLINUZ=$(ls -1 "$KERNEL_ROOT"/boot/vmlinuz-* 2>/dev/null | head -n1)
[ -n "$VMLINUZ" ] || die "no /boot/vmlinuz-* in $(basename "$KDEB")"
if [ ! -f "$OUTDIR/Image" ] || [ "$(cat "$OUTDIR/.kernel-deb" 2>/dev/null)" != "$(basename "$KDEB")" ]; then
  say "making Image from $(basename "$VMLINUZ")"
  python3 - "$VMLINUZ" "$OUTDIR/Image.tmp" <<'EOF' || die "$VMLINUZ is not a usable arm64 Image (see above)"
import gzip, struct, sys
src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
how = "raw arm64 Image"
if data[:2] == b"\x1f\x8b":                     # a gzip-compressed Image (Image.gz)
    data, how = gzip.decompress(data), "gzip-compressed Image, decompressed"
elif data[4:8] == b"zimg":                      # EFI zboot: a PE wrapper around a compressed Image
    off, size = struct.unpack_from("<II", data, 8)
    comp = data[24:32].rstrip(b"\0").decode()
    if comp != "gzip":
        sys.exit(f"linux-guest: error: EFI zboot kernel compressed with {comp}; only gzip is handled")
    data, how = gzip.decompress(data[off:off + size]), "EFI zboot (gzip) Image, decompressed"
if len(data) < 64 or data[56:60] != b"ARM\x64":
    sys.exit(f'linux-guest: error: no arm64 Image magic "ARM\\x64" at offset 56 of {src}')
text_offset, image_size, flags = struct.unpack_from("<QQQ", data, 8)
open(dst, "wb").write(data)
print(f"linux-guest: {how}: {len(data)} bytes, text_offset {text_offset:#x}, "
      f"image_size {image_size:#x}, flags {flags:#x} (little-endian={flags & 1 == 0}, "
      f"page size code {(flags >> 1) & 3}, anywhere-in-RAM={(flags >> 3) & 1 == 1})")
EOF
  mv -f "$OUTDIR/Image.tmp" "$OUTDIR/Image"
  basename "$KDEB" >"$OUTDIR/.kernel-deb"
  # The kernel's release and config, for whoever boots it next (docs/linux-guest.md).
  cp -f "$KERNEL_ROOT"/boot/config-* "$OUTDIR/kernel.config" 2>/dev/null || true
fi

# --- 5. OUTDIR/initramfs.cpio ---------------------------------------------------------------------
BUSYBOX=$BUSYBOX_ROOT/bin/busybox
[ -x "$BUSYBOX" ] || die "no bin/busybox in $(basename "$BDEB")"
# Written every run (it takes well under a second) but deterministically: the file is only replaced
# when its bytes change, so its timestamp says when the guest last changed.
python3 - "$BUSYBOX" "$OUTDIR/initramfs.cpio" <<'PYEOF' || die "writing initramfs.cpio failed"
import os, sys

busybox, out = sys.argv[1], sys.argv[2]

INIT = r"""#!/bin/busybox sh
# capvisor's Linux guest /init (written by scripts/linux-guest.sh)
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=vt100
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# Keep later kernel messages off the console so they cannot split the lines below (see `dmesg`).
dmesg -n 1
echo "capvisor-linux: userspace up"
uname -a
case " $(cat /proc/cmdline) " in
  *" capvisor.poweroff "*) echo "capvisor-linux: powering off"; poweroff -f ;;
esac
cd /
export PS1='\w \$ '   # "/ # " in /; the line editor writes "~" for the passwd home, which is /root
# cttyhack opens the real console (ttyAMA0) as the controlling tty of a new session, so the shell
# has job control; when it exits, the machine powers off (PSCI SYSTEM_OFF).
setsid cttyhack sh
echo "capvisor-linux: shell exited, powering off"
poweroff -f
"""

entries = []  # (name, mode, data, rdev)
def d(name): entries.append((name, 0o040755, b"", (0, 0)))
for name in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root", "etc", "mnt"]:
    d(name)
entries.append(("dev/console", 0o020600, b"", (5, 1)))   # the kernel opens it before running /init
entries.append(("dev/null", 0o020666, b"", (1, 3)))
entries.append(("bin/busybox", 0o100755, open(busybox, "rb").read(), (0, 0)))
entries.append(("bin/sh", 0o120777, b"busybox", (0, 0)))
entries.append(("init", 0o100755, INIT.encode(), (0, 0)))
entries.append(("etc/passwd", 0o100644, b"root:x:0:0:root:/root:/bin/sh\n", (0, 0)))
entries.append(("etc/group", 0o100644, b"root:x:0:\n", (0, 0)))

def hdr(ino, name, mode, size, rdev, nlink):
    n = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(n), 0]
    h = b"070701" + b"".join(b"%08X" % f for f in fields) + n
    return h + b"\0" * (-len(h) % 4)

blob = bytearray()
for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
    blob += hdr(ino, name, mode, len(data), rdev, 2 if mode & 0o170000 == 0o040000 else 1)
    blob += data + b"\0" * (-len(data) % 4)
blob += hdr(0, "TRAILER!!!", 0, 0, (0, 0), 1)
blob += b"\0" * (-len(blob) % 512)

old = open(out, "rb").read() if os.path.exists(out) else None
if old != bytes(blob):
    tmp = out + ".tmp"
    open(tmp, "wb").write(blob)
    os.replace(tmp, out)
    print(f"linux-guest: wrote initramfs.cpio ({len(blob)} bytes, {len(entries)} entries)")
PYEOF

say "from $(dpkg-deb -f "$KDEB" Package) $(dpkg-deb -f "$KDEB" Version) and busybox-static $(dpkg-deb -f "$BDEB" Version)"
say "done: $OUTDIR/Image $OUTDIR/initramfs.cpio"
