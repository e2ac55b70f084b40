#!/usr/bin/env bash
# hca-test-lane: last
# Live migration under faults, on a real 3-node devcluster: each case ends
# with the VM running on exactly one node (its vCPUs seen running from
# outside: /proc thread times), the owner record telling which, and never
# two copies at any sample.
#  - the store unreachable at the commit (every OSD SIGSTOPped after the
#    switchover): the guest stays paused on both sides while Ceph hangs, then
#    the migration rolls back and the source runs on (same QEMU);
#  - kill -9 of the source's hcad while its commit hangs on Ceph: after the
#    restart the source resumes its guest, the job is resolved, the
#    destination drops its QEMU;
#  - the destination cut off from the network mid-transfer: rolled back;
#  - the source's corosync killed mid-transfer (quorum lost): rolled back;
#  - kill -9 of the destination's hcad mid-transfer: rolled back, and the
#    destination's restarted hcad ends the QEMU it left.
# The guest has no disk here, so the switchover itself never waits for Ceph:
# only the commit does (a guest writing to RBD would hang in QEMU's flush
# first, before any of hca's steps).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dc.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcf-$$
export HCA_DC_NETNS=hcaf$$
export HCA_BUILD=$BUILD
HUB=$HCA_DC_NETNS-hub
G=$GUEST
STOPPED=()

cleanup() {
	[ ${#STOPPED[@]} -eq 0 ] || kill -CONT "${STOPPED[@]}" 2>/dev/null
	for k in 1 2 3; do ip -n "$HUB" link set "veth-n$k" up 2>/dev/null; done
	dc down >/dev/null 2>&1
}
trap cleanup EXIT

job_at() { [ "$(job_phase "$1" "$2")" = "$3" ]; }

# CPU ticks of a QEMU's vCPU threads ("CPU 0/TCG", "CPU 0/KVM").
vcpu_ticks() {
	local t n=0 c
	for t in /proc/"$1"/task/*; do
		c=$(cat "$t/comm" 2>/dev/null) || continue
		case "$c" in CPU\ *) n=$((n + $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0))) ;; esac
	done
	echo "$n"
}
# The QEMUs of uuid $1 whose guest ran during the last $2 seconds.
running_copies() {
	local u=$1 s=$2 e p before=() n=0 i=0
	local list
	mapfile -t list < <(qemu_list "$u")
	for e in "${list[@]}"; do before+=("$(vcpu_ticks "${e#*:}")"); done
	sleep "$s"
	for e in "${list[@]}"; do
		p=${e#*:}
		[ -d "/proc/$p" ] && [ "$(vcpu_ticks "$p")" -gt "${before[$i]}" ] && n=$((n + 1))
		i=$((i + 1))
	done
	echo "$n"
}
one_running_on() { # UUID NODE PID: exactly one QEMU, that one, its guest running
	[ "$(qemu_list "$1")" = "$2:$3" ] && [ "$(running_copies "$1" 1)" = 1 ]
}
osd_pids() {
	local k p
	for k in 1 2 3; do
		for p in $(ip netns pids "$HCA_DC_NETNS-node$k" 2>/dev/null); do
			[ "$(cat "/proc/$p/comm" 2>/dev/null)" = ceph-osd ] && echo "$p"
		done
	done
}
# FROM VM TO: a migration that takes a while (its first pass about 12 s)
# but surely converges (the guest dirties an eighth of the cap); prints the
# job id
migrate_slow() {
	ctl "$1" vm migrate "$2" "$3" --max-bandwidth 8 --compress none --no-wait
}
define_busy() { # NODE NAME: no disk (see the header), memory kept dirty
	ctl "$1" vm define --name "$2" --memory 96M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline "console=ttyS0 quiet hca.dirty_mib=16 hca.dirty_rate=1" >/dev/null &&
		ctl "$1" vm start "$2" >/dev/null
}

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done
check "define and start f1 on node1 (no disk, memory dirtied)" define_busy node1 f1
U=$(field node1 f1 uuid)
P1=$(qemu_list "$U" | sed -n 's/^node1://p')
check "f1's guest runs on node1 only (pid $P1)" one_running_on "$U" node1 "$P1"
E0=$(field node1 f1 owner_epoch)

# ---- the store unreachable at the commit ----
# a slow migration; every OSD stopped during its transfer: the stream needs
# no Ceph (no disk), so it completes, and the commit's CAS hangs
jid=$(migrate_slow node2 f1 node2)
check "slow migration $jid node1 -> node2 in transfer" wait_for 60 job_at node1 "$jid" transfer
mapfile -t STOPPED < <(osd_pids)
kill -STOP "${STOPPED[@]}"
diag "${#STOPPED[@]} OSDs stopped"
check "the stream completes; the job waits in commit while Ceph hangs" wait_for 150 job_at node1 "$jid" commit
sleep 2
check "no copy of the guest runs anywhere meanwhile (both QEMUs paused)" test "$(running_copies "$U" 3)" = 0
check "two QEMUs of f1 exist, the source and the incoming one" test "$(qemu_list "$U" | wc -l)" = 2
check "the job still waits in commit" job_at node1 "$jid" commit
kill -CONT "${STOPPED[@]}"
STOPPED=()
check "Ceph back: the job ends" wait_for 60 job_ended node1 "$jid"
ph=$(job_phase node1 "$jid")
diag "after Ceph came back: $ph: $(job_field node1 "$jid" "(d.get('error') or {}).get('message','')")"
# the hung write may have reached the OSD: committed or not, exactly one
# copy runs, where the record says
OWN=$(field node3 f1 owner)
if [ "$ph" = succeeded ]; then
	check "committed: the record says node2 at epoch $((E0 + 1))" test "$OWN-$(field node3 f1 owner_epoch)" = "node2-$((E0 + 1))"
	P2=$(qemu_list "$U" | sed -n 's/^node2://p')
	check "f1 runs on node2 only" wait_for 20 one_running_on "$U" node2 "$P2"
else
	check "rolled back: the record still says node1 at epoch $E0" test "$OWN-$(field node3 f1 owner_epoch)" = "node1-$E0"
	check "f1 runs on node1 only, the same QEMU" wait_for 20 one_running_on "$U" node1 "$P1"
fi
OWN=$(field node3 f1 owner)
POWN=$(qemu_list "$U" | sed -n "s/^$OWN://p")

# ---- kill -9 of the source's hcad while its commit hangs on Ceph ----
SRC=$OWN
DST=node3
[ "$SRC" = node3 ] && DST=node2
k=${SRC#node}
hp=$(hcad_pid "$k")
jid=$(migrate_slow "$SRC" f1 "$DST")
check "slow migration $SRC -> $DST in transfer" wait_for 60 job_at "$SRC" "$jid" transfer
mapfile -t STOPPED < <(osd_pids)
kill -STOP "${STOPPED[@]}"
check "the job waits in commit while Ceph hangs" wait_for 150 job_at "$SRC" "$jid" commit
kill -9 "$hp"
diag "source $SRC's hcad killed in the commit"
kill -CONT "${STOPPED[@]}"
STOPPED=()
check "$SRC's hcad restarts" hcad_restart "$k"
check "the interrupted job is resolved at the restart" wait_for 30 job_ended "$SRC" "$jid"
diag "job after the restart: $(job_phase "$SRC" "$jid"): $(job_field "$SRC" "$jid" "d['note']")"
OWN=$(field node1 f1 owner)
if [ "$OWN" = "$SRC" ]; then
	check "not committed: f1 runs on $SRC only, the same QEMU" wait_for 30 one_running_on "$U" "$SRC" "$POWN"
else
	P=$(qemu_list "$U" | sed -n "s/^$OWN://p")
	check "committed: f1 runs on $OWN only" wait_for 30 one_running_on "$U" "$OWN" "$P"
fi
OWN=$(field node1 f1 owner)
POWN=$(qemu_list "$U" | sed -n "s/^$OWN://p")

# ---- the destination cut off mid-transfer ----
SRC=$OWN
DST=node1
[ "$SRC" = node1 ] && DST=node2
jid=$(migrate_slow "$SRC" f1 "$DST")
check "slow migration $SRC -> $DST in transfer" wait_for 60 job_at "$SRC" "$jid" transfer
ip -n "$HUB" link set "veth-n${DST#node}" down
check "the destination cut off: the job fails" wait_for 60 job_ended "$SRC" "$jid"
diag "$(job_phase "$SRC" "$jid"): $(job_field "$SRC" "$jid" "(d.get('error') or {}).get('message','')")"
check "the job did not succeed" bash -c "! [ \"\$1\" = succeeded ]" _ "$(job_phase "$SRC" "$jid")"
check "f1 runs on $SRC, the same QEMU; the destination's guest never ran" \
	wait_for 20 bash -c "[ \"\$(ip netns pids $HCA_DC_NETNS-${SRC} | grep -c '^$POWN\$')\" = 1 ]"
check "no copy of f1 runs on $DST" test "$(running_copies "$U" 2)" = 1
ip -n "$HUB" link set "veth-n${DST#node}" up
check "healed: the destination ends the QEMU it held" wait_for 60 one_running_on "$U" "$SRC" "$POWN"
check "the record says $SRC" test "$(field "$SRC" f1 owner)" = "$SRC"
# the cut node held the mon (node1) or an OSD: Ceph needs a moment
for n in 1 2 3; do check "node$n: storage ok after the heal" wait_for 90 storage_ok node$n; done

# ---- the source's corosync killed mid-transfer ----
DST=node3
[ "$SRC" = node3 ] && DST=node1
jid=$(migrate_slow "$SRC" f1 "$DST")
check "slow migration $SRC -> $DST in transfer" wait_for 60 job_at "$SRC" "$jid" transfer
# the nodes share the PID namespace: this node's corosync by its network namespace
for p in $(ip netns pids "$HCA_DC_NETNS-$SRC"); do
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = corosync ] && kill -9 "$p"
done
check "the source lost quorum: the job fails" wait_for 30 job_ended "$SRC" "$jid"
diag "$(job_phase "$SRC" "$jid"): $(job_field "$SRC" "$jid" "(d.get('error') or {}).get('message','')")"
check "f1 runs on $SRC only, the same QEMU" wait_for 30 one_running_on "$U" "$SRC" "$POWN"
on "$SRC" corosync >/dev/null 2>&1
check "$SRC quorate again" wait_for 30 bash -c "[ \"\$('$DCSH' exec $SRC -- '$HCACTL' cluster status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"quorate\"])')\" = True ]"

# ---- kill -9 of the destination's hcad mid-transfer ----
k=${DST#node}
hp=$(hcad_pid "$k")
jid=$(migrate_slow "$SRC" f1 "$DST")
check "slow migration $SRC -> $DST in transfer" wait_for 60 job_at "$SRC" "$jid" transfer
kill -9 "$hp"
check "the destination's hcad gone: the job fails before any commit" wait_for 150 job_ended "$SRC" "$jid"
diag "$(job_phase "$SRC" "$jid"): $(job_field "$SRC" "$jid" "(d.get('error') or {}).get('message','')")"
check "f1's guest still runs on $SRC (same QEMU), the record says $SRC" \
	bash -c "[ \"\$1\" = $SRC ] && kill -0 $POWN" _ "$(field "$SRC" f1 owner)"
check "$DST's hcad restarts" hcad_restart "$k"
check "it ends the paused QEMU left there: f1 runs on $SRC only" wait_for 30 one_running_on "$U" "$SRC" "$POWN"

# ---- and a clean migration still works afterwards ----
check "f1 migrates $SRC -> $DST" ctl "$DST" vm migrate f1 "$DST"
P=$(qemu_list "$U" | sed -n "s/^$DST://p")
check "f1 runs on $DST only" wait_for 20 one_running_on "$U" "$DST" "$P"

# ---- three at once out of one node: two run, the third waits its turn ----
define_two() { define_busy "$1" q1 && define_busy "$1" q2; }
check "define and start q1, q2 on $DST" define_two "$DST"
TO=node1
[ "$DST" = node1 ] && TO=node2
j1=$(migrate_slow "$DST" f1 "$TO")
j2=$(migrate_slow "$DST" q1 "$TO")
j3=$(migrate_slow "$DST" q2 "$TO")
check "the third migration out of $DST is queued (mig_max_out = 2)" job_at "$DST" "$j3" queued
check "the first two are under way" bash -c "[ \"\$1\" != queued ] && [ \"\$2\" != queued ]" _ \
	"$(job_phase "$DST" "$j1")" "$(job_phase "$DST" "$j2")"
check "all three end, each succeeded" wait_for 150 bash -c "for j in $j1 $j2 $j3; do \
	[ \"\$('$DCSH' exec $DST -- '$HCACTL' job show \$j --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"phase\"])')\" = succeeded ] || exit 1; done"
for v in f1 q1 q2; do
	u=$(field "$TO" "$v" uuid)
	p=$(qemu_list "$u" | sed -n "s/^$TO://p")
	check "$v runs on $TO only" wait_for 20 one_running_on "$u" "$TO" "$p"
	ctl "$TO" vm stop "$v" --force >/dev/null 2>&1
done

hca_done
