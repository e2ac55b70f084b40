#!/usr/bin/env bash
# Storage faults are bounded: a three-node devcluster with hcad whose Ceph
# stops answering (every OSD SIGSTOPped, then the mon alone). Checks, each
# timed: `cluster status` shows the storage degraded within 10 s; requests
# that need the store answer within 10 s with "storage unavailable"; hcad
# ends within 5 s of SIGTERM whatever Ceph does; health is ok again within
# 30 s of Ceph resuming; and nothing was left orphaned (every RBD image
# belongs to a VM record, every record's volumes exist).
#   tests/integration/test_storage_faults.sh BUILD_DIR
. "$(dirname "$0")/lib.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-sf.$$ # at most 35 characters, as devcluster.sh wants
export HCA_DC_NETNS=hcsf$$      # namespaces of its own: a developer's devcluster may run
export HCA_BUILD=$BUILD
VM=sf$$
STOPPED=() # SIGSTOPped pids: resumed on exit whatever happens

[ "$(id -u)" -eq 0 ] || { echo "Bail out! needs root (network namespaces, Ceph daemons)"; exit 1; }
if [ ! -x "$HCAD" ] || [ ! -x "$HCACTL" ]; then
	echo "Bail out! build hcad and hcactl first"
	exit 1
fi

dc() { "$DCSH" "$@"; }
in_node() { dc exec "node$1" -- "${@:2}"; }
ctl() { in_node "$1" "$HCACTL" "${@:2}"; } # hcactl on node K
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
secs_since() { # START_US: seconds since, one decimal
	local us=$(($(now_us) - $1))
	printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}
below() { [ "${1%.*}" -lt "$2" ]; } # SECS LIMIT: SECS (one decimal) < LIMIT

cleanup() {
	[ ${#STOPPED[@]} -eq 0 ] || kill -CONT "${STOPPED[@]}" 2>/dev/null
	if [ "$TAP_FAILED" -gt 0 ] && [ -f "$HCA_DC_DIR/n1/hcad.log" ]; then
		diag "node1's hcad log, its warnings and errors (last 30):"
		grep -E '\[(warning|error|crit|notice)\]' "$HCA_DC_DIR/n1/hcad.log" | tail -n 30 | sed 's/^/# /'
	fi
	dc down >/dev/null 2>&1
}
trap cleanup EXIT

# The pids of COMM in node K's network namespace.
node_procs() {
	local p
	for p in $(ip netns pids "$HCA_DC_NETNS-node$1" 2>/dev/null); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
	done
}

# Node K's storage health as `cluster status --json` says it. Polled, so
# it enters the node through its holder directly (as `devcluster.sh exec`
# does, without starting that script each time): the figures it times are
# then within a few tenths of a second.
health() {
	local holder
	holder=$(cat "$HCA_DC_DIR/n$1/holder.pid" 2>/dev/null) || return 1
	nsenter --target "$holder" --mount --net --uts -- "$HCACTL" cluster status --json 2>/dev/null |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["storage_health"])'
}
health_ok() { [ "$(health "$1")" = ok ]; }
health_bad() { local h; h=$(health "$1") && [ -n "$h" ] && [ "$h" != ok ]; }

# timed CMD...: run CMD (a program, not a function: cut off after 20 s);
# T_S its seconds, T_RC its status, T_OUT its stdout and stderr.
timed() {
	local t0
	t0=$(now_us)
	T_OUT=$(timeout 20 "$@" 2>&1)
	T_RC=$?
	T_S=$(secs_since "$t0")
}

# wait_timed SECS CMD...: wait_for, and T_S how long it took.
wait_timed() {
	local t0 rc
	t0=$(now_us)
	wait_for "$@"
	rc=$?
	T_S=$(secs_since "$t0")
	return "$rc"
}

# check_degraded WHAT: node1's status shows the storage degraded within 10 s.
check_degraded() {
	if wait_timed 12 health_bad 1; then
		diag "time to degraded ($1): $T_S s; health: $(health 1)"
		check "$1: cluster status shows storage degraded within 10 s ($T_S s)" below "$T_S" 10
	else
		not_ok "$1: cluster status shows storage degraded within 10 s (still '$(health 1)' after $T_S s)"
	fi
}

# check_unavailable DESC CMD...: CMD answers within 10 s, fails, and says
# "storage unavailable".
check_unavailable() {
	local desc=$1
	shift
	timed "$@"
	diag "time to answer ($desc): $T_S s (exit $T_RC): $(printf '%s' "$T_OUT" | head -n 1)"
	if below "$T_S" 10 && [ "$T_RC" -ne 0 ] && [ "$T_RC" -ne 124 ] &&
	   printf '%s' "$T_OUT" | grep -q 'storage unavailable'; then
		ok "$desc answers within 10 s with 'storage unavailable' ($T_S s)"
	else
		not_ok "$desc answers within 10 s with 'storage unavailable' ($T_S s, exit $T_RC)"
	fi
}

check_ok_again() {
	if wait_timed 30 health_ok 1; then
		diag "time to ok again ($1): $T_S s"
		ok "$1: storage health ok again within 30 s ($T_S s)"
	else
		not_ok "$1: storage health ok again within 30 s (still '$(health 1)')"
	fi
}

# ---- up ----
t0=$(now_us)
if out=$(dc up 3 2>&1); then
	ok "devcluster: 3 nodes with hcad up ($(secs_since "$t0") s)"
else
	not_ok "devcluster: 3 nodes with hcad up"
	printf '%s\n' "$out" | tail -n 5 | sed 's/^/# /'
	echo "Bail out! no devcluster"
	exit 1
fi
check "node1: storage health ok before any fault" health_ok 1

# ---- every OSD stopped ----
# shellcheck disable=SC2207 # pids
OSDS=($(for k in 1 2 3; do node_procs "$k" ceph-osd; done))
check "found the 3 OSDs (pids ${OSDS[*]})" test "${#OSDS[@]}" -eq 3
STOPPED=("${OSDS[@]}")
kill -STOP "${OSDS[@]}"
check_degraded "OSDs stopped"
check_unavailable "vm list (OSDs stopped)" "$DCSH" exec node1 -- "$HCACTL" vm list
check_unavailable "vm define with an rbd disk (OSDs stopped)" "$DCSH" exec node1 -- \
	"$HCACTL" vm define --name "$VM" --vcpus 1 --memory 64M --disk rbd:64M

hcad2=$(node_procs 2 hcad | head -n 1)
proc_gone() { ! proc_alive "$1"; }
if [ -z "$hcad2" ]; then
	not_ok "node2's hcad exits within 5 s of SIGTERM with Ceph hung (no hcad in node2)"
elif kill -TERM "$hcad2" && wait_timed 8 proc_gone "$hcad2"; then
	diag "SIGTERM to exit (node2's hcad, OSDs stopped): $T_S s; its log ends:" \
		"$(grep -E 'teardown not done|hcad stopped' "$HCA_DC_DIR/n2/hcad.log" | tail -n 1)"
	check "node2's hcad exits within 5 s of SIGTERM with Ceph hung ($T_S s)" below "$T_S" 5
else
	not_ok "node2's hcad exits within 5 s of SIGTERM with Ceph hung (still running after $T_S s)"
fi

kill -CONT "${OSDS[@]}"
STOPPED=()
check_ok_again "OSDs resumed"

# node2's hcad again, the way devcluster.sh starts it (node_daemon).
setsid "$DCSH" exec node2 -- "$HCAD" -c "$HCA_DC_DIR/n2/hcad.conf" \
	</dev/null >>"$HCA_DC_DIR/n2/hcad.out" 2>&1 &
echo $! >"$HCA_DC_DIR/n2/hcad.pid"
node2_ready() { ctl 2 cluster status 2>/dev/null | grep -q '^storage: *rados: ok'; }
check "node2's hcad restarts with its storage ok" wait_for 15 node2_ready

# ---- nothing orphaned ----
images=$(timeout 20 "$DCSH" exec node1 -- rbd -p hca ls 2>&1)
rc_images=$?
records=$(timeout 20 "$DCSH" exec node1 -- rados -p hca -N vm ls 2>&1 | grep -v '^\.' | sort)
diag "rbd images: $(printf '%s' "$images" | tr '\n' ' '); vm records: $(printf '%s' "$records" | tr '\n' ' ')"
check "rbd ls and rados ls answer after the resume" test "$rc_images" -eq 0
# Volumes are named VM-DISK.
orphans=
for img in $images; do
	owned=0
	for r in $records; do
		case "$img" in "$r"-*) owned=1 ;; esac
	done
	[ "$owned" -eq 1 ] || orphans+=" $img"
done
check "every rbd image belongs to a vm record${orphans:+ (orphans:$orphans)}" test -z "$orphans"
missing=
for r in $records; do
	vols=$(ctl 1 vm show "$r" --json 2>/dev/null | python3 -c '
import json, sys
for d in json.load(sys.stdin)["disks"]:
    if d["path"].startswith("rbd:"):
        print(d["path"].split("/", 1)[1])') || { missing+=" $r:(no answer)"; continue; }
	for v in $vols; do
		printf '%s\n' "$images" | grep -qx -- "$v" || missing+=" $r:$v"
	done
done
check "every vm record's rbd volumes exist${missing:+ (missing:$missing)}" test -z "$missing"

# ---- the mon alone stopped ----
mon=$(node_procs 1 ceph-mon | head -n 1)
if [ -n "$mon" ]; then
	STOPPED=("$mon")
	kill -STOP "$mon"
	check_degraded "mon stopped"
	kill -CONT "$mon"
	STOPPED=()
	check_ok_again "mon resumed"
else
	not_ok "mon stopped: no ceph-mon found in node1"
fi

hca_done
