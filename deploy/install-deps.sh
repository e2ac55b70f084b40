#!/usr/bin/env bash
# Install, idempotently and only what is missing, every Debian package hca needs to
# build, test and demo. QEMU comes from bookworm-backports (10.0.x): Debian 12's 7.2
# corrupts a busy guest's RAM when it live-migrates under TCG.
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "install-deps: must run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

PKGS=(
  build-essential pkg-config clang llvm
  libqb-dev libprotobuf-c-dev protobuf-c-compiler libjansson-dev
  libssl-dev libzstd-dev librados-dev librbd-dev libnbd-dev
  libcorosync-common-dev libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev
  libcmocka-dev
  busybox-static cpio xz-utils zstd kmod file iproute2 procps util-linux openssl
  python3
  corosync ceph-mon ceph-osd ceph-common
)
BACKPORTS_PKGS=(qemu-system-x86 qemu-utils qemu-block-extra)
QEMU_MIN_MAJOR=10

missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v
  v=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1)
  [ -n "$v" ] && [ "$v" -ge "$QEMU_MIN_MAJOR" ] && [ -z "$(missing "${BACKPORTS_PKGS[@]}")" ]
}

# The archive URI comes from the machine's own Debian source, so mirrors and snapshots
# configured by the site keep working.
debian_uri() {
  local f uri=""
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ && $2 !~ /security/ {print $2; exit}' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "install-deps: no Debian archive URI found in /etc/apt" >&2; exit 1; }
  echo "$uri"
}

add_backports() {
  local list=/etc/apt/sources.list.d/hca-bookworm-backports.sources
  grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
  cat >"$list" <<SRC
Types: deb
URIs: $(debian_uri)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  echo "install-deps: added bookworm-backports ($list)"
  UPDATED=0
}

UPDATED=0
apt_update() { [ "$UPDATED" -eq 1 ] || { apt-get update -qq; UPDATED=1; }; }

need=$(missing "${PKGS[@]}")
if [ -n "$need" ]; then
  apt_update
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $need
fi

if ! qemu_ok; then
  add_backports
  apt_update
  apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS_PKGS[@]}"
  qemu_ok || { echo "install-deps: QEMU >= $QEMU_MIN_MAJOR.0 not installed" >&2; exit 1; }
fi
echo "install-deps: all dependencies present ($(qemu-system-x86_64 --version | head -n1))"
