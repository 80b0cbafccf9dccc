#!/usr/bin/env bash
# Build the utility VM image: build/guest/vmlinuz (and vmlinux, the same kernel uncompressed for PVH boot) +
# build/guest/initrd.img + build/guest/rootfs.erofs.
#
# rootfs.erofs (read-only, on virtio-blk, as Kata's and hcsshim's rootfs images): Debian's kernel modules the
# UVM needs (hack/guest/fetch-kernel.sh), busybox-static, the host's node (stripped), runc and crun with their shared
# libraries (ldd), the guest agent (dist/ + the node_modules it imports) and hack/guest/uvm-init.sh as /init.
# The guest's page cache then holds only the parts that run (node is 83 MB) instead of a whole initrd held in
# guest RAM twice (the cpio and the unpacked tmpfs copy).
# initrd.img: the early stage only (busybox, the modules, /init = the same uvm-init.sh): loads the modules,
# mounts the erofs under a tmpfs overlay (runc's pivot_root cannot leave an initramfs) and switches to it.
# Rebuilds only when an input changes; prints the sizes.
#
# Usage: hack/guest/build-image.sh [-o OUT] [-z none|gzip|zstd]
#   -o OUT   output directory (default build/guest)
#   -z C     initrd compression (default none: under TCG the kernel's decompressor costs more than it saves)
#   -f       also initrd-full.img: the whole root tree as one initramfs, for Hyper-V (HCS attaches no virtio-blk
#            disk; uvm-init.sh copies it into a tmpfs). `make windows` builds it. Env LCOW_FULL_INITRD=1.
# Needs `make build` first (dist/). Prints OUT on stdout.
# LCOW_AGENT_BUNDLE=1 (default when node_modules/.bin/esbuild exists): the agent is one ESM file bundled by
# esbuild (shim/lcow-agent.js), node_modules beside it for what loads at run time (koffi...): under TCG,
# Node resolving and compiling ~100 modules is most of the agent's start-up. 0: dist/ files as they are.
# (A Node startup snapshot of the agent does not load in the guest: V8's cache tag hashes the CPU features it
# detected, and TCG's differ from the build host's, even with the optional ones pinned off by flags.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/build/guest"
COMPRESS=${LCOW_INITRD_COMPRESS:-none}
FULL=${LCOW_FULL_INITRD:-0}
while getopts "o:z:fh" opt; do
  case $opt in
    o) OUT=$OPTARG ;;
    f) FULL=1 ;;
    z) COMPRESS=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) exit 2 ;;
  esac
done
MODULES="virtio_pci virtio_blk crc32c_generic erofs virtio_net 9p 9pnet 9pnet_fd overlay qemu_fw_cfg vsock vmw_vsock_virtio_transport vsock_loopback hv_sock hv_utils hv_storvsc sd_mod ext4 virtio_balloon"
BUSYBOX=${BUSYBOX:-/bin/busybox}
NODE=${NODE:-$(command -v node)}
RUNC=${RUNC:-$(command -v runc)}
# crun: the other OCI runtime the agent can use (runtime config `guest_runtime`, docs/operations.md). A C binary:
# under TCG it creates a container in a fraction of runc's time (runc starts two or three Go runtimes per create).
CRUN=${CRUN:-$(command -v crun || true)}
# iproute2's ip: the agent makes the pod's network namespace (`ip netns add`) and moves the hot-added pod NIC into
# it (`ip link set ... netns`), which busybox's ip cannot do.
IPROUTE=${IPROUTE:-/usr/sbin/ip}

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
for tool in cpio sha256sum strip ldd mkfs.erofs; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done
[ -x "$BUSYBOX" ] || die "no $BUSYBOX (apt-get install busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is dynamically linked (apt-get install busybox-static)"; fi
[ -x "$NODE" ] || die "no node"
[ -x "$RUNC" ] || die "no runc (apt-get install runc)"
[ -n "$CRUN" ] && [ -x "$CRUN" ] || die "no crun (apt-get install crun)"
[ -x "$IPROUTE" ] && ldd "$IPROUTE" >/dev/null 2>&1 || die "no iproute2 ip at $IPROUTE (apt-get install iproute2)"
[ -f "$ROOT/dist/shim/lcow-agent.js" ] || die "no dist/shim/lcow-agent.js: run make build first"

KERNEL=$("$ROOT/hack/guest/fetch-kernel.sh" -o "$OUT/uvm-kernel" $MODULES)

# The agent: lcow-agent.js and all of dist/src (1-2 MB; a fixed list broke whenever the agent gained an
# import), plus the package's runtime dependencies and koffi's linux-x64 native module. Bundled: one file
# instead of dist/ (esbuild leaves createRequire()'d modules such as koffi out: they load from node_modules).
ESBUILD="$ROOT/node_modules/.bin/esbuild"
BUNDLE=${LCOW_AGENT_BUNDLE:-$([ -x "$ESBUILD" ] && echo 1 || echo 0)}
[ "$BUNDLE" != 1 ] || [ -x "$ESBUILD" ] || die "LCOW_AGENT_BUNDLE=1 needs esbuild (npm install)"
# Shipped in both modes: code loaded through createRequire or import() at run time (koffi, the optional
# OpenTelemetry SDK) is outside the bundle, and unused modules cost initrd bytes, not start-up time. Not the
# exporters and the metrics SDK: the agent never exports (its spans go to the shim over the control channel).
HOST_ONLY="@opentelemetry/exporter-trace-otlp-http @opentelemetry/exporter-metrics-otlp-http @opentelemetry/sdk-metrics"
NODE_MODULES="$(node -e 'const skip = process.argv[2].split(" "); console.log(Object.keys(require(process.argv[1]).dependencies).filter((d) => !skip.includes(d)).join(" "))' "$ROOT/package.json" "$HOST_ONLY") @koromix/koffi-linux-x64"
agent_files() {
  (cd "$ROOT/dist" && find shim/lcow-agent.js src -type f -name '*.js' | sort)
}
STAMP=$( {
  cat "$KERNEL/.stamp"
  sha256sum "$ROOT/hack/guest/uvm-init.sh" "${BASH_SOURCE[0]}" "$ROOT/hack/guest/extract-vmlinux.sh" | cut -d' ' -f1
  (cd "$ROOT/dist" && agent_files | xargs sha256sum)
  for m in $NODE_MODULES; do cat "$ROOT/node_modules/$m/package.json"; done | sha256sum
  stat -c '%n %s %Y' "$BUSYBOX" "$(readlink -f "$NODE")" "$(readlink -f "$RUNC")" "$(readlink -f "$CRUN")" "$(readlink -f "$IPROUTE")"
  mkfs.erofs --version 2>&1 | head -n1
  echo "$COMPRESS bundle=$BUNDLE"
  if [ "$BUNDLE" = 1 ]; then "$ESBUILD" --version; fi
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.image-stamp" ] && [ "$(cat "$OUT/.image-stamp")" = "$STAMP" ] && [ -s "$OUT/initrd.img" ] && [ -s "$OUT/rootfs.erofs" ] &&
  { [ "$FULL" != 1 ] || [ "$(cat "$OUT/.full-stamp" 2>/dev/null)" = "$STAMP" ]; }; then
  log "up to date: $(du -h "$OUT/initrd.img" | cut -f1) initrd, $(du -h "$OUT/rootfs.erofs" | cut -f1) rootfs, kernel $(cat "$KERNEL/version")"
  echo "$OUT"
  exit 0
fi

log "building in $OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R="$WORK/root"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib/modules,etc,proc,sys,dev,run,tmp,opt/lcow,root,var}
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"

cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$R/bin/$applet"
done

# node (stripped: the Debian binary carries debug info), runc and crun, with their libraries.
strip -o "$R/usr/bin/node" "$(readlink -f "$NODE")"
cp "$(readlink -f "$RUNC")" "$R/usr/sbin/runc"
cp "$(readlink -f "$CRUN")" "$R/usr/sbin/crun"
cp "$(readlink -f "$IPROUTE")" "$R/usr/sbin/ip"
for bin in "$R/usr/bin/node" "$R/usr/sbin/runc" "$R/usr/sbin/crun" "$R/usr/sbin/ip"; do
  ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\/lib/{print $1}' | while read -r lib; do
    dst="$R$lib"
    [ -e "$dst" ] && continue
    mkdir -p "$(dirname "$dst")"
    cp -L "$lib" "$dst"
  done
done

# Kernel modules.
cp "$KERNEL"/modules/*.ko "$R/lib/modules/"
cp "$KERNEL/modules.load" "$R/lib/modules/modules.load"

# The agent.
A="$R/opt/lcow"
printf '{"type":"module","private":true}\n' >"$A/package.json"
if [ "$BUNDLE" = 1 ]; then
  mkdir -p "$A/shim"
  # CommonJS dependencies inside an ESM bundle need a real `require`.
  "$ESBUILD" "$ROOT/dist/shim/lcow-agent.js" --bundle --platform=node --format=esm --target=node20 \
    --external:koffi --log-level=warning --outfile="$A/shim/lcow-agent.js" \
    --banner:js="import { createRequire as __lcowCreateRequire } from 'node:module'; const require = __lcowCreateRequire(import.meta.url);"
else
  (cd "$ROOT/dist" && agent_files) | while read -r f; do
    mkdir -p "$A/$(dirname "$f")"
    cp "$ROOT/dist/$f" "$A/$f"
  done
fi
for m in $NODE_MODULES; do
  mkdir -p "$A/node_modules/$m"
  (cd "$ROOT/node_modules/$m" && find . -type f \( -name '*.js' -o -name '*.mjs' -o -name '*.cjs' -o -name '*.json' -o -name '*.node' \) \
    -not -path './vendor/*' -not -path './doc/*' -not -path '*/musl_*/*' -not -path '*/commonjs/*' |
    while read -r f; do mkdir -p "$A/node_modules/$m/$(dirname "$f")" && cp "$f" "$A/node_modules/$m/$f"; done)
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$R/etc/group"
: >"$R/etc/resolv.conf"
cp "$ROOT/hack/guest/uvm-init.sh" "$R/init"
chmod 0755 "$R/init"

# The root filesystem: uncompressed erofs (under TCG, decompressing costs more than reading), fixed
# timestamps and uuid so that the same inputs give the same image.
mkfs.erofs --quiet --all-root -T0 -U 00000000-0000-0000-0000-00000000000a "$WORK/rootfs.erofs" "$R"

# The early stage: busybox, the modules, /init.
E="$WORK/early"
mkdir -p "$E"/{bin,dev,proc,sys,lib/modules,newroot,lower,upper}
cp "$BUSYBOX" "$E/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$E/bin/$applet"
done
cp "$KERNEL"/modules/*.ko "$E/lib/modules/"
cp "$KERNEL/modules.load" "$E/lib/modules/modules.load"
cp "$ROOT/hack/guest/uvm-init.sh" "$E/init"
chmod 0755 "$E/init"
(cd "$E" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) >"$WORK/initrd.cpio"
case "$COMPRESS" in
  none) mv "$WORK/initrd.cpio" "$OUT/initrd.img.new" ;;
  gzip) gzip -6 -c "$WORK/initrd.cpio" >"$OUT/initrd.img.new" ;;
  zstd) zstd -q -19 -T0 -c "$WORK/initrd.cpio" >"$OUT/initrd.img.new" ;;
  *) die "unknown compression $COMPRESS" ;;
esac
mv "$WORK/rootfs.erofs" "$OUT/rootfs.erofs.new"
# The full initramfs is kept only while it matches the image (.full-stamp); a rebuild without -f drops it.
rm -f "$OUT/initrd-full.img" "$OUT/.full-stamp"
if [ "$FULL" = 1 ]; then
  (cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) >"$OUT/initrd-full.img"
  echo "$STAMP" >"$OUT/.full-stamp"
  log "initrd-full.img $(du -h "$OUT/initrd-full.img" | cut -f1) (Hyper-V)"
fi
mv "$OUT/initrd.img.new" "$OUT/initrd.img"
mv "$OUT/rootfs.erofs.new" "$OUT/rootfs.erofs"
cp "$KERNEL/vmlinuz" "$OUT/vmlinuz"
# The uncompressed kernel for PVH direct boot (the QEMU backend boots it when it is there: no decompressor).
if "$ROOT/hack/guest/extract-vmlinux.sh" "$OUT/vmlinuz" "$OUT/vmlinux.new"; then
  mv "$OUT/vmlinux.new" "$OUT/vmlinux"
else
  rm -f "$OUT/vmlinux" "$OUT/vmlinux.new"
fi
cp "$KERNEL/version" "$OUT/kernel-version"
echo "$STAMP" >"$OUT/.image-stamp"
log "initrd $(du -h "$OUT/initrd.img" | cut -f1) ($COMPRESS), rootfs.erofs $(du -h "$OUT/rootfs.erofs" | cut -f1) (tree $(du -sh "$R" | cut -f1)), kernel $(cat "$KERNEL/version") $(du -h "$OUT/vmlinuz" | cut -f1)"
echo "$OUT"
