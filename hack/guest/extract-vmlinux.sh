#!/usr/bin/env bash
# Extract the uncompressed kernel (the vmlinux ELF) from a bzImage, for PVH direct boot.
#
# QEMU boots an ELF kernel carrying Xen's PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, type 18; Debian's amd64
# kernels have CONFIG_PVH=y) straight into 32-bit protected mode: no firmware real-mode setup and, above all, no
# decompressor. Under TCG the bzImage's XZ decompressor alone takes seconds of every cold boot and template build.
# (The decompressor is also what randomises the kernel's base address: a PVH-booted guest kernel runs without
# KASLR. The isolation boundary is the VM, as for Kata's uncompressed guest kernels.)
#
# Usage: hack/guest/extract-vmlinux.sh BZIMAGE OUT
# Writes OUT only when an embedded payload (xz, zstd or gzip) decompresses to an ELF with the PVH note; exits 1
# (OUT absent) otherwise, and the caller keeps booting the bzImage.
set -euo pipefail
IN=$1
OUT=$2
log() { printf 'extract-vmlinux: %s\n' "$*" >&2; }
command -v readelf >/dev/null || { log "no readelf (apt-get install binutils)"; exit 1; }
rm -f "$OUT" "$OUT.tmp"

has_pvh_note() {
  local notes
  [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] || return 1
  notes=$(readelf -n "$1" 2>/dev/null) || return 1
  grep -q 'Xen .*(0x00000012)' <<<"$notes"
}

# Candidate payload offsets by magic number, each tried with its decompressor (the first stream only: the
# bzImage goes on after the payload).
try() {
  local magic=$1
  shift
  local off
  for off in $(LC_ALL=C grep -obUaP "$magic" "$IN" | cut -d: -f1); do
    # (Not a pipe: the decompressor stops at the end of its stream and tail's SIGPIPE would fail the pipeline.)
    if "$@" <(tail -c +$((off + 1)) "$IN") >"$OUT.tmp" 2>/dev/null && has_pvh_note "$OUT.tmp"; then
      mv "$OUT.tmp" "$OUT"
      return 0
    fi
  done
  rm -f "$OUT.tmp"
  return 1
}

try '\xfd7zXZ\x00' xz -dc --single-stream ||
  try '\x28\xb5\x2f\xfd' zstd -dc ||
  try '\x1f\x8b\x08' gzip -dc || {
  log "no PVH-bootable ELF kernel found in $IN"
  exit 1
}
log "$(du -h "$OUT" | cut -f1) vmlinux from $(du -h "$IN" | cut -f1) $(basename "$IN")"
