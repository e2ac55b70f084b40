#!/usr/bin/env bash
# Asynchronous replication into an RBD pool (--target-pool), for real, on a
# 3-node devcluster: p1 runs on node1 with a local qcow2 disk the test
# guest writes its checksummed journal to, and replicates to node2, which
# keeps the replica as images of the pool "far" (the points: snapshots).
#  (a) refusals: a bad pool name (nothing written); a pool that does not
#      exist: the cycles fail and the error names the pool;
#  (b) enable: points come; the replica is an image in "far" (nothing but
#      the index in node2's replica directory); its snapshots are exactly
#      the points listed, at most --keep;
#  (c) the newest point, exported from the pool, is a crash-consistent
#      journal: in order, no gap, nothing torn;
#  (d) node2's hcad killed (-9) during the cycles and started again: the
#      cycles go on from the same points (no second full copy), and no
#      snapshot is left that is not a point;
#  (e) a test failover boots p1-test on node2 from a point of the pool
#      while replication goes on; --stop removes it;
#  (f) planned failover: p1 runs on node2 only, from a local volume made of
#      the last point, and nothing node1 wrote is lost;
#  (g) disable: the images go from the pool.
# First the store's own model checks (test_rep_store) run against the pool.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dc.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcp-$$
export HCA_DC_NETNS=hcap$$
export HCA_BUILD=$BUILD
G=$GUEST
TMP=$HCA_DC_DIR.tmp

cleanup() {
	dc down >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP"

point_above() { [ "$(st node3 "${2:-p1}" last_point 2>/dev/null || echo 0)" -gt "$1" ]; }
RBD=(on node1 rbd -c "$HCA_DC_DIR/ceph/ceph.conf")
images() { "${RBD[@]}" ls far 2>/dev/null | grep "^hca-replica\.node2\.$1\." || true; }
# the snapshots of IMAGE's, as ids, sorted; and the points node2 lists
snaps() { "${RBD[@]}" snap ls "far/$1" --format json | json "' '.join(sorted((s['name'][1:] for s in d), key=int))"; }
points() { ctl node3 replica points p1 --json | json "' '.join(str(p['id']) for p in d['points'])"; }
# pause, let the cycle in flight end, compare, resume
snaps_are_points() {
	local s p rc=1
	quiet ctl node3 replica pause p1 || return 1
	sleep 3
	s=$(snaps "$IMG") && p=$(points) && diag "snapshots: $s; points: $p" && [ -n "$p" ] && [ "$s" = "$p" ] && rc=0
	quiet ctl node3 replica resume p1 || rc=1
	return $rc
}
# newest_verifies WHAT: the newest point, exported from the pool
newest_verifies() {
	local p v
	p=$(ctl node3 replica points p1 --json | json "d['points'][-1]['id']") &&
		"${RBD[@]}" export "far/$IMG@p$p" "$TMP/p.raw" >/dev/null 2>&1 ||
		{ not_ok "$1: point ${p:-?} exports from the pool"; return; }
	v=$(journal_verify "$TMP/p.raw" 2>/dev/null)
	rm -f "$TMP/p.raw"
	diag "$1: point $p: $v"
	check "$1: point $p is a crash-consistent journal (no gap, nothing torn, one boot)" \
		test "$(json "d['gaps'], d['corrupt'], d['boots'], d['records'] > 0" <<<"$v")" = "0 0 1 True"
}

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done
mkpool() {
	on node1 ceph -c "$HCA_DC_DIR/ceph/ceph.conf" osd pool create far 8 8 >/dev/null 2>&1 &&
		"${RBD[@]}" pool init far
}
check "a second pool, far" mkpool

# ---- the store's own model checks, on far (tests/unit/test_rep_store.c) ----
out=$(on node1 env HCA_TEST_POOL=far HCA_TEST_CEPH_CONF="$HCA_DC_DIR/ceph/ceph.conf" \
	"$BUILD/tests/test_rep_store" 2>&1)
while read -r name; do ok "store in a pool: $name"; done < <(sed -n 's/^\[       OK \] //p' <<<"$out")
while read -r name; do
	not_ok "store in a pool: $name"
	diag "$(grep -a -A3 "RUN.*$name" <<<"$out" | head -8)"
done < <(sed -n 's/^\[  FAILED  \] \([a-z_]*\)$/\1/p' <<<"$out")
check "the store's model checks ran in the pool" grep -q "PASSED.*8 test" <<<"$out"
define_p1() {
	ctl node1 vm define --name p1 --memory 128M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline 'console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20' --disk 1G >/dev/null &&
		qemu-io -f qcow2 -c 'write -P 0x5a 512M 32M' "$(vol node1 p1)" >/dev/null &&
		ctl node1 vm start p1 >/dev/null
}
check "define p1 on node1 (1 GiB local disk, 32 MiB written)" define_p1
check "p1 counts on node1" wait_for 30 counting_on node1 p1

# ---- (a) refusals ----
expect_fail "a bad pool name is refused" "no pool name" \
	ctl node3 replica enable p1 --to node2 --target-pool 'far/x'
expect_fail "nothing was written" "not replicated" ctl node3 replica status p1
check "enable into a pool that does not exist (the replica node finds out)" \
	quiet ctl node3 replica enable p1 --to node2 --target-pool nowhere --interval 2s
failed() { [ "$(st node3 p1 failed_cycles)" -gt 0 ]; }
check "its cycles fail" wait_for 60 failed
err=$(st node3 p1 last_error)
diag "last error: $err"
check "the error names the pool" grep -q "pool nowhere: no such pool" <<<"$err"
check "no point was made" test "$(st node3 p1 last_point)" = 0
check "disable" quiet ctl node3 replica disable p1
check "node2 removes what it had" wait_for 30 on node2 test ! -e "$(rdir node2 p1)"

# ---- (b) enable into far ----
out=$(ctl node3 replica enable p1 --to node2 --target-pool far --interval 2s --keep 3 2>&1)
check "enable p1 -> node2, pool far, every 2 s, keep 3 ($out)" grep -q "replicated to node2" <<<"$out"
check "the first point comes" wait_for 90 point_above 0
first=$(st node3 p1 bytes_raw)
diag "first cycle shipped $((first >> 20)) MiB of the 1 GiB disk"
check "the first copy ships what was written (>= 32 MiB, < 256 MiB)" \
	test "$first" -ge $((32 << 20)) -a "$first" -lt $((256 << 20))
IMG=$(images p1)
check "the replica is an image of far ($IMG)" test -n "$IMG"
check "status names the pool" test "$(st node3 p1 target_pool)" = far
check "node2's replica directory holds the index only" \
	test "$(on node2 ls "$(rdir node2 p1)" | tr '\n' ' ')" = "points "
p=$(st node3 p1 last_point)
check "points keep coming (4 more)" wait_for 60 point_above $((p + 3))
check "the image's snapshots are the points listed (at most 3)" snaps_are_points
np=$(ctl node3 replica points p1 --json | json "len(d['points'])")
check "node2 keeps at most 3 points ($np)" test "$np" -le 3 -a "$np" -ge 1

# ---- (c) the newest point verifies ----
newest_verifies "(c)"

# ---- (d) node2's hcad killed during the cycles ----
p=$(st node3 p1 last_point)
sleep 1.3 # most likely inside a cycle (2 s apart)
kill -9 "$(hcad_pid 2)"
check "node2's hcad starts again" hcad_restart 2
check "points come again" wait_for 60 point_above $((p + 1))
check "no second full copy" test "$(st node3 p1 full_copies)" = 1
check "no snapshot is left that is not a point" snaps_are_points
newest_verifies "(d)"

# ---- (e) test failover ----
Q1=$(qemu_list "$(field node1 p1 uuid)")
out=$(ctl node3 replica failover p1 --test 2>&1)
check "test failover (asked on node3): $out" grep -q "p1-test runs on node2" <<<"$out"
check "p1-test counts on node2" wait_for 60 counting_on node2 p1-test
check "p1 still runs on node1, the same QEMU" test "$(qemu_list "$(field node1 p1 uuid)")" = "$Q1"
p=$(st node3 p1 last_point)
check "replication goes on during the test" wait_for 30 point_above "$p"
check "test failover --stop" quiet ctl node1 replica failover p1 --test --stop
no_clone() { ! ctl node2 vm show p1-test >/dev/null 2>&1; }
check "p1-test is gone" no_clone

# ---- (f) planned failover ----
out=$(ctl node3 replica failover p1 --planned 2>&1)
diag "$out"
check "planned failover (asked on node3)" grep -q "runs on node2 from point" <<<"$out"
U=$(field node1 p1 uuid)
runs_only_on() { [ "$(qemu_list "$U" | sed 's/:.*//')" = "$1" ]; }
check "one QEMU of p1, on node2" wait_for 20 runs_only_on node2
check "p1 counts on node2" wait_for 60 counting_on node2 p1
check "its record says node2, its disk a local volume there" \
	test "$(ctl node1 vm show p1 --json | json "d['owner'], d['disks'][0]['path'].startswith('rbd:')")" = "node2 False"
last1=$(grep -ao 'count=[0-9]* seq=[0-9]*' "$HCA_DC_DIR/n1/s/vm/p1/serial.log" | tail -1 | sed 's/.*seq=//')
resume=$(grep -ao 'resume_seq=[0-9]*' "$HCA_DC_DIR/n2/s/vm/p1/serial.log" | tail -1 | cut -d= -f2)
check "nothing lost: node2's boot resumes at record ${resume:-?}, node1's last durable one was ${last1:-?}" \
	test "${resume:-0}" -ge "${last1:-1}"

# ---- (g) disable ----
check "disable" quiet ctl node3 replica disable p1
gone_from_far() { [ -z "$(images p1)" ]; }
if wait_for 30 gone_from_far; then ok "the images go from far"; else
	not_ok "the images go from far"
	diag "$(images p1); node2: $(grep -a 'p1' "$HCA_DC_DIR/n2/hcad.log" | grep -ai 'store\|drop\|remov' | tail -5)"
fi
check "node2's replica directory goes" wait_for 30 on node2 test ! -e "$(rdir node2 p1)"
check "p1 shuts down on node2" quiet ctl node2 vm shutdown p1 --timeout 60
v=$(on node2 qemu-img convert -O raw "$(vol node2 p1)" "$TMP/p.raw" && journal_verify "$TMP/p.raw" 2>/dev/null)
rm -f "$TMP/p.raw"
diag "p1's journal at the end: $v"
check "its journal verifies: two boots (node1, node2), no gap, nothing torn" \
	test "$(json "d['gaps'], d['corrupt'], d['boots']" <<<"$v")" = "0 0 2"
hca_done
