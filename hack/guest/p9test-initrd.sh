#!/usr/bin/env bash
# Build the 9P kernel test guest: Debian's kernel + the 9P and virtio-net modules, busybox-static, the POSIX
# battery (test/p9-battery) and connect-fd, with hack/guest/p9test-init.sh as /init.
#
# Output ($OUT, default build/guest/p9test):
#   vmlinuz, initrd.img (uncompressed newc cpio), bin/p9battery, bin/connect-fd, .stamp
# Rebuilds only when an input changes. Prints $OUT on stdout.
# Usage: hack/guest/p9test-initrd.sh [-o OUT]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/build/guest/p9test"
while getopts "o:h" opt; do
  case $opt in
    o) OUT=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) exit 2 ;;
  esac
done
MODULES="9p 9pnet 9pnet_fd virtio_net virtio_pci"
BUSYBOX=${BUSYBOX:-/bin/busybox}

log() { printf 'p9test-initrd: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
for tool in gcc cpio sha256sum; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
[ -x "$BUSYBOX" ] || die "no $BUSYBOX (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is dynamically linked (apt-get install busybox-static)"; fi

mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9
KERNEL=$("$ROOT/hack/guest/fetch-kernel.sh" -o "$OUT/kernel" $MODULES)

SOURCES=("$ROOT"/test/p9-battery/*.c "$ROOT"/test/p9-battery/*.h "$ROOT/hack/guest/connect-fd.c"
  "$ROOT/hack/guest/p9test-init.sh" "$ROOT/hack/guest/extract-vmlinux.sh" "${BASH_SOURCE[0]}")
STAMP=$( {
  cat "$KERNEL/.stamp"
  sha256sum "${SOURCES[@]}" | cut -d' ' -f1
  sha256sum <"$BUSYBOX"
  gcc --version | head -n1
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$STAMP" ] && [ -s "$OUT/initrd.img" ]; then
  echo "$OUT"
  exit 0
fi

log "building in $OUT"
mkdir -p "$OUT/bin"
gcc -static -O2 -Wall -Wextra -Werror -o "$OUT/bin/p9battery" "$ROOT"/test/p9-battery/*.c
gcc -static -O2 -Wall -Wextra -Werror -o "$OUT/bin/connect-fd" "$ROOT/hack/guest/connect-fd.c"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/p9test-initrd.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/{bin,lib/modules,proc,sys,dev,tmp,mnt}
cp "$BUSYBOX" "$WORK/bin/busybox"
cp "$OUT/bin/p9battery" "$OUT/bin/connect-fd" "$WORK/bin/"
cp "$KERNEL"/modules/*.ko "$WORK/lib/modules/"
cp "$KERNEL/modules.load" "$WORK/lib/modules.load"
install -m 0755 "$ROOT/hack/guest/p9test-init.sh" "$WORK/init"
(cd "$WORK" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$OUT/initrd.img.new"
mv "$OUT/initrd.img.new" "$OUT/initrd.img"
cp "$KERNEL/vmlinuz" "$OUT/vmlinuz"
# Uncompressed for PVH boot (no decompressor under TCG), as the UVM image (extract-vmlinux.sh).
if "$ROOT/hack/guest/extract-vmlinux.sh" "$OUT/vmlinuz" "$OUT/vmlinux.new"; then
  mv "$OUT/vmlinux.new" "$OUT/vmlinux"
else
  rm -f "$OUT/vmlinux" "$OUT/vmlinux.new"
fi
echo "$STAMP" >"$OUT/.stamp"
log "initrd $(du -h "$OUT/initrd.img" | cut -f1), kernel $(cat "$KERNEL/version")"
echo "$OUT"
