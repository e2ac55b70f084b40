#!/usr/bin/env bash
# Build the test guest twice from scratch into two temporary build dirs and
# check that every artefact is bit-for-bit identical. The kernel .deb cache
# is shared (BUILD_DIR/guest/cache if a BUILD_DIR is given, else a temp dir)
# so that the check does not download the kernel twice.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ARTEFACTS=(vmlinux initramfs.cpio hca-workload hca-journal-verify)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export HCA_GUEST_CACHE=${1:+$(realpath -m "$1")/guest/cache}
HCA_GUEST_CACHE=${HCA_GUEST_CACHE:-$tmp/cache}

for n in 1 2; do
	"$SRC/build.sh" "$tmp/b$n" >/dev/null
done

status=0
for f in "${ARTEFACTS[@]}"; do
	a=$(sha256sum <"$tmp/b1/guest/$f" | cut -d' ' -f1)
	b=$(sha256sum <"$tmp/b2/guest/$f" | cut -d' ' -f1)
	if [ "$a" = "$b" ]; then
		echo "same      $a  $f"
	else
		echo "DIFFERENT $a $b  $f"
		status=1
	fi
done
[ $status -eq 0 ] && echo "reproducible: yes" || echo "reproducible: NO"
exit $status
