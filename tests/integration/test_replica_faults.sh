#!/usr/bin/env bash
# hca-test-lane: side
# Asynchronous replication under faults, on a 3-node devcluster: f1 runs on
# node1 (a local qcow2 disk, the test guest's journal a record every 20 ms)
# and replicates to node2 every 2 s. Nothing is lost, no point is ever
# half-applied: after each fault the newest point is a journal that
# verifies, and cycles go on.
#  (a) the replica's storage full (node2's replica directory a 24 MiB
#      tmpfs, the first copy 64 MiB): the cycle fails saying so, no point
#      appears; with room again, the next cycle makes the first point;
#  (b) node2 cut off the network for 15 s: cycles fail (the health says so),
#      then the backlog ships in the next cycle once it is back;
#  (c) node2's qemu-storage-daemon killed (-9): the next cycle starts it
#      again on the same points (no full copy);
#  (d) f1's QEMU killed (-9) and f1 started again: its change bitmap is gone
#      with it, so the next cycle reads the disk whole and compares block
#      digests with the replica's point (a resync): it ships at most 1.1x
#      the blocks that really differ, and the points verify across both
#      boots;
#  (e) f1 live-migrates with its disk to node3: node3 takes the relation
#      over and ships from then on (no bitmap moves: one resync, no full
#      copy); then onto node2, its replica node: that is a failover, and
#      the relation says so;
#  (f) disable while the first copy of another relation is under way
#      (enabled again right away): the cycle stops, nothing is left in the
#      VM's QEMU (the next enable's cycles run), the replica is removed;
#      then, with node3's hcad stopped so that cycles hang, a migration
#      asked for during a cycle waits for it, and is cancelled cleanly;
#  (g) a VM whose disk is an RBD image replicates to node3's local storage;
#      its newest point verifies, a test failover boots it there; a planned
#      failover starts it on node3 from a local volume made of its last
#      point (the record's disk rewritten in the owner CAS), loses nothing,
#      and removes the old image;
#  (h) node1 dies (hcad, corosync, QEMU killed): an unplanned failover of a
#      second RBD VM is refused while its image is in the pool (starting it
#      from the image loses nothing); forced, it runs on node3 from a point.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dc.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcrf-$$
export HCA_DC_NETNS=hcarf$$
export HCA_BUILD=$BUILD
HUB=$HCA_DC_NETNS-hub
G=$GUEST
TMP=$HCA_DC_DIR.tmp
MOUNTED=

cleanup() {
	for k in 1 2 3; do ip -n "$HUB" link set "veth-n$k" up 2>/dev/null; done
	[ -z "$MOUNTED" ] || on node2 umount -l "$MOUNTED" 2>/dev/null
	dc down >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP"

point_above() { [ "$(st node3 "${2:-f1}" last_point 2>/dev/null || echo 0)" -gt "$1" ]; }
# point_verifies BOOTS WHAT: the newest point of f1 on node2 is a journal
# with BOOTS boots, no gap, nothing torn
point_verifies() {
	local v
	rep_point_raw node2 f1 "$TMP/p.raw" || { not_ok "$2: the newest point reads out"; return; }
	v=$(journal_verify "$TMP/p.raw" 2>/dev/null)
	rm -f "$TMP/p.raw"
	diag "$2: newest point: $v"
	check "$2: the newest point verifies ($1 boot(s), no gap, nothing torn)" \
		test "$(json "d['gaps'], d['corrupt'], d['boots']" <<<"$v")" = "0 0 $1"
}
define_on() {
	ctl node1 vm define --name "$1" --memory 128M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline 'console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20' --disk 4G >/dev/null &&
		qemu-io -f qcow2 -c "write -P 0x5a 1G ${2}M" "$(vol node1 "$1")" >/dev/null &&
		ctl node1 vm start "$1" >/dev/null
}

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done
check "define and start f1 on node1 (4 GiB disk, 64 MiB written)" define_on f1 64
check "f1 counts on node1" wait_for 30 counting_on node1 f1

# ---- (a) the replica's storage full ----
MOUNTED=$HCA_DC_DIR/n2/s/replica
check "node2's replica storage becomes a 24 MiB file system" \
	on node2 mount -t tmpfs -o size=24M hcarf-small "$MOUNTED"
check "enable f1 -> node2 every 2 s" quiet ctl node3 replica enable f1 --to node2 --interval 2s --keep 4
failed_above() { [ "$(st node3 f1 failed_cycles)" -gt "$1" ]; }
check "the first copy fails" wait_for 60 failed_above 0
err=$(st node3 f1 last_error)
diag "last error: $err"
check "the error says the replica's storage is full" grep -qi "space" <<<"$err"
check "no point was made" test "$(st node3 f1 last_point)" = 0
np=$(ctl node3 replica points f1 --json 2>/dev/null | json "len(d['points'])" 2>/dev/null || echo 0)
check "node2 lists no point ($np)" test "$np" = 0
check "room again (the file system grows to 512 MiB)" \
	on node2 mount -o remount,size=512M "$MOUNTED"
check "the first point comes" wait_for 90 point_above 0
point_verifies 1 "(a)"

# ---- (b) node2 cut off for 15 s ----
ip -n "$HUB" link set veth-n2 down
sleep 3 # a cycle that ended just before: its figures land
p=$(st node3 f1 last_point); f=$(st node3 f1 failed_cycles); b=$(st node3 f1 bytes_raw)
sleep 12
check "cycles fail while node2 is away" failed_above "$f"
h=$(st node3 f1 health)
check "the health says so ($h)" test "$h" != ok
check "no point while node2 is away" test "$(st node3 f1 last_point)" = "$p"
ip -n "$HUB" link set veth-n2 up
check "node2's storage is ok again" wait_for 60 storage_ok node2
check "points again once node2 is back" wait_for 90 point_above "$p"
b2=$(st node3 f1 bytes_raw)
diag "after the partition: $(((b2 - b) >> 10)) KiB shipped (the guest writes ~200 KiB/s)"
check "the backlog shipped (at least 15 s of the guest's writes, 2 MiB)" test $((b2 - b)) -gt $((2 << 20))
check "no full copy for it" test "$(st node3 f1 full_copies)" = 1
point_verifies 1 "(b)"

# ---- (c) the replica's daemon killed ----
qpid_of() { on node2 cat "$(rdir node2 f1)/qsd.pid"; }
qpid=$(qpid_of)
check "node2's qemu-storage-daemon killed (-9)" kill -9 "$qpid"
p=$(st node3 f1 last_point)
check "points go on" wait_for 60 point_above $((p + 1))
check "on the same points: no full copy" test "$(st node3 f1 full_copies)" = 1
new_daemon() { local q; q=$(qpid_of) && [ "$q" != "$qpid" ] && kill -0 "$q"; }
check "a new daemon runs" new_daemon
point_verifies 1 "(c)"

# ---- (d) f1's QEMU killed ----
# Replication paused around it, so that the point before and the first point
# after can be read and compared block by block.
check "pause f1's replication" quiet ctl node3 replica pause f1
sleep 3
p0=$(st node3 f1 last_point)
check "the point before reads out" rep_point_raw node2 f1 "$TMP/before.raw"
U=$(field node1 f1 uuid)
qp=$(qemu_list "$U" | sed 's/.*://')
check "f1's QEMU killed (-9)" kill -9 "$qp"
stopped() { case "$(field node1 f1 state)" in stopped|crashed) return 0 ;; esac; return 1; }
check "f1 is seen stopped (or crashed)" wait_for 30 stopped
check "f1 starts again" quiet ctl node1 vm start f1
check "f1 counts on node1" wait_for 30 counting_on node1 f1
check "resume" quiet ctl node3 replica resume f1
check "a point comes" wait_for 90 point_above "$p0"
check "pause again" quiet ctl node3 replica pause f1
sleep 3
check "its bitmap went with QEMU: the disk was compared by digests (a resync)" \
	test "$(st node3 f1 resyncs)" -ge 1
check "no full copy for it" test "$(st node3 f1 full_copies)" = 1
check "the point after reads out" rep_point_raw node2 f1 "$TMP/after.raw"
# the 4 KiB blocks that really differ, against the raw bytes the points since shipped
differ=$(python3 - "$TMP/before.raw" "$TMP/after.raw" <<'PY'
import os, sys
a, b = (open(p, 'rb') for p in sys.argv[1:3])
size = os.fstat(a.fileno()).st_size
def data(f):
    out, off = [], 0
    while off < size:
        try:
            s = os.lseek(f.fileno(), off, os.SEEK_DATA)
        except OSError:
            break
        e = os.lseek(f.fileno(), s, os.SEEK_HOLE)
        out.append((s, e)); off = e
    return out
merged = []
for s, e in sorted(data(a) + data(b)):
    s -= s % 4096
    if merged and s <= merged[-1][1]:
        merged[-1][1] = max(merged[-1][1], e)
    else:
        merged.append([s, e])
n = 0
for s, e in merged:
    a.seek(s); b.seek(s)
    for off in range(s, e, 1 << 20):
        x, y = a.read(1 << 20), b.read(1 << 20)
        if x != y:
            for k in range(0, max(len(x), len(y)), 4096):
                if x[k:k + 4096] != y[k:k + 4096]:
                    n += 1
print(n)
PY
)
shipped=$(ctl node3 replica points f1 --json | json "sum(p['bytes'] for p in d['points'] if p['id'] > $p0)")
diag "(d) the resync shipped $((shipped >> 10)) KiB; $((differ * 4)) KiB of 4 KiB blocks really differ"
check "it shipped at most 1.1x the blocks that differ ($shipped bytes against $((differ * 4096)))" \
	test "$shipped" -le $((differ * 4096 * 11 / 10))
rm -f "$TMP/before.raw" "$TMP/after.raw"
check "resume" quiet ctl node3 replica resume f1
p=$(st node3 f1 last_point)
check "another point" wait_for 30 point_above "$p"
point_verifies 2 "(d)"

# ---- (e) f1 migrates (with its disk) to node3, then onto node2 ----
p=$(st node3 f1 last_point); fc=$(st node3 f1 full_copies); rs=$(st node3 f1 resyncs)
out=$(timeout 300 "$DCSH" exec node1 "$HCACTL" vm migrate f1 node3 --with-storage 2>&1)
check "f1 migrates to node3 with its disk" test $? = 0
diag "$out"
check "f1 counts on node3" wait_for 30 counting_on node3 f1
src_is() { [ "$(st node2 f1 source)" = "$1" ]; }
check "node3 takes the relation over: it ships to node2 now" wait_for 30 src_is node3
check "points go on from node3" wait_for 90 point_above $((p + 1))
check "no bitmap came with it: its disk was compared by digests once, no full copy" \
	test "$(st node3 f1 resyncs) $(st node3 f1 full_copies)" = "$((rs + 1)) $fc"
point_verifies 2 "(e)"
out=$(timeout 300 "$DCSH" exec node3 "$HCACTL" vm migrate f1 node2 --with-storage 2>&1)
check "f1 migrates onto node2, its replica node" test $? = 0
diag "$out"
moved_here() { [ "$(st node1 f1 state)" = failed-over ] && grep -q "replica node" <<<"$(st node1 f1 last_error)"; }
check "its relation says failed-over, and why (it cannot replicate to itself)" wait_for 30 moved_here
diag "$(st node1 f1 last_error)"
check "f1 counts on node2" counting_on node2 f1

# ---- (f) disable during a first copy ----
check "define and start f2 on node1 (4 GiB disk, 256 MiB written)" define_on f2 256
check "f2 counts on node1" wait_for 30 counting_on node1 f2
check "enable f2 -> node3" quiet ctl node1 replica enable f2 --to node3 --interval 2s
cycling() { grep -aq "replica: vm f2: cycle .* on point 0" "$HCA_DC_DIR/n1/hcad.log"; }
check "its first copy starts" wait_for 30 cycling
check "disable it while the copy runs" quiet ctl node1 replica disable f2
check "node3 removes what it had" wait_for 30 test ! -e "$(rdir node3 f2)"
check "enable f2 again at once" quiet ctl node1 replica enable f2 --to node3 --interval 2s
check "a point comes: nothing of the stopped cycle was left in its QEMU" wait_for 120 point_above 0 f2
# A migration asked for while a cycle is under way waits for it (no new
# cycle starts meanwhile). node3's hcad stopped makes f2's cycles hang (3 s
# each, then a retry 2 s later); a migration is asked for until one lands
# during a cycle, each one that does not is cancelled (5 MiB/s: it cannot
# finish first).
n3=$(hcad_pid 3)
kill -STOP "$n3"
waited=""
for try in 1 2 3 4 5 6 7 8 9 10; do
	sleep 0.7
	jid=$(ctl node1 vm migrate f2 node2 --with-storage --no-wait --max-bandwidth 5 --compress none)
	[ -n "$jid" ] || break
	seen=""
	for _ in $(seq 20); do
		d=$(job_field node1 "$jid" "d['phase'], d['progress']['detail']" 2>/dev/null)
		case "$d" in
		*"waiting for the replication cycle"*) seen=waiting; break ;;
		check*|prepare*|transfer*) seen=moving; break ;;
		succeeded*|failed*|cancelled*) seen=ended; break ;;
		esac
		sleep 0.1
	done
	ctl node1 job cancel "$jid" >/dev/null 2>&1
	wait_for 60 job_ended node1 "$jid"
	[ "$seen" = waiting ] && { waited=$jid; break; }
done
kill -CONT "$n3"
check "a migration asked for during a cycle waits for it (try $try, $jid)" test -n "$waited"
check "cancelled while it waited: the job ends cancelled" test "$(job_phase node1 "$jid")" = cancelled
diag "$(job_field node1 "$jid" "(d['error'] or {}).get('message') or d['note']")"
check "f2 still runs on node1, the same relation" \
	test "$(ctl node1 vm show f2 --json | json "d['owner']") $(st node1 f2 source)" = "node1 node1"
check "f2 counts on node1 still" wait_for 10 counting_on node1 f2
p=$(st node1 f2 last_point)
check "its points go on" wait_for 60 point_above "$p" f2
# ---- (g) a VM whose disk is an RBD image ----
define_rbd() { # NAME SIZE: on node1, its disk an RBD image
	ctl node1 vm define --name "$1" --memory 128M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline 'console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20' --disk "rbd:$2" >/dev/null &&
		ctl node1 vm start "$1" >/dev/null
}
check "define and start b1 on node1 (a 256 MiB RBD disk)" define_rbd b1 256M
check "b1 counts on node1" wait_for 30 counting_on node1 b1
check "enable b1 -> node3 every 2 s" quiet ctl node1 replica enable b1 --to node3 --interval 2s
check "a point comes" wait_for 90 point_above 0 b1
p=$(st node3 b1 last_point)
check "and another" wait_for 30 point_above "$p" b1
check "b1's newest point on node3 reads out" rep_point_raw node3 b1 "$TMP/b.raw"
v=$(journal_verify "$TMP/b.raw" 2>/dev/null)
rm -f "$TMP/b.raw"
diag "b1's newest point: $v"
check "it verifies: no gap, nothing torn, one boot" \
	test "$(json "d['gaps'], d['corrupt'], d['boots'], d['records'] > 0" <<<"$v")" = "0 0 1 True"
out=$(ctl node2 replica failover b1 --test 2>&1)
check "a test failover boots b1-test on node3: $out" grep -q "b1-test runs on node3" <<<"$out"
check "b1-test counts on node3" wait_for 60 counting_on node3 b1-test
check "test failover --stop" quiet ctl node2 replica failover b1 --test --stop
# planned: the last point becomes a local volume of node3, and the record's
# disk follows in the owner CAS; the old image goes
img=$(ctl node1 vm show b1 --json | json "d['disks'][0]['path']")
img=${img##*/}
rbd_has() { on node1 rbd -c "$HCA_DC_DIR/ceph/ceph.conf" ls hca | grep -qx "$1"; }
check "b1's disk is the RBD image $img" rbd_has "$img"
out=$(ctl node2 replica failover b1 --planned 2>&1)
diag "$out"
check "planned failover of b1 (asked on node2)" grep -q "b1: runs on node3 from point" <<<"$out"
check "b1 counts on node3" wait_for 60 counting_on node3 b1
check "every record says node3, its disk a local volume there" \
	test "$(ctl node1 vm show b1 --json | json "d['owner'], d['disks'][0]['path'].startswith('rbd:')") $(ctl node3 vm show b1 --json | json "d['owner']")" = "node3 False node3"
last1=$(grep -ao 'count=[0-9]* seq=[0-9]*' "$HCA_DC_DIR/n1/s/vm/b1/serial.log" | tail -1 | sed 's/.*seq=//')
resume=$(grep -ao 'resume_seq=[0-9]*' "$HCA_DC_DIR/n3/s/vm/b1/serial.log" | tail -1 | cut -d= -f2)
check "nothing lost: node3's boot resumes at record ${resume:-?}, node1's last durable one was ${last1:-?}" \
	test "${resume:-0}" -ge "${last1:-1}"
check "the old RBD image is removed" eval "! rbd_has '$img'"
check "disable" quiet ctl node2 replica disable b1
check "node3 removes its replica" wait_for 30 on node3 test ! -e "$(rdir node3 b1)"
check "b1 shuts down on node3" quiet ctl node3 vm shutdown b1 --timeout 60
v=$(on node3 qemu-img convert -O raw "$(vol node3 b1)" "$TMP/b.raw" && journal_verify "$TMP/b.raw" 2>/dev/null)
rm -f "$TMP/b.raw"
diag "b1's journal at the end: $v"
check "its journal verifies: two boots (node1, node3), no gap, nothing torn" \
	test "$(json "d['gaps'], d['corrupt'], d['boots']" <<<"$v")" = "0 0 2"

# ---- (h) unplanned failover of an RBD VM: node1 dies ----
check "define and start b2 on node1 (a 64 MiB RBD disk)" define_rbd b2 64M
check "b2 counts on node1" wait_for 30 counting_on node1 b2
check "enable b2 -> node3 every 2 s" quiet ctl node1 replica enable b2 --to node3 --interval 2s
check "a point comes" wait_for 90 point_above 0 b2
img=$(ctl node1 vm show b2 --json | json "d['disks'][0]['path']")
img=${img##*/}
for p in $(ip netns pids "$HCA_DC_NETNS-node1"); do
	case "$(cat /proc/$p/comm 2>/dev/null)" in hcad | corosync | qemu-system-x86*) kill -9 "$p" ;; esac
done
node1_gone() { [ "$(ctl node3 cluster status --json | json "[n['online'] for n in d['nodes'] if n['name']=='node1'][0]")" = False ]; }
check "node1 leaves the membership" wait_for 30 node1_gone
expect_fail "unplanned failover refused: its image $img is in the pool (start it from there)" \
	"RBD image $img is in the pool" ctl node3 replica failover b2 --unplanned
out=$(ctl node3 replica failover b2 --unplanned --force 2>&1)
diag "$out"
check "forced, b2 runs on node3 from a point" grep -q "b2: runs on node3 from point" <<<"$out"
check "b2 counts on node3" wait_for 60 counting_on node3 b2
check "its record says node3, its disk a local volume there" \
	test "$(ctl node3 vm show b2 --json | json "d['owner'], d['disks'][0]['path'].startswith('rbd:')")" = "node3 False"
check "its old image stays in the pool (what node1 wrote after the point)" rbd_has "$img"
hca_done
