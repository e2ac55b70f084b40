#!/usr/bin/env bash
# Shared-nothing live migration (--with-storage), for real, on a 3-node
# devcluster: the guests' disks are local qcow2 volumes of the node that
# runs them, and the test guest writes its checksummed journal to them the
# whole time (a record every 20 ms).
#  (a) s1 (8 GiB disk, 256 MiB of it written) node1 -> node2, asked on
#      node3: the VM runs on node2 at a new epoch, one QEMU; the volume is
#      on node2 and gone from node1; node2's file stays sparse; what left
#      node1's network interface is close to the written bytes plus the RAM,
#      not the disk's size; nothing left in either node's notes;
#  (b) and back node2 -> node1, asked on the source;
#  (c) refused, nothing moved: without --with-storage (the message names
#      it), --target-storage rbd;
#  (d) a destination without room (node3's storage a 200 MiB tmpfs): refused
#      before anything moves, naming the room;
#  (e) s2 (1 GiB written, so the disk phase lasts): cancel in the disk phase,
#      kill -9 of the destination QEMU in the disk phase and in the memory
#      phase, the destination cut off from the network during the mirror,
#      cancel in the memory phase (after the mirrors are in sync): each time
#      the VM runs on its source, same QEMU, the destination's volume is
#      removed, the source's is kept;
#  (f) kill -9 of the destination's hcad in the disk phase: rolled back; its
#      restarted hcad ends the QEMU it left and removes the volume it made;
#  (g) --target-storage rbd: cancelled after the mirror (the image made in
#      the pool is removed once Ceph lets go of it), then done: every node's
#      record names a raw RBD image, no local volume left anywhere, and the
#      VM restarts from the pool.
# At the end each guest is shut down and its journal, read from the volume
# where it lives now, verifies: one boot, no gap, nothing torn.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dc.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcs-$$
export HCA_DC_NETNS=hcas$$
export HCA_BUILD=$BUILD
HUB=$HCA_DC_NETNS-hub
G=$GUEST
TMP=$HCA_DC_DIR.tmp
MOUNTED=

cleanup() {
	for k in 1 2 3; do ip -n "$HUB" link set "veth-n$k" up 2>/dev/null; done
	[ -z "$MOUNTED" ] || on node3 umount "$MOUNTED" 2>/dev/null
	dc down >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP"

job_detail() { job_field "$1" "$2" "(d.get('progress') or {}).get('detail','')"; }
# job_in NODE JOB WORDS: the job's progress line says WORDS ("disk phase", "memory phase")
job_in() { case "$(job_detail "$1" "$2")" in *"$3"*) return 0 ;; esac; return 1; }
notes_empty() { [ -z "$(ls -A "$HCA_DC_DIR/n${1#node}/s/mig/" 2>/dev/null | grep -v sample)" ]; }
tx_bytes() {
	ip netns exec "$HCA_DC_NETNS-$1" sh -c 'cat /sys/class/net/*/statistics/tx_bytes' |
		awk '{s += $1} END {printf "%.0f\n", s}'
}
qemu_on() { qemu_list "$1" | sed -n "s/^$2://p"; }
# define_on NODE NAME WRITTEN-MiB: 128 MiB guest, 8 GiB local disk with
# WRITTEN MiB of data at 1 GiB (before it starts), the journal at 0
define_on() {
	ctl "$1" vm define --name "$2" --memory 128M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline "console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20 hca.dirty_mib=16 hca.dirty_rate=1" \
		--disk 8G >/dev/null &&
		qemu-io -f qcow2 -c "write -P 0x5a 1G ${3}M" "$(vol "$1" "$2")" >/dev/null &&
		ctl "$1" vm start "$2" >/dev/null
}
# after_rollback NODE(src) NAME PID DST JOB: the checks every failed case makes
after_rollback() {
	local src=$1 vm=$2 pid=$3 dst=$4 jid=$5 what=$6
	check "$what: the job did not succeed ($(job_phase "$src" "$jid"))" \
		bash -c "! [ \"\$1\" = succeeded ]" _ "$(job_phase "$src" "$jid")"
	diag "$what: $(job_field "$src" "$jid" "(d.get('error') or {}).get('message','')")"
	check "$what: $vm runs on $src, the same QEMU, and only there" \
		wait_for 30 bash -c "[ \"\$(qemu_list_str)\" = '$src:$pid' ]"
	check "$what: the record says $src" test "$(field "$dst" "$vm" owner)" = "$src"
	check "$what: the guest counts on" counting_on "$src" "$vm"
	check "$what: $dst removed the volume it made" wait_for 30 test ! -e "$(vol "$dst" "$vm")"
	check "$what: $src keeps its volume" test -s "$(vol "$src" "$vm")"
	check "$what: no notes left on $src and $dst" wait_for 90 bash -c \
		"[ -z \"\$(ls -A '$HCA_DC_DIR/n${src#node}/s/mig/' '$HCA_DC_DIR/n${dst#node}/s/mig/' | grep -E '\\.(in|out)\$')\" ]"
}
export -f qemu_list
export HCA_DC_NETNS

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done

# ---- (a) node1 -> node2, asked on node3 ----
check "define and start s1 on node1 (8 GiB local disk, 256 MiB written)" define_on node1 s1 256
U1=$(field node1 s1 uuid)
check "s1 counts on node1" wait_for 30 counting_on node1 s1
alloc=$(du -B1 "$(vol node1 s1)" | cut -f1)
t0=$(tx_bytes node1)
out=$(timeout 300 "$DCSH" exec node3 "$HCACTL" vm migrate s1 node2 --with-storage 2>&1)
rc=$?
t1=$(tx_bytes node1)
diag "$out"
check "s1 migrates node1 -> node2 with its disk (exit $rc)" test "$rc" = 0
check "the report names the disk phase" grep -q "disks: 1 volume" <<<"$out"
for n in node1 node2 node3; do check "$n says s1 is on node2" test "$(field $n s1 owner)" = node2; done
check "one QEMU of s1, on node2" test "$(qemu_list "$U1" | sed 's/:.*//')" = node2
check "s1 counts on node2" wait_for 20 counting_on node2 s1
check "s1's volume is gone from node1" wait_for 20 test ! -e "$(vol node1 s1)"
check "s1's volume is on node2" test -s "$(vol node2 s1)"
dst_alloc=$(du -B1 "$(vol node2 s1)" | cut -f1)
diag "source file held $((alloc >> 20)) MiB; node2's holds $((dst_alloc >> 20)) MiB of 8192; node1 sent $(((t1 - t0) >> 20)) MiB"
check "node2's file stays sparse (< 512 MiB allocated of 8 GiB)" test "$dst_alloc" -lt $((512 << 20))
check "node1 sent about the written bytes plus the RAM (< 640 MiB), not the 8 GiB disk" \
	test $((t1 - t0)) -lt $((640 << 20))
check "node1 sent at least the written bytes (the data did cross)" test $((t1 - t0)) -gt $((256 << 20))
check "no notes left on node1 and node2" bash -c "$(declare -f notes_empty); notes_empty node1 && notes_empty node2"
check "job show has the disk figures" \
	test "$(ctl node1 job list --json | json "[j for j in d if j['kind']=='migrate'][0]['migration']['disks']")" = 1

# ---- (b) back, asked on the source ----
out=$(timeout 300 "$DCSH" exec node2 "$HCACTL" vm migrate s1 node1 --with-storage 2>&1)
rc=$?
check "s1 migrates back node2 -> node1 (exit $rc)" test "$rc" = 0
check "one QEMU of s1, on node1" test "$(qemu_list "$U1" | sed 's/:.*//')" = node1
check "s1's volume is back on node1, gone from node2" \
	wait_for 20 bash -c "[ -s '$(vol node1 s1)' ] && [ ! -e '$(vol node2 s1)' ]"
check "s1 counts on node1" wait_for 20 counting_on node1 s1

# ---- (c) refusals ----
P1=$(qemu_on "$U1" node1)
expect_fail "without --with-storage: refused, naming it" "with-storage" \
	ctl node1 vm migrate s1 node2
expect_fail "--target-storage nfs: refused, naming what it takes" "target-storage.*local or rbd" \
	ctl node1 vm migrate s1 node2 --with-storage --target-storage nfs
expect_fail "--target-storage without --with-storage: refused" "with-storage" \
	ctl node1 vm migrate s1 node2 --target-storage rbd
check "s1 untouched: same QEMU on node1" test "$(qemu_list "$U1")" = "node1:$P1"

# ---- (d) a destination without room ----
check "node3's hcad stops" node_hcad_stop 3
MOUNTED=$HCA_DC_DIR/n3/vols
# in node3's own mount namespace, where its hcad looks
check "node3's storage becomes a 200 MiB file system" on node3 mount -t tmpfs -o size=200M hcas-small "$MOUNTED"
check "node3's hcad restarts on it" hcad_restart 3
expect_fail "node3 has no room for s1's disk: refused before anything moves" "no room" \
	ctl node1 vm migrate s1 node3 --with-storage
check "s1 untouched: same QEMU on node1, only there" test "$(qemu_list "$U1")" = "node1:$P1"
check "nothing was made on node3" test -z "$(on node3 ls -A "$MOUNTED" | grep -v '^\.lock$')"
check "node3's hcad stops again" node_hcad_stop 3
on node3 umount "$MOUNTED" && MOUNTED=
check "node3's hcad restarts on its own storage" hcad_restart 3

# ---- (e) faults, with a disk phase that lasts ----
check "define and start s2 on node1 (1 GiB written)" define_on node1 s2 1024
U2=$(field node1 s2 uuid)
check "s2 counts on node1" wait_for 30 counting_on node1 s2
P2=$(qemu_on "$U2" node1)
qemu_list_str() { qemu_list "$CUR_U" | tr '\n' ' ' | sed 's/ $//'; }
export -f qemu_list_str
export CUR_U=$U2

jid=$(ctl node1 vm migrate s2 node2 --with-storage --no-wait)
check "cancel: the migration reaches the disk phase" wait_for 60 job_in node1 "$jid" "disk phase"
check "cancel it from node3" quiet ctl node3 job cancel "$jid"
check "the job ends" wait_for 60 job_ended node1 "$jid"
check "cancelled" test "$(job_phase node1 "$jid")" = cancelled
after_rollback node1 s2 "$P2" node2 "$jid" "cancel in the disk phase"

jid=$(ctl node1 vm migrate s2 node3 --with-storage --no-wait)
check "kill: the migration reaches the disk phase" wait_for 60 job_in node1 "$jid" "disk phase"
DQ=$(qemu_on "$U2" node3)
check "kill -9 the destination QEMU ($DQ) in the disk phase" kill -9 "$DQ"
check "the job ends" wait_for 60 job_ended node1 "$jid"
after_rollback node1 s2 "$P2" node3 "$jid" "destination QEMU killed in the disk phase"

jid=$(ctl node1 vm migrate s2 node2 --with-storage --max-bandwidth 1 --compress none --no-wait)
check "kill: the migration reaches the memory phase" wait_for 120 job_in node1 "$jid" "memory phase"
DQ=$(qemu_on "$U2" node2)
check "kill -9 the destination QEMU ($DQ) in the memory phase" kill -9 "$DQ"
check "the job ends" wait_for 60 job_ended node1 "$jid"
after_rollback node1 s2 "$P2" node2 "$jid" "destination QEMU killed in the memory phase"

jid=$(ctl node1 vm migrate s2 node3 --with-storage --no-wait)
check "cut: the migration reaches the disk phase" wait_for 60 job_in node1 "$jid" "disk phase"
ip -n "$HUB" link set veth-n3 down
check "node3 cut off during the mirror: the job ends" wait_for 90 job_ended node1 "$jid"
ip -n "$HUB" link set veth-n3 up
for n in 1 2 3; do check "node$n: storage ok after the heal" wait_for 90 storage_ok node$n; done
after_rollback node1 s2 "$P2" node3 "$jid" "destination cut off during the mirror"

jid=$(ctl node1 vm migrate s2 node2 --with-storage --max-bandwidth 1 --compress none --no-wait)
check "cancel: the migration reaches the memory phase (mirrors in sync)" \
	wait_for 120 job_in node1 "$jid" "memory phase"
check "cancel it" quiet ctl node1 job cancel "$jid"
check "the job ends" wait_for 60 job_ended node1 "$jid"
after_rollback node1 s2 "$P2" node2 "$jid" "cancel after the mirror, before the commit"

# ---- (f) the destination's hcad killed in the disk phase ----
jid=$(ctl node1 vm migrate s2 node3 --with-storage --no-wait)
check "hcad kill: the migration reaches the disk phase" wait_for 60 job_in node1 "$jid" "disk phase"
check "kill -9 node3's hcad" node_hcad_stop 3 KILL
check "the job ends" wait_for 120 job_ended node1 "$jid"
check "node3's hcad restarts" hcad_restart 3
after_rollback node1 s2 "$P2" node3 "$jid" "destination hcad killed in the disk phase"

# ---- (g) into the cluster's pool: --target-storage rbd ----
# a small one: the devcluster's memstore OSDs hold 256 MiB each
check "define and start s3 on node1 (64 MiB written)" define_on node1 s3 64
U3=$(field node1 s3 uuid)
check "s3 counts on node1" wait_for 30 counting_on node1 s3
P3=$(qemu_on "$U3" node1)
export CUR_U=$U3
rbd_has() { on node1 rbd -c "$HCA_DC_DIR/ceph/ceph.conf" ls hca | grep -qx "$1"; }
rbd_gone() { ! rbd_has "$1"; }
jid=$(ctl node1 vm migrate s3 node2 --with-storage --target-storage rbd --max-bandwidth 0.5 --compress none --no-wait)
check "rbd: the migration reaches the memory phase" wait_for 120 job_in node1 "$jid" "memory phase"
check "rbd: cancel it (after the mirror, before the commit)" quiet ctl node1 job cancel "$jid"
check "rbd: the job ends" wait_for 60 job_ended node1 "$jid"
after_rollback node1 s3 "$P3" node2 "$jid" "into the pool, cancelled"
check "rbd: the image node2 made in the pool is removed" wait_for 90 rbd_gone s3-disk0
out=$(timeout 300 "$DCSH" exec node3 "$HCACTL" vm migrate s3 node2 --with-storage --target-storage rbd 2>&1)
rc=$?
diag "$out"
check "s3 moves node1 -> node2 into the RBD pool (exit $rc)" test "$rc" = 0
check "the report says into the pool" grep -q "into the RBD pool" <<<"$out"
shows() { ctl "$1" vm show s3 | grep -q "$2"; }
s3_on_rbd() { shows "$1" '^owner: *node2$' && shows "$1" '^disk disk0: .* raw rbd:hca/s3-disk0'; }
for n in node1 node2 node3; do
	check "$n: s3 is on node2, its disk a raw RBD image" wait_for 10 s3_on_rbd "$n"
done
check "one QEMU of s3, on node2" test "$(qemu_list "$U3" | sed 's/:.*//')" = node2
check "s3 counts on node2" wait_for 20 counting_on node2 s3
check "the local volume is gone from node1, none made on node2" \
	wait_for 20 bash -c "[ ! -e '$(vol node1 s3)' ] && [ ! -e '$(vol node2 s3)' ]"
check "the image is in the pool" rbd_has s3-disk0
restart_s3() { quiet ctl node2 vm shutdown s3 --timeout 60 && quiet ctl node2 vm start s3; }
check "s3 shuts down and starts again on node2, from the pool" restart_s3
check "s3 counts on node2 again" wait_for 30 counting_on node2 s3

# ---- the journals, from where the volumes are now ----
# journal_ok FILE BOOTS NAME
journal_ok() {
	local v
	v=$("$VERIFY" "$1" --json)
	diag "$3 journal: $v"
	check "$3: its journal verifies: $2 boot(s), no gap, nothing torn" \
		test "$(json "d['boots'], d['gaps'], d['corrupt'], d['ok']" <<<"$v")" = "$2 0 0 True"
	check "$3: the data written before the start is intact" \
		bash -c "qemu-io -f raw -c 'read -P 0x5a 1G 64M' '$1' | grep -q '^read 67108864/67108864'"
	rm -f "$1"
}
for vm in s1 s2; do
	check "shutdown $vm" quiet ctl node1 vm shutdown "$vm" --timeout 60
	qemu-img convert -O raw "$(vol node1 $vm)" "$TMP/$vm.raw"
	journal_ok "$TMP/$vm.raw" 1 "$vm"
done
check "shutdown s3" quiet ctl node2 vm shutdown s3 --timeout 60
on node1 qemu-img convert -O raw "rbd:hca/s3-disk0:conf=$HCA_DC_DIR/ceph/ceph.conf:id=admin" "$TMP/s3.raw"
journal_ok "$TMP/s3.raw" 2 "s3 (from the pool; restarted once)"

hca_done
