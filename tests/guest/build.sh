#!/usr/bin/env bash
# Build, or reuse when nothing changed, the hca test guest in BUILD_DIR/guest:
# Debian's kernel as an uncompressed vmlinux (QEMU boots it directly via PVH),
# a reproducible busybox initramfs whose PID 1 is hca-workload, and the
# host-side hca-journal-verify. Progress goes to stderr; stdout ends with
#   kernel: PATH / initramfs: PATH / verifier: PATH
# The kernel .deb is kept in BUILD_DIR/guest/cache (or $HCA_GUEST_CACHE) so
# that only the first build touches the Debian archive.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCES=(build.sh init workload.c verify.c journal.h)
REQUIRED_PKGS=(busybox-static cpio xz-utils zstd kmod gcc libc6-dev)
# What the guest needs; their dependencies are found with modinfo.
MODULES=(virtio_pci virtio_blk virtio_net virtio_console evdev button)
CFLAGS=(-std=c11 -O2 -Wall -Wextra -Werror "-ffile-prefix-map=$SRC=.")
BUSYBOX=/bin/busybox
EPOCH=0 # every mtime in the initramfs, so that it is bit-for-bit reproducible

log() { echo "guest-build: $*" >&2; }
die() { echo "guest-build: error: $*" >&2; exit 1; }

check_packages() {
	local p missing=()
	for p in "${REQUIRED_PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] ||
		die "missing Debian packages: ${missing[*]} (run deploy/install-deps.sh)"
}

# ---- kernel package ----

# "release version" of the kernel behind linux-image-amd64, e.g.
# "6.1.0-56-amd64 6.1.192-2". The metapackage's Depends line (what
# `apt-cache depends` shows) pins both, and one apt-cache call is a second
# when apt keeps no binary cache, so it is asked only once.
kernel_package() {
	apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
		sed -n 's/^Depends:.*linux-image-\([^ ,]*-amd64\) (= \([^)]*\)).*/\1 \2/p' | head -n1
}

# Path of the cached .deb of kernel package $1 version $2, downloading it if
# needed.
kernel_deb() {
	local kver=$1 ver=$2 deb tmp apt_opts=()
	# As root, apt's _apt sandbox user cannot write into our cache dir.
	[ "$(id -u)" -ne 0 ] || apt_opts=(-o APT::Sandbox::User=root)
	deb="$CACHE/linux-image-${kver}_${ver//:/%3a}_amd64.deb"
	if [ ! -s "$deb" ]; then
		log "downloading linux-image-$kver $ver"
		tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
		(cd "$tmp" && apt-get download -q "${apt_opts[@]}" "linux-image-$kver=$ver" >&2) ||
			{ rm -rf "$tmp"; die "apt-get download linux-image-$kver=$ver failed"; }
		mv "$tmp"/*.deb "$deb"
		rm -rf "$tmp"
	fi
	echo "$deb"
}

# ---- vmlinux from vmlinuz ----

# "offset format" for every place a compressed kernel payload may start.
payload_candidates() {
	local img=$1 fmt
	local -A magic=(
		[gzip]='\x1f\x8b\x08' [xz]='\xfd7zXZ\x00' [zstd]='\x28\xb5\x2f\xfd'
		[lzma]='\x5d\x00\x00\x00' [lz4]='\x02\x21\x4c\x18' [lzo]='\x89LZO\x00'
		[bzip2]='BZh[1-9]\x31\x41\x59\x26\x53\x59'
	)
	for fmt in "${!magic[@]}"; do
		{ LC_ALL=C grep -obUaP "${magic[$fmt]}" "$img" || true; } | cut -d: -f1 | sed "s/\$/ $fmt/"
	done | sort -n | head -n 1000
}

decompressor() {
	case $1 in
	gzip) echo "gzip -dc" ;;
	xz) echo "xz -dc --single-stream" ;;
	lzma) echo "xz -dc --format=lzma" ;;
	zstd) echo "zstd -dcq" ;;
	lz4) echo "lz4 -dc" ;;
	lzo) echo "lzop -dc" ;;
	bzip2) echo "bzip2 -dc" ;;
	esac
}

is_elf() {
	[ "$(head -c 4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]
}

# The payload's end is not known, so each decompressor runs to the end of the
# file and its complaint about trailing data is ignored: what counts is
# whether the output is an ELF.
extract_vmlinux() {
	local img=$1 out=$2 off fmt cmd skipped=""
	while read -r off fmt; do
		cmd=$(decompressor "$fmt")
		if ! command -v "${cmd%% *}" >/dev/null; then
			skipped+=" $fmt"
			continue
		fi
		tail -c "+$((off + 1))" "$img" | $cmd >"$out" 2>/dev/null || true
		if [ -s "$out" ] && is_elf "$out"; then
			log "vmlinux: $fmt payload at offset $off of ${img##*/}"
			return 0
		fi
	done < <(payload_candidates "$img")
	die "no compressed ELF found in $img${skipped:+ (no decompressor for:$skipped)}"
}

# QEMU can only boot a vmlinux directly if it carries the PVH entry note.
check_pvh() {
	command -v readelf >/dev/null || return 0
	readelf -n "$1" | grep -Eq 'Xen[[:space:]].*0x00000012' ||
		die "$1 has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); kernel lacks CONFIG_PVH"
}

# ---- modules ----

declare -A KO=() BUILTIN=() SEEN=()
ORDER=()

index_modules() {
	local mroot=$1 f n
	while IFS= read -r -d '' f; do
		n=${f##*/}
		n=${n%%.ko*}
		KO[${n//-/_}]=$f
	done < <(find "$mroot" \( -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz' \) -print0)
	if [ -f "$mroot/modules.builtin" ]; then
		while read -r f; do
			n=${f##*/}
			n=${n%.ko}
			BUILTIN[${n//-/_}]=1
		done <"$mroot/modules.builtin"
	fi
}

unpack_module() {
	case $1 in
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -dcq "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) cp "$1" "$2" ;;
	esac
}

# Depth first, so every module lands in ORDER after all it depends on.
add_module() {
	local name=${1//-/_} dest=$2 dep
	[ -z "${SEEN[$name]:-}" ] || return 0
	SEEN[$name]=1
	if [ -z "${KO[$name]:-}" ]; then
		[ -n "${BUILTIN[$name]:-}" ] && return 0
		die "module $name is neither built into the kernel nor shipped as a module"
	fi
	unpack_module "${KO[$name]}" "$dest/$name.ko"
	for dep in $(modinfo -F depends "$dest/$name.ko" | tr ',' ' '); do
		add_module "$dep" "$dest"
	done
	ORDER+=("$name")
}

# ---- initramfs ----

populate_root() {
	local root=$1 mroot=$2 m a
	mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
	index_modules "$mroot"
	for m in "${MODULES[@]}"; do
		add_module "$m" "$root/lib/modules"
	done
	printf '%s\n' "${ORDER[@]}" >"$root/lib/modules/load-order"
	log "modules: ${ORDER[*]}"
	install -m 0755 "$BUSYBOX" "$root/bin/busybox"
	for a in $("$BUSYBOX" --list); do
		[ -e "$root/bin/$a" ] || ln -s busybox "$root/bin/$a"
	done
	install -m 0755 "$SRC/init" "$root/init"
	install -m 0755 "$WORK/hca-workload" "$root/bin/hca-workload"
}

# cpio records mtimes, modes, owners and inode numbers: pin all of them.
write_cpio() {
	local root=$1 out=$2
	find "$root" -type d -exec chmod 0755 {} +
	find "$root" -type f -name '*.ko' -exec chmod 0644 {} +
	chmod 0644 "$root/lib/modules/load-order"
	find "$root" -exec touch -h -d "@$EPOCH" {} +
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc --reproducible -R 0:0 --quiet) >"$out"
}

# ---- main ----

compile() {
	gcc "${CFLAGS[@]}" -static -o "$WORK/hca-workload" "$SRC/workload.c"
	gcc "${CFLAGS[@]}" -o "$WORK/hca-journal-verify" "$SRC/verify.c"
}

# Everything the outputs depend on; a change in any of it forces a rebuild.
input_hash() {
	local deb=$1
	{
		(cd "$SRC" && sha256sum "${SOURCES[@]}")
		echo "kernel=${deb##*/}"
		dpkg-query -W "${REQUIRED_PKGS[@]}"
	} | sha256sum | cut -d' ' -f1
}

print_paths() {
	echo "kernel: $OUT/vmlinux"
	echo "initramfs: $OUT/initramfs.cpio"
	echo "verifier: $OUT/hca-journal-verify"
}

build() {
	local deb=$1 kroot vmlinuz mroot
	kroot="$WORK/kernel"
	log "unpacking ${deb##*/}"
	dpkg-deb -x "$deb" "$kroot"
	vmlinuz=("$kroot"/boot/vmlinuz-*)
	mroot=("$kroot"/lib/modules/*)
	if [ ! -f "${vmlinuz[0]}" ] || [ ! -d "${mroot[0]}" ]; then
		die "${deb##*/} holds no vmlinuz or modules"
	fi
	extract_vmlinux "${vmlinuz[0]}" "$WORK/vmlinux"
	check_pvh "$WORK/vmlinux"
	compile
	populate_root "$WORK/root" "${mroot[0]}"
	write_cpio "$WORK/root" "$WORK/initramfs.cpio"
	for f in vmlinux initramfs.cpio hca-workload hca-journal-verify; do
		mv -f "$WORK/$f" "$OUT/$f"
	done
}

main() {
	local kver ver deb hash
	[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
	OUT="$(realpath -m "$1")/guest"
	CACHE=$(realpath -m "${HCA_GUEST_CACHE:-$OUT/cache}")
	mkdir -p "$OUT" "$CACHE"
	check_packages
	exec 9>"$OUT/.lock"
	flock 9 # builds of one BUILD_DIR by parallel tests take turns
	rm -rf "$OUT"/.work.* # left by a build that was killed

	read -r kver ver < <(kernel_package) || true
	if [ -z "${ver:-}" ]; then
		# Without apt metadata the newest cached kernel keeps offline rebuilds working.
		deb=$(find "$CACHE" -maxdepth 1 -name 'linux-image-*-amd64_*_amd64.deb' | sort -V | tail -n1)
		[ -n "$deb" ] || die "apt-cache knows no linux-image-amd64; run apt-get update"
		log "apt has no kernel metadata; using cached ${deb##*/}"
	else
		deb=$(kernel_deb "$kver" "$ver")
	fi
	hash=$(input_hash "$deb")
	if [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$hash" ] &&
		[ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio" ] && [ -x "$OUT/hca-journal-verify" ]; then
		print_paths
		return
	fi
	rm -f "$OUT/.stamp"
	WORK=$(mktemp -d "$OUT/.work.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	build "$deb"
	echo "$hash" >"$OUT/.stamp"
	log "built guest for kernel ${deb##*/}"
	print_paths
}

main "$@"
