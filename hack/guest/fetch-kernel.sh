#!/usr/bin/env bash
# Fetch Debian's guest kernel and a chosen set of modules (with their dependencies) for a QEMU guest.
#
# Reused by every guest image build (the 9P kernel test initrd, later the UVM image). Output layout:
#
#   $OUT/vmlinuz            the bzImage
#   $OUT/version            kernel release, e.g. 6.1.0-56-amd64
#   $OUT/modules/<name>.ko  uncompressed modules (names as lsmod shows them, '-' normalised to '_')
#   $OUT/modules.load       module names in load order (dependencies first), one per line
#   $OUT/.stamp             hash of the inputs; the step is skipped when it matches
#
# Usage: hack/guest/fetch-kernel.sh [-o OUT] [-c CACHE] [-p PACKAGE] [MODULE...]
#   MODULE     module names (e.g. 9p 9pnet_fd virtio_net); default: $GUEST_MODULES or the 9P test set
#   -o OUT     output directory (default build/guest/kernel)
#   -c CACHE   where .deb files are kept (default build/cache)
#   -p PACKAGE kernel package (default: what linux-image-amd64 depends on; env GUEST_KERNEL_PACKAGE)
# Prints the output directory on stdout when done.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/build/guest/kernel"
CACHE="$ROOT/build/cache"
PACKAGE="${GUEST_KERNEL_PACKAGE:-}"
DEFAULT_MODULES="9p 9pnet 9pnet_fd virtio_net virtio_pci e1000"

while getopts "o:c:p:h" opt; do
  case $opt in
    o) OUT=$OPTARG ;;
    c) CACHE=$OPTARG ;;
    p) PACKAGE=$OPTARG ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -gt 0 ]; then MODULES="$*"; else MODULES="${GUEST_MODULES:-$DEFAULT_MODULES}"; fi
MODULES=$(printf '%s\n' $MODULES | tr '-' '_' | sort -u | tr '\n' ' ')

log() { printf 'fetch-kernel: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in apt-get apt-cache dpkg-deb depmod tar sha256sum; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

# Concurrent builds (parallel test runs) serialise on a lock next to the output.
mkdir -p "$(dirname "$OUT")"
exec 8>"$OUT.lock"
flock 8

# Resolve the versioned kernel package from the meta package. apt's lists may be empty on a fresh machine.
resolve_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1
}
if [ -z "$PACKAGE" ]; then
  PACKAGE=$(resolve_package || true)
  if [ -z "$PACKAGE" ]; then
    log "apt lists have no linux-image-amd64; running apt-get update"
    apt-get update -q >&2 || true
    PACKAGE=$(resolve_package || true)
  fi
fi

# Find or download the .deb. Without a registry, fall back to the newest cached one.
DEB=""
if [ -n "$PACKAGE" ]; then
  VERSION=$(apt-cache policy "$PACKAGE" 2>/dev/null | sed -n 's/^ *Candidate: //p' | head -n1)
  if [ -n "$VERSION" ] && [ "$VERSION" != "(none)" ]; then
    DEB="$CACHE/${PACKAGE}_${VERSION//:/%3a}_amd64.deb"
    if [ ! -s "$DEB" ]; then
      log "downloading $PACKAGE $VERSION"
      # apt's _apt user may not be able to write here; the download then runs unsandboxed (harmless warning).
      (cd "$CACHE" && apt-get download -q "$PACKAGE=$VERSION" 2>&1 | grep -v 'unsandboxed' >&2) || true
      [ -s "$DEB" ] || DEB=""
    fi
  fi
fi
if [ -z "$DEB" ]; then
  DEB=$(ls -1t "$CACHE"/linux-image-*-amd64_*_amd64.deb 2>/dev/null | head -n1 || true)
  [ -n "$DEB" ] || die "no kernel package: apt cannot resolve or download linux-image-amd64 and $CACHE has none"
  log "using cached $(basename "$DEB")"
fi

STAMP=$( {
  basename "$DEB"
  stat -c %s "$DEB"
  echo "$MODULES"
  sha256sum <"${BASH_SOURCE[0]}"
} | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$STAMP" ] && [ -s "$OUT/vmlinuz" ]; then
  echo "$OUT"
  exit 0
fi

log "extracting $(basename "$DEB")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fetch-kernel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$WORK" --wildcards './boot/vmlinuz-*' './lib/modules/*'
KVER=$(ls "$WORK/lib/modules" | head -n1)
[ -n "$KVER" ] && [ -f "$WORK/boot/vmlinuz-$KVER" ] || die "unexpected package layout in $DEB"
# The .deb carries no modules.dep (depmod runs at install time): generate it.
depmod -b "$WORK" "$KVER"
MODDIR="$WORK/lib/modules/$KVER"

# name -> path relative to $MODDIR, and path -> its dependency paths.
declare -A PATH_OF DEPS_OF
while IFS= read -r line; do
  file=${line%%:*}
  deps=${line#*:}
  base=$(basename "$file")
  name=${base%%.ko*}
  PATH_OF[${name//-/_}]=$file
  DEPS_OF[$file]=$deps
done <"$MODDIR/modules.dep"

builtin_has() { grep -qE "/${1//_/[-_]}\.ko$" "$MODDIR/modules.builtin" 2>/dev/null; }

declare -A SEEN
ORDER=()
visit() { # depth-first, dependencies before dependents
  local file=$1 dep
  [ -n "${SEEN[$file]:-}" ] && return
  SEEN[$file]=1
  for dep in ${DEPS_OF[$file]}; do visit "$dep"; done
  ORDER+=("$file")
}
for m in $MODULES; do
  if [ -n "${PATH_OF[$m]:-}" ]; then
    visit "${PATH_OF[$m]}"
  elif builtin_has "$m"; then
    log "$m is built into $KVER; nothing to load"
  else
    die "module $m not found in $KVER"
  fi
done

rm -rf "$OUT.new"
mkdir -p "$OUT.new/modules"
cp "$WORK/boot/vmlinuz-$KVER" "$OUT.new/vmlinuz"
echo "$KVER" >"$OUT.new/version"
: >"$OUT.new/modules.load"
for file in "${ORDER[@]}"; do
  base=$(basename "$file")
  name=${base%%.ko*}
  name=${name//-/_}
  src="$MODDIR/$file"
  dst="$OUT.new/modules/$name.ko"
  case $file in
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *.ko) cp "$src" "$dst" ;;
    *) die "unknown module format: $file" ;;
  esac
  echo "$name" >>"$OUT.new/modules.load"
done
echo "$STAMP" >"$OUT.new/.stamp"
rm -rf "$OUT"
mv "$OUT.new" "$OUT"
log "kernel $KVER, modules: $(tr '\n' ' ' <"$OUT/modules.load")"
echo "$OUT"
