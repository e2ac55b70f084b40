#!/usr/bin/env bash
# make bench, cluster part: each figure against a baseline of the same run.
#   formation:  devcluster up 3 (corosync + Ceph + hcad ready) vs up 1
#   detection:  a killed corosync seen by another node's hcad, vs the
#               configured totem token (1000 ms)
#   store:      CAS update latency on RADOS vs the local dir store
#   guest start: vm start -> first counter line, RBD disk vs local qcow2
set -uo pipefail

BUILD=$(cd "${1:?usage: cluster.sh BUILD_DIR}" && pwd)
TOP=$(cd "$(dirname "$0")/../.." && pwd)
DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-bench-dc HCA_DC_NETNS=hcabench HCA_BUILD=$BUILD
unset HCA_API
RUNS=${BENCH_RUNS:-3}
G=$BUILD/guest
CMDLINE="console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=4 hca.dirty_rate=0"
trap '"$DCSH" down >/dev/null 2>&1; rm -rf /tmp/hca-bench-store' EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
on() { local n=$1; shift; "$DCSH" exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$BUILD/hcactl" "$@"; }

up_ms() {
	local t0
	"$DCSH" down >/dev/null 2>&1
	t0=$(now_ms)
	"$DCSH" up "$1" >/dev/null || return 1
	echo $(($(now_ms) - t0))
}

# node K's corosync: nodes share the PID namespace, so find it by its network namespace
corosync_pid() {
	local p
	for p in $(ip netns pids "$HCA_DC_NETNS-node$1" 2>/dev/null); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = corosync ] && echo "$p" && return
	done
}

# wait_eq SECONDS WANT CMD...: poll CMD's output until it is WANT
wait_eq() {
	local deadline=$((SECONDS + $1)) want=$2
	shift 2
	while [ "$("$@" 2>/dev/null)" != "$want" ]; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.05
	done
}

node3_online() {
	ctl node1 cluster status --json | python3 -c "
import json,sys; print([n['online'] for n in json.load(sys.stdin)['nodes'] if n['name']=='node3'][0])"
}

detect_ms() {
	local t0
	t0=$(now_ms)
	kill -9 "$(corosync_pid 3)"
	wait_eq 30 False node3_online || { echo "node3's loss not seen in 30 s" >&2; return 1; }
	echo $(($(now_ms) - t0))
	on node3 corosync >/dev/null 2>&1
	wait_eq 30 True node3_online || echo "node3 did not rejoin in 30 s" >&2
}

counting() { grep -aq 'hca-workload boot=' "$HCA_DC_DIR/n2/s/vm/$1/serial.log" 2>/dev/null; }

start_ms() { # NAME
	local t0
	rm -f "$HCA_DC_DIR/n2/s/vm/$1/serial.log" # the VM is stopped between runs
	t0=$(now_ms)
	ctl node2 vm start "$1" >/dev/null || return 1
	for _ in $(seq 1200); do counting "$1" && break; sleep 0.05; done
	echo $(($(now_ms) - t0))
	ctl node2 vm stop "$1" --force >/dev/null
}

f1=() f3=() det=() rbd=() loc=()
for _ in $(seq "$RUNS"); do f1+=("$(up_ms 1)"); f3+=("$(up_ms 3)"); done
for _ in $(seq "$RUNS"); do det+=("$(detect_ms)"); done
rados=$(on node1 "$BUILD/tools/store_bench" rados "$HCA_DC_DIR/ceph/ceph.conf" hca 300)
dir=$("$BUILD/tools/store_bench" dir /tmp/hca-bench-store 300)
ctl node2 vm define --name brbd --memory 96M --disk rbd:64M --kernel "$G/vmlinux" \
	--initrd "$G/initramfs.cpio" --cmdline "$CMDLINE" >/dev/null
ctl node2 vm define --name bloc --memory 96M --disk 64M --kernel "$G/vmlinux" \
	--initrd "$G/initramfs.cpio" --cmdline "$CMDLINE" >/dev/null
for _ in $(seq "$RUNS"); do loc+=("$(start_ms bloc)"); rbd+=("$(start_ms brbd)"); done

p() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$2"; }
m1=$(printf '%s\n' "${f1[@]}" | median); m3=$(printf '%s\n' "${f3[@]}" | median)
md=$(printf '%s\n' "${det[@]}" | median)
ml=$(printf '%s\n' "${loc[@]}" | median); mr=$(printf '%s\n' "${rbd[@]}" | median)
echo
echo "Cluster on one machine (devcluster: namespaces, corosync, memstore Ceph), $RUNS runs, median"
printf '%-44s %12s %12s %8s\n' "measure" "value" "baseline" "ratio"
printf '%-44s %12s %12s %8s\n' "formation, 3 nodes ready (ms) vs 1 node" "$m3" "$m1" "$(ratio "$m3" "$m1")"
printf '%-44s %12s %12s %8s\n' "node loss seen by hcad (ms) vs token" "$md" "1000" "$(ratio "$md" 1000)"
printf '%-44s %12s %12s %8s\n' "store CAS update p50 (us), rados vs dir" "$(p p50_us "$rados")" "$(p p50_us "$dir")" "$(ratio "$(p p50_us "$rados")" "$(p p50_us "$dir")")"
printf '%-44s %12s %12s %8s\n' "store CAS update p99 (us), rados vs dir" "$(p p99_us "$rados")" "$(p p99_us "$dir")" "$(ratio "$(p p99_us "$rados")" "$(p p99_us "$dir")")"
printf '%-44s %12s %12s %8s\n' "guest start (ms), RBD disk vs local qcow2" "$mr" "$ml" "$(ratio "$mr" "$ml")"
echo "runs: formation-1 ${f1[*]}; formation-3 ${f3[*]}; detection ${det[*]}; start local ${loc[*]}; start rbd ${rbd[*]} (ms)"
