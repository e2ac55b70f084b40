#!/usr/bin/env bash
# devcluster: an N-node hca cluster on this one machine, shaped like a real
# one. A hub network namespace with a bridge and one namespace per node
# (nodeK = 10.250.0.K/24); in each node its own mount namespace (private /run,
# the devcluster's shared /dev/shm, its /etc/corosync and /etc/ceph), one
# corosync (knet, crypto, votequorum), one memstore Ceph OSD (the mon on
# node1, cephx) and, when built, one hcad. Used by the integration tests and
# `make demo`.
#
#   deploy/devcluster.sh up [N] [--no-hcad] [--force]   N = 1..5, default 3
#   deploy/devcluster.sh down                           idempotent
#   deploy/devcluster.sh status [--json]
#   deploy/devcluster.sh exec nodeK -- CMD [ARGS...]    CMD inside node K
#
# Environment: HCA_DC_DIR (state, default /tmp/hca-dc), HCA_DC_NETNS
# (namespace prefix, default hca: hca-hub, hca-node1, ...), HCA_BUILD (where
# hcad is, default <repo>/build), HCA_DC_KEEP=1 (keep a failed up for a look),
# HCA_DC_OSD_MB (each memstore OSD's size in MiB, default 256; it is RAM, and
# RBD snapshots fill it with copies of whole objects).
set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIBDIR=$TOP/deploy/devcluster
DC=${HCA_DC_DIR:-/tmp/hca-dc}
NSP=${HCA_DC_NETNS:-hca}
BUILD=${HCA_BUILD:-$TOP/build}
NET=10.250.0
MAX_NODES=5
MARK=.hca-devcluster
FAILFILE=
STEP=
UP_DONE=0
T0=${EPOCHREALTIME/[.,]/}
FSID=

# shellcheck source=deploy/devcluster/node.sh
. "$LIBDIR/node.sh"
# shellcheck source=deploy/devcluster/corosync.sh
. "$LIBDIR/corosync.sh"
# shellcheck source=deploy/devcluster/ceph.sh
. "$LIBDIR/ceph.sh"
# shellcheck source=deploy/devcluster/hcad.sh
. "$LIBDIR/hcad.sh"

usage() {
	sed -n '10,13s/^#   /usage: /p' "${BASH_SOURCE[0]}" >&2
	exit 2
}

elapsed() {
	local us=$((${EPOCHREALTIME/[.,]/} - T0))
	printf '%d.%01d s' $((us / 1000000)) $((us / 100000 % 10))
}

say() { [ -n "${QUIET:-}" ] || printf 'devcluster: %s\n' "$*"; }
step() {
	STEP=$1
	say "[$(elapsed)] $1"
}

# One line saying what went wrong. During `up` (also from its background
# subshells) the first message is kept for the exit trap, which prints it once
# and cleans up.
fail() {
	if [ -n "$FAILFILE" ]; then
		[ -e "$FAILFILE" ] || printf '%s\n' "$*" >"$FAILFILE"
	else
		printf 'devcluster: error: %s\n' "$*" >&2
	fi
	exit 1
}

# wait_until SECS CMD...: poll CMD every 0.1 s until it succeeds.
wait_until() {
	local deadline=$((${EPOCHREALTIME/[.,]/} + $1 * 1000000))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "${EPOCHREALTIME/[.,]/}" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# Wait for background jobs; any failure (already reported) fails the caller.
wait_pids() {
	local p rc=0
	for p in "$@"; do wait "$p" || rc=1; done
	[ "$rc" -eq 0 ] || exit 1
}

# The devcluster's settings as `up` recorded them, so `down` and `status` act
# on the cluster that exists rather than on today's environment.
load_env() {
	N=0
	if [ -f "$DC/cluster.env" ]; then
		N=$(sed -n 's/^N=//p' "$DC/cluster.env")
		NSP=$(sed -n 's/^NSP=//p' "$DC/cluster.env")
	fi
	HUB=$NSP-hub
}

# Node numbers that exist: recorded, or with a namespace left behind.
known_nodes() {
	{
		[ "${N:-0}" -gt 0 ] && seq "$N"
		ip netns list 2>/dev/null | sed -n "s/^$NSP-node\([0-9]\+\)\( .*\)\?$/\1/p"
	} | sort -un
}

ns_exists() { ip netns list 2>/dev/null | grep -q "^$1\( \|$\)"; }

check_dc_dir() {
	case "$DC" in
	/*/*) ;;
	*) fail "HCA_DC_DIR must be an absolute path below a directory: '$DC'" ;;
	esac
	case "$DC" in *[!A-Za-z0-9._/-]* | */../* | */..) fail "HCA_DC_DIR: unsafe path '$DC'" ;; esac
	# hcad's state_dir is DIR/nK/s and must stay within 40 characters
	# (QEMU's unix sockets live below it).
	[ ${#DC} -le 35 ] || fail "HCA_DC_DIR must be at most 35 characters: '$DC'"
}

need_tools() {
	local t
	for t in ip unshare nsenter setsid findmnt corosync corosync-quorumtool \
		ceph ceph-mon ceph-osd ceph-authtool monmaptool rados rbd; do
		command -v "$t" >/dev/null || fail "$t not found: run deploy/install-deps.sh"
	done
}

cluster_exists() {
	local k
	[ -e "$DC" ] && return 0
	ns_exists "$HUB" && return 0
	for k in $(seq "$MAX_NODES"); do ns_exists "$(node_ns "$k")" && return 0; done
	return 1
}

up_exit() {
	local rc=$? msg
	[ "$UP_DONE" -eq 1 ] && return 0
	msg=$(cat "$FAILFILE" 2>/dev/null) ||
		msg="'$STEP' failed (exit $rc): $(tail -n 1 "$DC/up.log" 2>/dev/null)"
	printf 'devcluster: error: %s\n' "$msg" >&3
	if [ -n "${HCA_DC_KEEP:-}" ]; then
		printf 'devcluster: kept for inspection in %s (remove with: %s down)\n' "$DC" "$0" >&3
	else
		FAILFILE=
		(QUIET=1 cmd_down) >/dev/null 2>&1 || true
	fi
	exit 1
}

cmd_up() {
	local n=3 hcad=1 force=0 a k
	for a in "$@"; do
		case "$a" in
		--no-hcad) hcad=0 ;;
		--force) force=1 ;;
		[0-9]*) n=$a ;;
		*) usage ;;
		esac
	done
	{ [[ "$n" =~ ^[1-9]$ ]] && [ "$n" -le "$MAX_NODES" ]; } || fail "N must be 1 to $MAX_NODES, got '$n'"
	[ "$(id -u)" -eq 0 ] || fail "must run as root"
	check_dc_dir
	need_tools
	[ "$hcad" -eq 0 ] || [ -x "$BUILD/hcad" ] || hcad=0
	HUB=$NSP-hub
	if cluster_exists; then
		[ "$force" -eq 1 ] ||
			fail "a devcluster already exists ($DC or namespace $NSP-*): run '$0 down' first, or 'up --force'"
		a=$NSP
		cmd_down
		NSP=$a
		T0=${EPOCHREALTIME/[.,]/}
	fi
	N=$n
	HUB=$NSP-hub

	mkdir -p "$DC"
	touch "$DC/$MARK"
	printf 'N=%s\nNSP=%s\n' "$n" "$NSP" >"$DC/cluster.env"
	FAILFILE=$DC/.failed
	exec 3>&2 2>>"$DC/up.log"
	trap up_exit EXIT
	trap 'exit 130' INT TERM

	step "network: bridge in $HUB, nodes $NSP-node1..$n at $NET.1-$n/24"
	mkdir -p "$DC/shm" "$DC/ceph/log" "$DC/ceph/run" "$DC/ceph/crash" "$DC/ceph/mon"
	for k in $(seq "$n"); do mkdir -p "$(node_dir "$k")"; done
	mount -t tmpfs -o mode=1777,size=256m hca-dc-shm "$DC/shm"
	net_up "$n"

	step "configs: corosync authkey and nodelist, Ceph conf and cephx keys"
	FSID=$(cat /proc/sys/kernel/random/uuid)
	corosync_authkey
	for k in $(seq "$n"); do corosync_conf "$n" "$k"; done
	ceph_conf "$n"
	ceph_keys "$n"
	if [ "$hcad" -eq 1 ]; then
		step "pki: the cluster CA and a certificate per node (hcactl cluster init / cert issue)"
		hcad_pki "$n"
	fi

	step "nodes: private /run, shared /dev/shm, hostname nodeK"
	holders_up "$n"

	step "corosync: starting on $n nodes"
	for k in $(seq "$n"); do corosync_start "$k"; done

	step "ceph: mon on node1 ($NET.1)"
	ceph_mon_up
	step "ceph: $n memstore OSDs"
	ceph_osds_up "$n"
	ceph_osds_wait "$n"
	step "ceph: pool hca (rbd)"
	ceph_pool
	# as on a real node: storage first, then the agent that keeps its state there
	if [ "$hcad" -eq 1 ]; then
		step "hcad: starting on $n nodes ($BUILD/hcad)"
		for k in $(seq "$n"); do hcad_start "$k"; done
	fi

	step "corosync: waiting for $n quorate members on every node"
	corosync_wait "$n"
	if [ "$hcad" -eq 1 ]; then
		step "hcad: waiting for every node's hcad to answer with its storage ok"
		hcad_wait "$n"
	fi

	UP_DONE=1
	exec 2>&3 3>&-
	say "ready: $n nodes in $(elapsed) ($DC; '$0 exec node1 -- ceph -s')"
}

cmd_down() {
	local nodes k ns m
	load_env
	nodes=$(known_nodes)
	if [ ! -e "$DC" ] && [ -z "$nodes" ] && ! ns_exists "$HUB"; then
		say "no devcluster at $DC"
		return 0
	fi
	STEP=down
	# shellcheck disable=SC2086 # node numbers
	[ -z "$nodes" ] || { say "stopping hcad and its VMs"; hcad_stop_all $nodes; }
	say "stopping corosync, Ceph and the nodes"
	for k in $nodes; do signal_ns "$(node_ns "$k")" TERM; done
	signal_ns "$HUB" TERM
	for k in $nodes; do ns_stop_all "$(node_ns "$k")" 3 || true; done
	ns_stop_all "$HUB" 1 || true
	say "removing mounts and namespaces"
	# Deepest first; the per-node mounts died with the holders.
	for m in $(findmnt -rn -o TARGET | grep -E "^$DC(/|$)" | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m"
	done
	for k in $nodes; do
		ns=$(node_ns "$k")
		! ns_exists "$ns" || ip netns del "$ns"
	done
	! ns_exists "$HUB" || ip netns del "$HUB"
	if [ -e "$DC" ]; then
		[ -e "$DC/$MARK" ] || fail "$DC is not a devcluster directory (no $MARK): not removing it"
		rm -rf "$DC"
	fi
	say "down: nothing left of $DC"
}

# ---- status ----

json_str() { printf '"%s"' "${1//\"/\\\"}"; }

cmd_status() {
	local json=0 k ns addr cs view hcad osd osds health pools line
	[ "${1:-}" = --json ] && json=1
	load_env
	if [ ! -f "$DC/cluster.env" ]; then
		[ "$json" -eq 1 ] && echo '{"exists": false}' || echo "no devcluster at $DC"
		return 1
	fi
	osds=$(ceph_in osd dump -f json 2>/dev/null | python3 -c '
import json, sys
for o in json.load(sys.stdin)["osds"]:
    print(o["osd"], "up" if o["up"] else "down", "in" if o["in"] else "out")' 2>/dev/null) || osds=
	health=$(ceph_in -s -f json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin); h = d["health"]; m = d["osdmap"]
print(h["status"], ",".join(sorted(h["checks"])) or "-", m["num_osds"], m["num_up_osds"], m["num_in_osds"])' 2>/dev/null) ||
		health="unreachable - 0 0 0"
	pools=$(ceph_in osd pool ls 2>/dev/null | paste -sd, -) || pools=
	# shellcheck disable=SC2086 # fields
	set -- $health
	if [ "$json" -eq 0 ]; then
		echo "devcluster $DC: $N nodes, namespaces $HUB, $NSP-node1..$N"
		printf '%-6s %-14s %-14s %-9s %-8s %-8s %-14s %s\n' node netns address corosync members quorate osd hcad
	else
		printf '{"dir": %s, "nodes": [' "$(json_str "$DC")"
	fi
	for k in $(seq "$N"); do
		ns=$(node_ns "$k")
		ns_exists "$ns" || ns="-"
		addr=$(ip -n "$ns" -4 -o addr show eth0 2>/dev/null | awk '{print $4}')
		cs=stopped
		proc_in_ns "$ns" corosync && cs=running
		view=$(corosync_view "$k")
		hcad=stopped
		proc_in_ns "$ns" hcad && hcad=running
		osd=$(printf '%s\n' "$osds" | awk -v id=$((k - 1)) '$1 == id {print $2 "," $3}')
		if [ "$json" -eq 0 ]; then
			printf '%-6s %-14s %-14s %-9s %-8s %-8s %-14s %s\n' "node$k" "$ns" "${addr:--}" "$cs" \
				"${view% *}" "${view#* }" "osd.$((k - 1)) ${osd:-?}" "$hcad"
		else
			[ "$k" -eq 1 ] || printf ', '
			printf '{"name": "node%d", "netns": %s, "address": %s, "corosync": %s, "members": %d, "quorate": %s, "osd": %s, "hcad": %s}' \
				"$k" "$(json_str "$ns")" "$(json_str "${addr:-}")" "$(json_str "$cs")" "${view% *}" \
				"$([ "${view#* }" = yes ] && echo true || echo false)" "$(json_str "${osd:-unknown}")" "$(json_str "$hcad")"
		fi
	done
	if [ "$json" -eq 0 ]; then
		echo "ceph: $1 (checks: $2), osds: $3, $4 up, $5 in, pools: ${pools:--}"
		echo "corosync (node1):"
		in_node 1 corosync-quorumtool -s 2>/dev/null | sed -n '/^Quorum information/,$p' | sed 's/^/  /' ||
			echo "  not answering"
	else
		line=$(printf '"ceph": {"health": %s, "checks": %s, "osds": %s, "up": %s, "in": %s, "pools": %s}' \
			"$(json_str "$1")" "$(json_str "$2")" "$3" "$4" "$5" "$(json_str "$pools")")
		printf '], %s}\n' "$line"
	fi
}

cmd_exec() {
	local node=${1:-} k p
	shift || usage
	[ "${1:-}" = -- ] && shift
	[ $# -gt 0 ] || usage
	[[ "$node" =~ ^node[1-9]$ ]] || fail "exec: no such node '$node' (node1..node$MAX_NODES)"
	k=${node#node}
	load_env
	p=$(holder_pid "$k") || fail "exec: $node is not running (devcluster $DC)"
	# Entering a mount namespace moves to its root: keep the caller's working
	# directory when the node has it (all but its private /run, /dev/shm, /etc/...).
	if [ -d "/proc/$p/root$PWD" ]; then
		exec nsenter --target "$p" --mount --net --uts --wd="$PWD" -- "$@"
	fi
	exec nsenter --target "$p" --mount --net --uts -- "$@"
}

main() {
	local cmd=${1:-}
	[[ "$NSP" =~ ^[a-z][a-z0-9]{0,11}$ ]] || fail "HCA_DC_NETNS must be 1 to 12 lower-case letters or digits: '$NSP'"
	shift || usage
	case "$cmd" in
	up) cmd_up "$@" ;;
	down) [ "$(id -u)" -eq 0 ] || fail "must run as root"; cmd_down ;;
	status) cmd_status "$@" ;;
	exec) cmd_exec "$@" ;;
	*) usage ;;
	esac
}

main "$@"
