# shellcheck shell=bash
# devcluster nodes: the network (a hub namespace with a bridge, one namespace
# per node with a veth to it), the holder process that owns each node's mount
# namespace, running commands and daemons inside a node, and killing
# everything a node runs. Sourced by devcluster.sh.

node_ns() { echo "$NSP-node$1"; }
node_dir() { echo "$DC/n$1"; }
node_addr() { echo "$NET.$1"; }
hub_veth() { echo "veth-n$1"; }

# The hub: one bridge; node K: eth0 = NET.K/24, its peer enslaved in the hub.
# Nothing is configured in the root namespace.
net_up() {
	local k ns
	ip netns add "$HUB"
	ip -n "$HUB" link set lo up
	ip -n "$HUB" link add br0 type bridge forward_delay 0
	ip -n "$HUB" link set br0 up
	for k in $(seq "$1"); do
		ns=$(node_ns "$k")
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip -n "$HUB" link add "$(hub_veth "$k")" type veth peer name eth0 netns "$ns"
		ip -n "$HUB" link set "$(hub_veth "$k")" master br0 up
		ip -n "$ns" addr add "$(node_addr "$k")/24" dev eth0
		ip -n "$ns" link set eth0 up
	done
}

ns_inode() { stat -L -c %i "/run/netns/$1" 2>/dev/null; }

# The holder's pid, only if that process is still our holder (not a reused pid).
holder_pid() {
	local p
	p=$(cat "$(node_dir "$1")/holder.pid" 2>/dev/null) || return 1
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = sleep ] || return 1
	[ "$(stat -L -c %i "/proc/$p/ns/net" 2>/dev/null)" = "$(ns_inode "$(node_ns "$1")")" ]
	echo "$p"
}

holder_start() {
	local d
	d=$(node_dir "$1")
	setsid ip netns exec "$(node_ns "$1")" unshare --mount --uts --propagation private -- \
		bash "$LIBDIR/holder.sh" "$DC" "$1" </dev/null >>"$d/holder.log" 2>&1 3>&- 4>&- &
}

holders_up() {
	local k
	for k in $(seq "$1"); do holder_start "$k"; done
	for k in $(seq "$1"); do
		wait_until 10 holder_pid "$k" ||
			fail "node$k: its namespace holder did not start: $(tail -n 1 "$(node_dir "$k")/holder.log")"
	done
}

# in_node K CMD...: CMD inside node K (its network, mount and UTS namespaces).
in_node() {
	local k=$1 p
	shift
	p=$(holder_pid "$k") || { echo "devcluster: node$k is not running" >&2; return 1; }
	nsenter --target "$p" --mount --net --uts -- "$@"
}

# node_daemon K NAME CMD...: CMD in the foreground of its own session inside
# node K, output to DIR/nK/NAME.out, pid in DIR/nK/NAME.pid.
node_daemon() {
	local k=$1 name=$2 p d
	shift 2
	d=$(node_dir "$k")
	p=$(holder_pid "$k") || fail "node$k is not running"
	setsid nsenter --target "$p" --mount --net --uts -- "$@" </dev/null >>"$d/$name.out" 2>&1 3>&- 4>&- &
	echo $! >"$d/$name.pid"
}

# Is the daemon NAME that node_daemon started in node K still running?
daemon_alive() {
	local p
	p=$(cat "$(node_dir "$1")/$2.pid" 2>/dev/null) && proc_alive "$p"
}

# wait_daemon SECS K NAME CMD...: wait_until CMD succeeds, but give up as soon
# as the daemon NAME of node K has died.
wait_daemon() {
	local k=$2 name=$3 deadline=$((${EPOCHREALTIME/[.,]/} + $1 * 1000000))
	shift 3
	until "$@" >/dev/null 2>&1; do
		daemon_alive "$k" "$name" || return 1
		[ "${EPOCHREALTIME/[.,]/}" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# The pids of every process in network namespace NS.
ns_pids() { ip netns pids "$1" 2>/dev/null || true; }

# proc_in_ns NS COMM: is a process named COMM running in NS?
proc_in_ns() {
	local p
	for p in $(ns_pids "$1"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && return 0
	done
	return 1
}

proc_gone() { ! proc_in_ns "$1" "$2"; }

# signal_ns NS SIG [COMM]: signal the processes of NS (only those named COMM).
signal_ns() {
	local p
	for p in $(ns_pids "$1"); do
		[ -z "${3:-}" ] || [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$3" ] || continue
		kill "-$2" "$p" 2>/dev/null || true
	done
}

# Alive and not a zombie.
proc_alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

ns_empty() {
	local p
	for p in $(ns_pids "$1"); do proc_alive "$p" && return 1; done
	return 0
}

# Everything node namespace NS runs: SIGTERM, and SIGKILL what is left after SECS.
ns_stop_all() {
	signal_ns "$1" TERM
	wait_until "$2" ns_empty "$1" || signal_ns "$1" KILL
	wait_until 5 ns_empty "$1"
}
