#!/usr/bin/env bash
# The devcluster, for real: three nodes in network namespaces, each with its
# own corosync (knet, crypto, votequorum), a memstore Ceph OSD and hcad. Checks
# membership and quorum everywhere, a RADOS write read back on another node,
# failure detection of a killed corosync (timed), rejoin, a network partition
# and its healing, and that `down` leaves nothing behind.
. "$(dirname "$0")/lib.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dct-$$
export HCA_DC_NETNS=hcat$$ # namespaces of its own: a developer's devcluster may run
export HCA_BUILD=$BUILD
HUB=$HCA_DC_NETNS-hub
PIDS=()

dc() { "$DCSH" "$@"; }
dc_diag() { "$DCSH" "$@" | sed 's/^/# /'; return "${PIPESTATUS[0]}"; } # its progress as TAP comments
in_node() { dc exec "node$1" -- "${@:2}"; }
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
secs_since() { # START_US: seconds since, one decimal
	local us=$(($(now_us) - $1))
	printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}

cleanup() {
	dc down >/dev/null 2>&1
	rm -f "/tmp/hca-dct-$$.obj" "/tmp/hca-dct-$$.back"
}
trap cleanup EXIT

# "MEMBERS QUORATE" as node K's corosync sees it, e.g. "3 yes".
view() {
	in_node "$1" corosync-quorumtool -s 2>/dev/null |
		awk '/^Nodes:/ {n=$2} /^Quorate:/ {q=tolower($2)} END {print (n ? n : 0), (q ? q : "no")}'
}
sees() { [ "$(view "$1")" = "$2" ]; }

# The pid of COMM in node K's network namespace.
node_proc() {
	local p
	for p in $(ip netns pids "$HCA_DC_NETNS-node$1" 2>/dev/null); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && { echo "$p"; return 0; }
	done
	return 1
}

osds_up_in() {
	in_node 1 ceph osd stat -f json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["num_osds"] == d["num_up_osds"] == d["num_in_osds"] == 3 else 1)'
}

# ---- up ----
t0=$(now_us)
out=$(dc up 3 2>&1)
rc=$?
ready=$(secs_since "$t0")
if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -q 'ready: 3 nodes'; then
	ok "up 3 succeeds and reports ready (${ready} s)"
else
	not_ok "up 3 succeeds and reports ready"
	printf '%s\n' "$out" | sed 's/^/# /'
	echo "Bail out! no devcluster"
	exit 1
fi
diag "time to ready, N=3: $ready s"
expect_fail "a second up is refused while one exists" "already exists" dc up 3

for k in 1 2 3; do
	check "node$k: corosync sees 3 members, quorate" sees "$k" "3 yes"
done
check "node2 is 10.250.0.2 on eth0 in its namespace" \
	bash -c "ip -n $HCA_DC_NETNS-node2 -4 -o addr show eth0 | grep -q ' 10.250.0.2/24 '"
check "exec: the node's hostname" test "$(in_node 3 hostname)" = node3
in_node 2 sh -c 'exit 7'
check "exec propagates the exit status" test $? -eq 7
check "exec passes stdin through" test "$(echo through | in_node 2 cat)" = through

# ---- Ceph ----
check "ceph: all 3 OSDs up and in" osds_up_in
head -c 65536 /dev/urandom >"/tmp/hca-dct-$$.obj"
check "rados put from node1" in_node 1 rados -p hca put dct-obj "/tmp/hca-dct-$$.obj"
check "rados get from node3 returns the same bytes" \
	bash -c "'$DCSH' exec node3 -- rados -p hca get dct-obj /tmp/hca-dct-$$.back &&
		cmp -s /tmp/hca-dct-$$.obj /tmp/hca-dct-$$.back"

# ---- hcad ----
if [ -x "$BUILD/hcad" ]; then
	for k in 1 2 3; do
		check "node$k: hcad answers node info as node$k" \
			bash -c "'$DCSH' exec node$k -- '$HCACTL' node info | grep -qE '^node: +node$k\$'"
	done
else
	diag "no $BUILD/hcad: hcad checks not run"
fi
check "status reports 3 quorate nodes" bash -c "'$DCSH' status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if [n[\"quorate\"] for n in d[\"nodes\"]] == [True] * 3 else 1)'"

# ---- corosync: a killed node, its return ----
cs3=$(node_proc 3 corosync)
t0=$(now_us)
kill -9 "$cs3"
if wait_for 5 sees 1 "2 yes"; then
	det=$(secs_since "$t0")
	diag "corosync failure detection (kill -9 on node3, seen by node1): $det s"
	check "node1 sees node3's corosync gone within 3 s ($det s)" test "${det%.*}" -lt 3
else
	not_ok "node1 sees node3's corosync gone within 3 s (not within 5 s: $(view 1))"
fi
check "node1 stays quorate with 2 of 3 votes" sees 1 "2 yes"
check "node2 stays quorate with 2 of 3 votes" sees 2 "2 yes"
check "node3's corosync restarts (exec node3 -- corosync)" in_node 3 corosync
t0=$(now_us)
if wait_for 10 sees 1 "3 yes"; then
	ok "node3 rejoins: node1 sees 3 members ($(secs_since "$t0") s)"
else
	not_ok "node3 rejoins: node1 sees 3 members ($(view 1))"
fi
check "node3 sees 3 members, quorate" wait_for 5 sees 3 "3 yes"

# ---- a partition, healed ----
ip -n "$HUB" link set veth-n3 down
t0=$(now_us)
if wait_for 10 sees 3 "1 no"; then
	ok "partitioned node3 loses quorum: 1 of 3 ($(secs_since "$t0") s)"
else
	not_ok "partitioned node3 loses quorum: 1 of 3 ($(view 3))"
fi
check "node1 keeps quorum in the partition (2 of 3)" wait_for 5 sees 1 "2 yes"
check "node2 keeps quorum in the partition (2 of 3)" wait_for 5 sees 2 "2 yes"
ip -n "$HUB" link set veth-n3 up
t0=$(now_us)
healed() { sees 1 "3 yes" && sees 2 "3 yes" && sees 3 "3 yes"; }
if wait_for 15 healed; then
	ok "healed: 3 quorate members on every node ($(secs_since "$t0") s)"
else
	not_ok "healed: 3 quorate members on every node ($(view 1) / $(view 2) / $(view 3))"
fi

# ---- down ----
for k in 1 2 3; do
	# shellcheck disable=SC2207 # pids
	PIDS+=($(ip netns pids "$HCA_DC_NETNS-node$k" 2>/dev/null))
done
diag "${#PIDS[@]} processes in the nodes before down"
check "down succeeds" dc_diag down
left=
for p in "${PIDS[@]}"; do
	st=$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) || continue
	[ "$st" = Z ] || [ "$st" = X ] || left+=" $p"
done
check "down: none of the nodes' ${#PIDS[@]} processes is left${left:+ (left:$left)}" test -z "$left"
no_proc_mentions() { ! pgrep -f -- "$1" >/dev/null; }
check "down: no process mentions $HCA_DC_DIR" no_proc_mentions "$HCA_DC_DIR"
check "down: no namespace left" bash -c "! ip netns list | grep -q '^$HCA_DC_NETNS-'"
check "down: no mount left" bash -c "! findmnt -rn -o TARGET | grep -q '^$HCA_DC_DIR'"
check "down: no file left" test ! -e "$HCA_DC_DIR"
# libqb's files (qb-SERVERPID-CLIENTPID-..., qb-corosync-PID-blackbox-*) went
# to the devcluster's own /dev/shm, never the host's.
shm_ours() {
	local p
	for p in "${PIDS[@]}"; do
		compgen -G "/dev/shm/qb-*-$p-*" >/dev/null && return 0
		compgen -G "/dev/shm/qb-$p-*" >/dev/null && return 0
	done
	return 1
}
if shm_ours; then not_ok "down: no /dev/shm file of the nodes on the host"; else ok "down: no /dev/shm file of the nodes on the host"; fi
check "down again is fine" dc_diag down

hca_done
