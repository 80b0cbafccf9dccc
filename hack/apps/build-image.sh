#!/usr/bin/env bash
# Build an application test image from Debian packages and write it as an OCI image layout tar that
# `ctr image import` takes: one zstd layer (the mmdebstrap rootfs), a config, a manifest, an index naming
# the image localhost/lcow-apps/NAME:KEY.
#
# Usage: hack/apps/build-image.sh NAME      (NAME: a file hack/apps/images/NAME.image)
# Prints the path of the tar on stdout (cache dir: LCOW_APP_IMAGE_CACHE, default /var/tmp/lcow-app-images).
#
# NAME.image is a shell fragment setting PACKAGES (Debian package names) and optionally EXCLUDE (extra dpkg
# path-exclude globs) and a function customize() run with the rootfs as $1 after the packages are installed
# (files it needs live in images/NAME/, as $SPEC_DIR).
# The image is cached by content: the key hashes this script, NAME.image and the suite, so a second build is
# a lookup. Builds are serialised by flock on the cache dir (parallel test runs do not race; the second one
# finds the first one's result). Minimised: mmdebstrap's `essential` variant (no apt in the image), no docs,
# man pages, locales or info files (man1 itself stays: update-alternatives in openjdk's postinst fails
# without the directory), apt lists and caches removed. An /etc/hosts naming localhost is added (Docker and
# CRI give containers one, `ctr run` does not; MariaDB's install-db and Erlang need it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# mmdebstrap runs hooks with sh: it calls back here to run the spec's customize() in bash.
if [ "${1:-}" = --customize ]; then
  customize() { :; }
  SPEC_DIR=${2%.image}
  export SPEC_DIR
  # shellcheck source=/dev/null
  . "$2"
  customize "$3"
  exit 0
fi
NAME=${1:?usage: build-image.sh NAME}
SPEC="$ROOT/hack/apps/images/$NAME.image"
CACHE=${LCOW_APP_IMAGE_CACHE:-/var/tmp/lcow-app-images}
SUITE=${LCOW_APP_SUITE:-bookworm}
MIRROR=${LCOW_APP_MIRROR:-}
log() { printf 'app-image %s: %s\n' "$NAME" "$*" >&2; }
die() { log "$*"; exit 1; }
[[ $NAME =~ ^[a-z0-9-]+$ ]] || die "invalid image name"
[ -f "$SPEC" ] || die "no $SPEC"
for tool in mmdebstrap zstd sha256sum flock tar; do command -v "$tool" >/dev/null || die "missing tool: $tool"; done

# The key: this script, the spec, the files beside it in images/NAME/ (sources the spec builds in), the suite.
KEY=$({
  cat "${BASH_SOURCE[0]}" "$SPEC"
  [ ! -d "${SPEC%.image}" ] || (cd "${SPEC%.image}" && find . -type f | LC_ALL=C sort | xargs -r sha256sum)
  echo "$SUITE $MIRROR"
} | sha256sum | cut -c1-16)
OUT="$CACHE/$NAME-$KEY.tar"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi

PACKAGES=()
EXCLUDE=()
customize() { :; }
# shellcheck source=/dev/null
. "$SPEC"
[ ${#PACKAGES[@]} -gt 0 ] || die "$SPEC sets no PACKAGES"

WORK=$(mktemp -d "$CACHE/.build-$NAME.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
dpkgopts=()
for p in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*' \
  '/usr/share/i18n/*' "${EXCLUDE[@]}"; do
  dpkgopts+=("--dpkgopt=path-exclude=$p")
done
dpkgopts+=("--dpkgopt=path-include=/usr/share/locale/locale.alias")
t0=$(date +%s)
log "mmdebstrap $SUITE: ${PACKAGES[*]}"
# shellcheck disable=SC2016
mmdebstrap --variant=essential --mode=root --format=tar --quiet \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" "${dpkgopts[@]}" \
  --setup-hook='mkdir -p "$1"/usr/share/man/man1' \
  --customize-hook="$(printf '%q' "$ROOT/hack/apps/build-image.sh") --customize $(printf '%q' "$SPEC") \"\$1\"" \
  --customize-hook='printf "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" >"$1"/etc/hosts' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*.log' \
  "$SUITE" "$WORK/rootfs.tar" ${MIRROR:+"$MIRROR"} >&2

# OCI image layout: blobs/sha256/{layer,config,manifest}, index.json, oci-layout.
mkdir -p "$WORK/oci/blobs/sha256"
DIFF_ID=$(sha256sum "$WORK/rootfs.tar" | cut -d' ' -f1)
zstd -q -T0 -3 --rm "$WORK/rootfs.tar" -o "$WORK/layer"
blob() { # file -> moves it to blobs/sha256/<digest>, prints "<digest> <size>"
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  mv "$1" "$WORK/oci/blobs/sha256/$d"
  echo "$d $s"
}
read -r LAYER LAYER_SIZE < <(blob "$WORK/layer")
REF="localhost/lcow-apps/$NAME:$KEY"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","LANG=C.UTF-8"],"Cmd":["/bin/sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"hack/apps/build-image.sh %s"}]}' \
  "$DIFF_ID" "$NAME" >"$WORK/config"
read -r CONFIG CONFIG_SIZE < <(blob "$WORK/config")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:%s","size":%s}]}' \
  "$CONFIG" "$CONFIG_SIZE" "$LAYER" "$LAYER_SIZE" >"$WORK/manifest"
read -r MANIFEST MANIFEST_SIZE < <(blob "$WORK/manifest")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$MANIFEST" "$MANIFEST_SIZE" "$REF" "$KEY" >"$WORK/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$WORK/oci/oci-layout"
tar -cf "$WORK/image.tar" -C "$WORK/oci" oci-layout index.json blobs
mv "$WORK/image.tar" "$OUT"
log "built $OUT ($(du -h "$OUT" | cut -f1), layer $((LAYER_SIZE / 1048576)) MiB zstd) in $(($(date +%s) - t0)) s"
# Older builds of the same image are dropped (the cache holds one per name).
find "$CACHE" -maxdepth 1 -name "$NAME-*.tar" ! -path "$OUT" -delete
echo "$OUT"
