#!/usr/bin/env bash
# make bench, ownership part, on a 3-node devcluster: each figure against a
# baseline of the same run.
#   show:   `vm show` asked on node2 (forwarded to the owner node1) vs on node1
#   start accepted: `vm start --no-wait` (request -> job answered), forwarded
#           vs on the owner
#   start done: the job's own duration (created -> ended, from its record),
#           asked on node2 vs on node1
#   job record: the store writes one start job makes (its record's version)
#           times the store's CAS p50, against the start job's duration
set -uo pipefail

BUILD=$(cd "${1:?usage: ownership.sh BUILD_DIR}" && pwd)
TOP=$(cd "$(dirname "$0")/../.." && pwd)
DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-bench-own HCA_DC_NETNS=hcabo HCA_BUILD=$BUILD
unset HCA_API
RUNS=${BENCH_OWN_RUNS:-15}
G=$BUILD/guest
trap '"$DCSH" down >/dev/null 2>&1' EXIT
trap 'exit 130' INT TERM

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.1f", u / 1000}'; }
on() { local n=$1; shift; "$DCSH" exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$BUILD/hcactl" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# One loop inside NODE times COUNT runs of hcactl ARGS: no namespace entry
# or JSON parsing in the figure. Prints the median in microseconds.
time_in() {
	local n=$1 count=$2
	shift 2
	on "$n" bash -c '
		c=$1; shift
		for i in $(seq "$c"); do
			t0=${EPOCHREALTIME/[.,]/}
			"$@" >/dev/null 2>&1 || { echo fail; exit 1; }
			echo $(( ${EPOCHREALTIME/[.,]/} - t0 ))
		done' _ "$count" "$BUILD/hcactl" "$@" | median
}

job_ms() { # NODE ID: the job's duration from its record
	ctl "$1" job show "$2" --json | json "d['ended_ms'] - d['created_ms']"
}

wait_ended() {
	for _ in $(seq 300); do
		case "$(ctl "$1" job show "$2" --json 2>/dev/null | json "d['phase']")" in
		succeeded) return 0 ;; failed | cancelled) return 1 ;; esac
		sleep 0.05
	done
	return 1
}

# start from NODE with --no-wait: "ACCEPT_US JOB_MS WRITES"
start_once() {
	local n=$1 jid acc d w
	# timed inside the node: "US JOB-ID"
	read -r acc jid <<<"$(on "$n" bash -c 't0=${EPOCHREALTIME/[.,]/}
		j=$("$1" vm start bvm --no-wait) || exit 1
		echo $(( ${EPOCHREALTIME/[.,]/} - t0 )) "$j"' _ "$BUILD/hcactl")"
	[ -n "$jid" ] || return 1
	wait_ended "$n" "$jid" || return 1
	d=$(job_ms "$n" "$jid")
	w=$(on node1 rados -p hca -N job getxattr "$jid" hca.version 2>/dev/null)
	ctl node1 vm stop bvm --force >/dev/null
	echo "$acc $d ${w:-0}"
}

"$DCSH" down >/dev/null 2>&1
"$DCSH" up 3 >/dev/null || { echo "bench: devcluster up failed" >&2; exit 1; }
ctl node1 vm define --name bvm --memory 64M --disk rbd:16M --kernel "$G/vmlinux" \
	--initrd "$G/initramfs.cpio" --cmdline "console=ttyS0 quiet" >/dev/null ||
	{ echo "bench: define failed" >&2; exit 1; }

show_own=$(time_in node1 "$RUNS" vm show bvm)
show_fwd=$(time_in node2 "$RUNS" vm show bvm)
acc_own=() acc_fwd=() dur_own=() dur_fwd=() writes=()
for _ in $(seq "$((RUNS / 3 + 1))"); do
	read -r a d w <<<"$(start_once node1)" && acc_own+=("$a") dur_own+=("$d") writes+=("$w")
	read -r a d w <<<"$(start_once node2)" && acc_fwd+=("$a") dur_fwd+=("$d")
done
cas=$(on node1 "$BUILD/tools/store_bench" rados "$HCA_DC_DIR/ceph/ceph.conf" hca 200)
cas_us=$(sed -n 's/.*p50_us=\([0-9]*\).*/\1/p' <<<"$cas")
ma=$(printf '%s\n' "${acc_own[@]}" | median); mf=$(printf '%s\n' "${acc_fwd[@]}" | median)
da=$(printf '%s\n' "${dur_own[@]}" | median); df=$(printf '%s\n' "${dur_fwd[@]}" | median)
mw=$(printf '%s\n' "${writes[@]}" | median)
store_ms=$(awk -v w="$mw" -v c="$cas_us" 'BEGIN {printf "%.1f", w * c / 1000}')

echo
echo "Ownership and jobs on a 3-node devcluster, median of $RUNS (show) / $((RUNS / 3 + 1)) (start) runs"
printf '%-52s %10s %10s %7s\n' "measure" "value" "baseline" "ratio"
printf '%-52s %10s %10s %7s\n' "vm show (ms): forwarded (node2) vs on the owner" "$(ms "$show_fwd")" "$(ms "$show_own")" "$(ratio "$show_fwd" "$show_own")"
printf '%-52s %10s %10s %7s\n' "vm start accepted (ms): forwarded vs on the owner" "$(ms "$mf")" "$(ms "$ma")" "$(ratio "$mf" "$ma")"
printf '%-52s %10s %10s %7s\n' "start job duration (ms): asked on node2 vs node1" "$df" "$da" "$(ratio "$df" "$da")"
printf '%-52s %10s %10s %7s\n' "job record store time (ms) vs start job duration" "$store_ms" "$da" "$(ratio "$store_ms" "$da")"
echo "a start job writes its record $mw times (store CAS p50 ${cas_us} us); the writes run on the store queue beside the operation, not before it"
