#!/usr/bin/env bash
# hca-test-lane: side
# Asynchronous replication, for real, on a 3-node devcluster: r1 runs on
# node1 with a local qcow2 disk the test guest writes its checksummed
# journal to (a record every 20 ms), and replicates to node2.
#  (a) refusals: no --to, to itself, to no node, a bad interval, a VM that
#      does not exist; nothing is written;
#  (b) enable (asked on node3): the first cycle copies what the disk holds
#      (64 MiB written before the start, in an 8 GiB disk), not the disk's
#      size; points appear every interval; node2 keeps at most --keep;
#  (c) the newest point, read on node2 (replication paused for the read),
#      is a crash-consistent journal: in order, no gap, nothing torn;
#  (d) later cycles ship the changes only (far below the first copy);
#  (e) pause: no new point; resume: points again;
#  (f) node1's hcad restarted: tracking resumes from the persistent bitmap
#      (no second full copy);
#  (g) node2's hcad killed (-9) and restarted: cycles fail meanwhile, then
#      go on on the same points, no full copy;
#  (h) disable: the record goes, node2 removes its replica, the bitmaps go
#      from the VM's volume; its journal verifies;
#  (i) enabled again; a test failover boots r1-test on node2 from a point
#      while r1 runs on and replication goes on; --stop removes it;
#  (j) planned failover (an unplanned one is refused while node1 is a
#      member): r1 runs on node2 only, every record says so, and the point
#      it started from holds every record node1's journal had;
#  (k) reverse: node2 replicates to node1, by delta: node1's old copy is
#      the first point, the first cycle compares digests and ships what
#      changed (far below the disk's data), no full copy;
#  (l) node2's hcad, corosync and QEMU killed (-9): unplanned failover starts
#      r1 on node1 from a point; at the end its journal verifies across the
#      four boots.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_dc.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcr-$$
export HCA_DC_NETNS=hcar$$
export HCA_BUILD=$BUILD
G=$GUEST
TMP=$HCA_DC_DIR.tmp

cleanup() {
	dc down >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP"

point_above() { [ "$(st node3 r1 last_point 2>/dev/null || echo 0)" -gt "$1" ]; }

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done

define_r1() {
	ctl node1 vm define --name r1 --memory 128M --kernel "$G/vmlinux" --initrd "$G/initramfs.cpio" \
		--cmdline 'console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20' --disk 8G >/dev/null &&
		qemu-io -f qcow2 -c 'write -P 0x5a 1G 64M' "$(vol node1 r1)" >/dev/null &&
		ctl node1 vm start r1 >/dev/null
}
check "define r1 on node1 (8 GiB local disk, 64 MiB written at 1 GiB)" define_r1
check "r1 counts on node1" wait_for 30 counting_on node1 r1

# ---- (a) refusals ----
expect_fail "enable without --to is refused" "required" ctl node3 replica enable r1
expect_fail "enable to the node it runs on is refused" "another" ctl node1 replica enable r1 --to node1
expect_fail "enable to no node is refused" "not a node" ctl node3 replica enable r1 --to node9
expect_fail "a bad interval is refused" "interval" ctl node3 replica enable r1 --to node2 --interval 0
expect_fail "an unknown VM is refused" "nosuch" ctl node3 replica enable nosuch --to node2
expect_fail "status of a VM not replicated says so" "not replicated" ctl node3 replica status r1

# ---- (b) enable, asked on node3 ----
out=$(ctl node3 replica enable r1 --to node2 --interval 2s --keep 4 2>&1)
check "enable r1 -> node2 every 2 s, keep 4 ($out)" grep -q "replicated to node2" <<<"$out"
expect_fail "enable again is refused, naming the relation" "already replicated" \
	ctl node1 replica enable r1 --to node3
check "the first point comes" wait_for 90 point_above 0
first=$(st node3 r1 bytes_raw)
diag "first cycle shipped $((first >> 20)) MiB of the 8 GiB disk"
check "the first copy ships what was written (>= 64 MiB)" test "$first" -ge $((64 << 20))
check "the first copy is not the disk's size (< 512 MiB)" test "$first" -lt $((512 << 20))
status4() { [ "$(ctl node2 replica status r1 --json | json "d['state'], d['health'], d['source'], d['target']")" = "enabled ok node1 node2" ]; }
check "status (asked on node2) says enabled, health ok, from node1 to node2" wait_for 20 status4
p=$(st node3 r1 last_point)
check "points keep coming (4 more)" wait_for 60 point_above $((p + 3))
# a new point is listed as soon as it is made, and the oldest goes once its
# prune (a block-commit, up to a second on a loaded host) is done
npoints() { ctl node3 replica points r1 --json | json "len(d['points'])"; }
kept() { local n; n=$(npoints) && [ "$n" -ge 2 ] && [ "$n" -le 4 ]; }
check "node2 keeps at most 4 points ($(npoints) now)" wait_for 10 kept
sorted_points() { [ "$(ctl node1 replica points r1 --json | json "[p['id'] for p in d['points']] == sorted(p['id'] for p in d['points'])")" = True ]; }
table_names() { ctl node3 replica points r1 | grep -q 'on node2'; }
check "points are listed oldest first (asked on node1, the source)" sorted_points
check "the text table names the replica node" table_names

# ---- (c) the newest point verifies ----
check "the newest point on node2 reads out" rep_point_raw node2 r1 "$TMP/p.raw"
v=$(journal_verify "$TMP/p.raw" 2>/dev/null)
diag "newest point: $v"
check "the point is a crash-consistent journal: no gap, nothing torn, one boot" test \
	"$(json "d['gaps'], d['corrupt'], d['boots'], d['records'] > 0" <<<"$v")" = "0 0 1 True"
rm -f "$TMP/p.raw"

# ---- (d) later cycles ship changes only ----
b0=$(st node3 r1 bytes_raw); c0=$(st node3 r1 cycles)
cycles_above() { [ "$(st node3 r1 cycles)" -gt "$1" ]; }
check "three more cycles" wait_for 60 cycles_above $((c0 + 2))
b1=$(st node3 r1 bytes_raw); c1=$(st node3 r1 cycles)
per=$(((b1 - b0) / (c1 - c0)))
diag "$((c1 - c0)) cycles shipped $(((b1 - b0) >> 10)) KiB: $((per >> 10)) KiB a cycle"
check "a cycle ships the changes, not the disk (< 8 MiB a cycle)" test "$per" -lt $((8 << 20))
check "one full copy so far" test "$(st node3 r1 full_copies)" = 1

# ---- (e) pause and resume ----
check "pause" quiet ctl node3 replica pause r1
sleep 3
p=$(st node3 r1 last_point)
sleep 5
check "paused: no new point in 5 s" test "$(st node3 r1 last_point)" = "$p"
check "paused: status says so" test "$(st node1 r1 state)" = paused
check "resume" quiet ctl node2 replica resume r1
check "resumed: points again" wait_for 30 point_above "$p"

# ---- (f) node1's hcad restarted ----
check "node1's hcad stops" node_hcad_stop 1
check "node1's hcad starts again" hcad_restart 1
p=$(st node3 r1 last_point)
check "cycles go on after node1's restart" wait_for 60 point_above $((p + 1))
check "tracking resumed from the bitmap: still one full copy" test "$(st node3 r1 full_copies)" = 1

# ---- (g) node2's hcad killed ----
check "node2's hcad killed (-9)" node_hcad_stop 2 KILL
sleep 4
check "node2's hcad starts again" hcad_restart 2
p=$(st node3 r1 last_point)
check "cycles go on after node2's restart" wait_for 60 point_above $((p + 1))
check "on the same points: still one full copy" test "$(st node3 r1 full_copies)" = 1
check "the newest point on node2 reads out" rep_point_raw node2 r1 "$TMP/p.raw"
v=$(journal_verify "$TMP/p.raw" 2>/dev/null)
check "and verifies ($v)" test "$(json "d['gaps'], d['corrupt'], d['boots']" <<<"$v")" = "0 0 1"
rm -f "$TMP/p.raw"
check "r1 still counts on node1, the same boot" counting_on node1 r1

# ---- (h) disable ----
check "disable" quiet ctl node3 replica disable r1
expect_fail "the relation is gone" "not replicated" ctl node2 replica status r1
check "node2 removes its replica" wait_for 30 test ! -e "$(rdir node2 r1)"
check "r1 shuts down" quiet ctl node1 vm shutdown r1 --timeout 60
bms=$(qemu-img info --output=json "$(vol node1 r1)" | json "[b['name'] for b in d.get('format-specific', {}).get('data', {}).get('bitmaps', [])]")
check "no change bitmap left in r1's volume ($bms)" bash -c "! grep -q hca-rep <<<\"$bms\""
check "r1's journal verifies on node1's volume" bash -c \
	"qemu-img convert -O raw '$(vol node1 r1)' '$TMP/r1.raw' && '$VERIFY' '$TMP/r1.raw' >/dev/null"
check "r1 starts again" quiet ctl node1 vm start r1

# ---- (i) enabled again, then a test failover ----
check "enable again (asked on node2), app-consistent every 2 s" quiet ctl node2 replica enable r1 \
	--to node2 --interval 2s --keep 4 --app-consistent every:2s
check "a point comes" wait_for 90 point_above 0
p=$(st node3 r1 last_point)
check "another point" wait_for 30 point_above "$p"
app_newest() { [ "$(ctl node1 replica points r1 --json | json "d['points'][-1]['app_consistent']")" = True ]; }
check "the newest point is app-consistent" app_newest
SER=$HCA_DC_DIR/n1/s/vm/r1/serial.log
check "the guest agent froze and thawed r1 for the cuts" \
	bash -c "grep -aq 'hca-workload frozen seq=' '$SER' && grep -aq 'hca-workload thawed seq=' '$SER'"
check "no freeze ran out (thawed each time)" bash -c "! grep -aq thaw-timeout '$SER'"
froze=$(grep -ao 'thawed seq=[0-9]* frozen_ms=[0-9]*' "$SER" | sed 's/.*=//' | sort -n | tail -1)
diag "longest freeze: ${froze} ms"
check "the newest point reads out" rep_point_raw node2 r1 "$TMP/p.raw"
last=$(journal_verify "$TMP/p.raw" 2>/dev/null | json "d['last_seq']")
rm -f "$TMP/p.raw"
check "it was cut while the guest was frozen: its last record ($last) is one a freeze stopped at" \
	grep -aqw "hca-workload frozen seq=$last" "$SER"
Q1=$(qemu_list "$(field node1 r1 uuid)")
out=$(ctl node3 replica failover r1 --test 2>&1)
check "test failover (asked on node3): $out" grep -q "r1-test runs on node2" <<<"$out"
check "r1-test counts on node2" wait_for 60 counting_on node2 r1-test
check "r1 still runs on node1, the same QEMU" test "$(qemu_list "$(field node1 r1 uuid)")" = "$Q1"
p=$(st node3 r1 last_point)
check "replication goes on during the test" wait_for 30 point_above "$p"
expect_fail "a second test copy is refused" "exists" ctl node3 replica failover r1 --test
check "test failover --stop" quiet ctl node1 replica failover r1 --test --stop
no_clone() { ! ctl node2 vm show r1-test >/dev/null 2>&1; }
check "r1-test is gone" no_clone
check "its files are gone" test ! -e "$HCA_DC_DIR/n2/s/replica-test/r1"

# ---- (j) planned failover: nothing lost ----
expect_fail "unplanned failover while node1 is a member is refused" "live member" \
	ctl node3 replica failover r1 --unplanned
out=$(ctl node3 replica failover r1 --planned 2>&1)
diag "$out"
check "planned failover (asked on node3)" grep -q "runs on node2 from point" <<<"$out"
U=$(field node1 r1 uuid)
runs_only_on() { [ "$(qemu_list "$U" | sed 's/:.*//')" = "$1" ]; }
owner_all() { local n; for n in node1 node2 node3; do [ "$(field $n r1 owner)" = "$1" ] || return 1; done; }
check "one QEMU of r1, on node2" wait_for 20 runs_only_on node2
check "every node's record says node2" owner_all node2
check "r1 counts on node2" wait_for 60 counting_on node2 r1
check "status says failed-over" test "$(st node3 r1 state)" = failed-over
# what the guest wrote on node1 (its stopped volume there) is all in the point it started from
qemu-img convert -U -O raw "$(vol node1 r1)" "$TMP/old.raw"
old=$(journal_verify "$TMP/old.raw" 2>/dev/null | json "d['records']")
check "the point it started from reads out" rep_point_raw node2 r1 "$TMP/p.raw"
new=$(journal_verify "$TMP/p.raw" 2>/dev/null | json "d['records'], d['gaps'], d['corrupt']")
diag "node1's last journal: $old records; the point: $new (records, gaps, torn)"
check "no record lost: the point holds all $old records node1 wrote" test "$new" = "$old 0 0"
rm -f "$TMP/old.raw" "$TMP/p.raw"

# ---- (k) reverse: node2 -> node1 ----
out=$(ctl node3 replica reverse r1 2>&1)
check "reverse (asked on node3): $out" grep -q "from node2 back to node1" <<<"$out"
check "node1's old copy is its first point (no copy over the network)" test "$(st node3 r1 last_point)" = 1
check "points come on node1" wait_for 90 point_above 1
check "by delta: the first cycle compared digests, no full copy" \
	test "$(st node3 r1 resyncs) $(st node3 r1 full_copies)" = "1 0"
# the resync cycle alone, from node2's log (later cycles add what the guest
# writes meanwhile, more on a loaded machine)
rb=$(grep -a "replica: vm r1: point .* (resync: " "$HCA_DC_DIR/n2/hcad.log" | tail -1 |
	sed -n 's/.*ms: \([0-9]*\) bytes in.*/\1/p')
rb=${rb:-$(st node3 r1 bytes_raw)}
diag "reverse: $((rb >> 10)) KiB shipped back by the resync (the first copy was $((first >> 10)) KiB)"
check "it shipped what changed, far below what the disk holds (< 1/4 of the first copy)" \
	test "$rb" -lt $((first / 4))
check "node2's old replica is gone" wait_for 30 test ! -e "$(rdir node2 r1)"

# ---- (l) unplanned failover: node2 dies ----
p=$(st node3 r1 last_point)
check "another point on node1" wait_for 30 point_above "$p"
for p in $(ip netns pids "$HCA_DC_NETNS-node2"); do
	case "$(cat /proc/$p/comm 2>/dev/null)" in hcad | corosync | qemu-system-x86*) kill -9 "$p" ;; esac
done
node2_gone() { [ "$(ctl node3 cluster status --json | json "[n['online'] for n in d['nodes'] if n['name']=='node2'][0]")" = False ]; }
check "node2 leaves the membership" wait_for 30 node2_gone
out=$(ctl node3 replica failover r1 --unplanned 2>&1)
diag "$out"
check "unplanned failover (asked on node3)" grep -q "runs on node1 from point" <<<"$out"
check "one QEMU of r1, on node1" wait_for 20 runs_only_on node1
check "r1 counts on node1" wait_for 60 counting_on node1 r1
check "r1 shuts down on node1" quiet ctl node1 vm shutdown r1 --timeout 60
v=$(qemu-img convert -O raw "$(vol node1 r1)" "$TMP/r1.raw" && journal_verify "$TMP/r1.raw" 2>/dev/null)
diag "r1's journal at the end: $v"
check "its journal verifies: four boots (start, restart, planned, unplanned), no gap, nothing torn" \
	test "$(json "d['gaps'], d['corrupt'], d['boots']" <<<"$v")" = "0 0 4"
hca_done
