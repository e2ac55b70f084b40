#!/usr/bin/env bash
# make bench: hca's benchmarks, each printed as a table against a baseline
# measured in the same run (the machines are noisy; only ratios travel).
#   1. VM start latency: define -> the workload's first counter line, through
#      hcad, against the same QEMU command line launched by hand.
#   2. hcad's RSS and CPU while supervising N small running VMs, against the
#      same hcad supervising none.
set -uo pipefail

BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
RUNS=${BENCH_RUNS:-3}
NVMS=${BENCH_VMS:-20}
SAMPLE_S=${BENCH_SAMPLE_S:-20}
HCACTL=$BUILD/hcactl
GUEST=$BUILD/guest
B=$(mktemp -d /tmp/hcab.XXXXXX)
export HCA_API="hca-bench-$$"
CMDLINE="console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=4 hca.dirty_rate=0"
HCAD_PID=

cleanup() {
	for f in "$B"/s/vm/*/qemu.pid "$B"/bare/qemu.pid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	[ -n "$HCAD_PID" ] && kill -9 "$HCAD_PID" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
first_line() { grep -aq 'hca-workload boot=' "$1" 2>/dev/null; }
wait_line() {
	for _ in $(seq 1200); do first_line "$1" && return 0; sleep 0.05; done
	return 1
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

start_hcad() {
	cat >"$B/hcad.conf" <<CONF
state_dir = $B/s
storage_dir = $B/vols
api_name = $HCA_API
log_level = warning
CONF
	"$BUILD/hcad" -c "$B/hcad.conf" >>"$B/hcad.log" 2>&1 &
	HCAD_PID=$!
	for _ in $(seq 100); do "$HCACTL" node info >/dev/null 2>&1 && return; sleep 0.1; done
	echo "hcad did not start"; exit 1
}

define() {
	"$HCACTL" vm define --name "$1" --vcpus 1 --memory "${2:-96M}" --disk 16M \
		--kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio" --cmdline "$CMDLINE" >/dev/null
}

# Baseline: hcad's own argv for the VM, run by hand (same QEMU, same guest).
bare_start_ms() {
	local i=$1 t0 t1 argv
	rm -rf "$B/bare"; mkdir -p "$B/bare"
	qemu-img create -q -f qcow2 "$B/bare/d.qcow2" 16M
	argv=(qemu-system-x86_64 -name "guest=bare$i" -no-user-config -nodefaults -machine q35
		-accel tcg -cpu max -smp 1 -m 96 -display none -daemonize -pidfile "$B/bare/qemu.pid"
		-qmp "unix:$B/bare/qmp.sock,server=on,wait=off"
		-chardev "socket,id=c0,path=$B/bare/con.sock,server=on,wait=off,logfile=$B/bare/serial.log"
		-serial chardev:c0 -kernel "$GUEST/vmlinux" -initrd "$GUEST/initramfs.cpio" -append "$CMDLINE"
		-blockdev "{\"driver\":\"qcow2\",\"node-name\":\"d\",\"file\":{\"driver\":\"file\",\"filename\":\"$B/bare/d.qcow2\"}}"
		-device virtio-blk-pci,drive=d)
	t0=$(now_ms)
	"${argv[@]}" || return 1
	wait_line "$B/bare/serial.log" || return 1
	t1=$(now_ms)
	kill -9 "$(cat "$B/bare/qemu.pid")"
	echo $((t1 - t0))
}

hcad_start_ms() {
	local name=st$1 t0 t1
	t0=$(now_ms)
	define "$name" && "$HCACTL" vm start "$name" >/dev/null || return 1
	wait_line "$B/s/vm/$name/serial.log" || return 1
	t1=$(now_ms)
	"$HCACTL" vm stop "$name" --force >/dev/null
	"$HCACTL" vm undefine "$name" >/dev/null
	echo $((t1 - t0))
}

bench_start() {
	local bare=() hcad=() i mb mh
	for i in $(seq "$RUNS"); do
		bare+=("$(bare_start_ms "$i")")
		hcad+=("$(hcad_start_ms "$i")")
	done
	mb=$(printf '%s\n' "${bare[@]}" | median)
	mh=$(printf '%s\n' "${hcad[@]}" | median)
	echo
	echo "VM start latency, define -> first workload counter line (accel: tcg, $RUNS runs, median)"
	printf '%-34s %10s %8s\n' "path" "ms" "ratio"
	printf '%-34s %10s %8s\n' "QEMU by hand (baseline)" "$mb" "1.00"
	printf '%-34s %10s %8s\n' "hcactl define+start via hcad" "$mh" \
		"$(awk -v a="$mh" -v b="$mb" 'BEGIN {printf "%.2f", a / b}')"
	echo "runs: baseline ${bare[*]} ms; hcad ${hcad[*]} ms"
}

# RSS (KiB) now, and CPU ticks used over SAMPLE_S seconds.
hcad_usage() {
	local t0 t1 hz
	hz=$(getconf CLK_TCK)
	t0=$(awk '{print $14 + $15}' "/proc/$HCAD_PID/stat")
	sleep "$SAMPLE_S"
	t1=$(awk '{print $14 + $15}' "/proc/$HCAD_PID/stat")
	echo "$(awk '/VmRSS/ {print $2}' "/proc/$HCAD_PID/status") $(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$SAMPLE_S" 'BEGIN {printf "%.3f", 100 * d / hz / s}')"
}

# How many of the scale VMs have printed their first counter line.
booted() {
	local i n=0
	for i in $(seq "$NVMS"); do first_line "$B/s/vm/s$i/serial.log" && n=$((n + 1)); done
	echo "$n"
}

bench_scale() {
	local idle busy i up=0 deadline
	idle=$(hcad_usage)
	for i in $(seq "$NVMS"); do
		define "s$i" && "$HCACTL" vm start "s$i" >/dev/null && up=$((up + 1))
	done
	# Every guest boots on the same two cores: give them time, but bounded.
	deadline=$((SECONDS + 300))
	while [ "$(booted)" -lt "$up" ] && [ $SECONDS -lt $deadline ]; do sleep 1; done
	"$HCACTL" vm list >/dev/null
	busy=$(hcad_usage)
	echo
	echo "hcad footprint supervising $up running VMs (96 MiB, 1 vCPU each; $(booted) booted to the workload) vs none, over ${SAMPLE_S}s"
	printf '%-22s %12s %12s\n' "" "RSS KiB" "CPU %"
	printf '%-22s %12s %12s\n' "0 VMs (baseline)" ${idle}
	printf '%-22s %12s %12s\n' "$up VMs" ${busy}
	printf '%-22s %12s\n' "RSS ratio" "$(awk -v a="${busy%% *}" -v b="${idle%% *}" 'BEGIN {printf "%.2f", a / b}')"
	printf '%-22s %12s\n' "RSS per VM (KiB)" "$(awk -v a="${busy%% *}" -v b="${idle%% *}" -v n="$up" 'BEGIN {printf "%.0f", (a - b) / n}')"
	for i in $(seq "$NVMS"); do "$HCACTL" vm stop "s$i" --force >/dev/null 2>&1; done
}

start_hcad
bench_start
bench_scale
echo
"$BUILD/tools/chan_bench"
"$(dirname "$0")"/cluster.sh "$BUILD"
"$(dirname "$0")"/ownership.sh "$BUILD"
"$(dirname "$0")"/migration.sh "$BUILD"
"$(dirname "$0")"/migration_storage.sh "$BUILD"
echo
"$BUILD/tools/rep_bench"
"$(dirname "$0")"/replica.sh "$BUILD"
