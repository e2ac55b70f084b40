#!/usr/bin/env bash
# One owner, whatever happens, on a real 3-node devcluster (corosync, Ceph,
# hcad, QEMU): any node drives any VM (forwarded to its owner, answered as
# a job); a running VM cannot be undefined from anywhere; 20 rounds of a
# start on the owner racing a start --on another node never make two QEMUs;
# a node that missed `undefine X; define X` while cut off takes the new
# record; records with 17 disks, an unknown disk format or a newer format
# are refused by name, nothing crashes or is deleted; --no-wait, job show
# and job cancel of a shutdown; kill -9 of hcad in the middle of a define
# and of a start: the job is resolved at restart and nothing is half-made.
. "$(dirname "$0")/lib.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dco-$$
export HCA_DC_NETNS=hcao$$
export HCA_BUILD=$BUILD
HUB=$HCA_DC_NETNS-hub
G=$GUEST
CMDLINE="console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=4 hca.dirty_rate=1"
FORGE=$BUILD/tools/rec_forge
POOL=hca

dc() { "$DCSH" "$@"; }
on() { local n=$1; shift; dc exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$HCACTL" "$@"; }
cleanup() {
	dc down >/dev/null 2>&1
	rm -rf "$HCA_DC_DIR.tmp"
}
trap cleanup EXIT
mkdir -p "$HCA_DC_DIR.tmp"
TMP=$HCA_DC_DIR.tmp

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
field() { ctl "$1" vm show "$2" --json | json "d['$3']"; }
storage_ok() { [ "$(ctl "$1" cluster status --json | json "d['storage_health']")" = ok ]; }
define_on() { local n=$1 name=$2; shift 2
	ctl "$n" vm define --name "$name" --memory 64M --disk rbd:16M --kernel "$G/vmlinux" \
		--initrd "$G/initramfs.cpio" --cmdline "$CMDLINE" "$@"; }
job_field() { ctl "$1" job show "$2" --json | json "d['$3']"; }
job_ended() { case "$(job_field "$1" "$2" phase)" in succeeded|failed|cancelled) return 0 ;; esac; return 1; }

# QEMU instances of the VM with uuid U in every node's network namespace,
# counted only when running (not stopped by SIGSTOP, not a zombie). QEMU's
# -daemonize forks twice: until the daemon is up, the process hcad started
# waits for it with the same command line. That launcher (its parent is
# hcad) is not a second instance; the daemon it waits for is.
qemus() {
	local u=$1 k p n=0 st pp
	for k in 1 2 3; do
		for p in $(ip netns pids "$HCA_DC_NETNS-node$k" 2>/dev/null); do
			tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q -- "-uuid $u" || continue
			st=$(awk '{print $3, $4}' "/proc/$p/stat" 2>/dev/null)
			case "${st% *}" in Z | X | T | t | '') continue ;; esac
			pp=${st#* }
			[ "$(cat "/proc/$pp/comm" 2>/dev/null)" = hcad ] && continue
			n=$((n + 1))
		done
	done
	echo "$n"
}
# re-evaluated on every try of wait_for
no_qemu() { test "$(qemus "$1")" = 0; }
# the node whose namespace runs U's QEMU ("" if none)
qemu_node() {
	local u=$1 k p
	for k in 1 2 3; do
		for p in $(ip netns pids "$HCA_DC_NETNS-node$k" 2>/dev/null); do
			tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q -- "-uuid $u" && { echo "node$k"; return; }
		done
	done
}
hcad_pid() {
	local p
	for p in $(ip netns pids "$HCA_DC_NETNS-node$1" 2>/dev/null); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = hcad ] && { echo "$p"; return 0; }
	done
	return 1
}
hcad_restart() { # K: start node K's hcad again as the devcluster does
	local d=$HCA_DC_DIR/n$1
	on "node$1" bash -c "setsid '$BUILD/hcad' -c '$d/hcad.conf' </dev/null >>'$d/hcad.out' 2>&1 &"
	wait_for 20 storage_ok "node$1"
}

# qemus for a bash -c: the same function, as a script
{ echo '#!/usr/bin/env bash'; echo "HCA_DC_NETNS=$HCA_DC_NETNS"; declare -f qemus; echo 'qemus "$1"'; } >"$TMP/qemus"
chmod +x "$TMP/qemus"

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done

# ---- any node drives any VM ----
check "define web1 on node1" define_on node1 web1
U=$(field node1 web1 uuid)
check "node3 sees web1 (owner node1, epoch 1)" wait_for 5 bash -c "[ \"\$('$DCSH' exec node3 -- '$HCACTL' vm show web1 --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[\"owner\"], d[\"owner_epoch\"])')\" = 'node1 1' ]"
check "start web1 from node3: forwarded to node1, runs there" ctl node3 vm start web1
check "its QEMU runs in node1's namespace, and only there" test "$(qemu_node "$U")-$(qemus "$U")" = "node1-1"
check "show from node2 answers with the owner's live view (running on node1)" \
	test "$(ctl node2 vm show web1 --json | json "d['state'], d['node'], d['active']")" = "running node1 True"
check "the record's claim is set (active) while it runs" test "$(field node1 web1 active)" = True
expect_fail "undefine from node2 while it runs: refused by the owner" "vm web1: is running; stop it first" \
	ctl node2 vm undefine web1
check "web1 still defined and running after the refused undefine" test "$(qemus "$U")" = 1
console_out=$(ctl node2 vm console web1 </dev/null 2>&1)
check "console from node2 says where the console is (node1)" bash -c "printf '%s' \"\$1\" | grep -q 'node1'" _ "$console_out"
check "stop web1 from node2: forwarded to node1" ctl node2 vm stop web1
check "no QEMU of web1 anywhere after the stop" wait_for 5 no_qemu "$U"
check "the claim is released once QEMU ended" wait_for 5 bash -c "[ \"\$('$DCSH' exec node3 -- '$HCACTL' vm show web1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"active\"])')\" = False ]"

# ---- start on the owner racing start --on another node: never two QEMUs ----
# Each round the owner starts web1 while another node starts it --on itself,
# both asked on the node that will run them: a real race for the claim.
max=0
rounds=0
wins=""
owner=node1
for r in $(seq 20); do
	other=node2
	[ "$owner" = node2 ] && other=node3
	ctl "$owner" vm start web1 >"$TMP/a" 2>&1 &
	pa=$!
	ctl "$other" vm start web1 --on "$other" >"$TMP/b" 2>&1 &
	pb=$!
	for s in 1 2 3 4 5 6; do
		c=$(qemus "$U")
		[ "$c" -gt "$max" ] && max=$c
		sleep 0.1
	done
	wait $pa; ra=$?
	wait $pb; rb=$?
	c=$(qemus "$U")
	[ "$c" -gt "$max" ] && max=$c
	[ "$ra" -eq 0 ] || [ "$rb" -eq 0 ] || diag "round $r: neither start won: $(cat "$TMP/a" "$TMP/b" | tr '\n' ' ')"
	[ "$ra" -eq 0 ] && [ "$rb" -eq 0 ] && { diag "round $r: both starts said yes"; max=2; }
	if [ "$rb" -eq 0 ]; then owner=$other; elif [ "$ra" -ne 0 ]; then owner=$(field node1 web1 owner); fi
	wins+=" $owner"
	ctl "$owner" vm stop web1 --force >/dev/null 2>&1
	wait_for 10 no_qemu "$U"
	wait_for 10 bash -c "[ \"\$('$DCSH' exec $owner -- '$HCACTL' vm show web1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"active\"])')\" = False ]"
	rounds=$r
done
check "20 rounds of start (owner) racing start --on another node: never two QEMUs (max $max in $rounds rounds)" test "$max" -le 1
diag "owner after each round:$wins; owner epoch after the races: $(field node1 web1 owner_epoch)"

# ---- a node that missed undefine + define while cut off ----
# A VM without volumes: the partition also cuts node3's OSD off, and RBD
# images whose placement groups it served may wait for Ceph to re-peer.
check "define nd on node1 (no disk)" ctl node1 vm define --name nd --memory 64M --kernel "$G/vmlinux"
old_uuid=$(field node1 nd uuid)
check "node3 knows nd (uuid ${old_uuid:0:8})" wait_for 10 bash -c "'$DCSH' exec node3 -- '$HCACTL' vm show nd >/dev/null"
ip -n "$HUB" link set veth-n3 down
check "node3 partitioned away: loses quorum" wait_for 10 bash -c "[ \"\$('$DCSH' exec node3 -- '$HCACTL' cluster status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"quorate\"])')\" = False ]"
check "undefine nd on node1 while node3 is cut off" wait_for 90 ctl node1 vm undefine nd
check "define nd again on node2 (a new VM of the same name)" wait_for 90 ctl node2 vm define --name nd --memory 64M --kernel "$G/vmlinux"
new_uuid=$(field node2 nd uuid)
diag "node3 still holds the old nd: $(ctl node3 vm show nd --json 2>/dev/null | json "d['uuid']")"
ip -n "$HUB" link set veth-n3 up
check "healed: node3 quorate" wait_for 30 bash -c "[ \"\$('$DCSH' exec node3 -- '$HCACTL' cluster status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"quorate\"])')\" = True ]"
check "node3 has the new record (uuid ${new_uuid:0:8}, not ${old_uuid:0:8})" wait_for 20 bash -c "[ \"\$('$DCSH' exec node3 -- '$HCACTL' vm show nd --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"uuid\"])')\" = '$new_uuid' ]"
check "node3's storage answers again" wait_for 30 storage_ok node3
check "a start asked on node3 runs the new nd (on its owner node2), never the old" \
	bash -c "'$DCSH' exec node3 -- '$HCACTL' vm start nd >/dev/null && [ \"\$(\"\$0\" '$new_uuid')\" = 1 ]" "$TMP/qemus"
check "no QEMU of the old nd anywhere" test "$(qemus "$old_uuid")" = 0
ctl node2 vm stop nd --force >/dev/null 2>&1

# ---- records from outside: refused by name, nothing crashes or is deleted ----
check "define bad1 on node1 (a template for forged records)" define_on node1 bad1
forge() { on node1 "$FORGE" "$HCA_DC_DIR/ceph/ceph.conf" "$POOL" bad1 "$@"; }
check "keep bad1's good record" forge save "$TMP/bad1.rec"
check "forge bad1 with 17 disks" forge disks 17
check "17 disks: refused by name on node2" wait_for 10 bash -c "'$DCSH' exec node2 -- '$HCACTL' vm show bad1 2>&1 | grep -q 'vm bad1: record refused: .*disks'"
expect_fail "start of the refused record: a clear error" "vm bad1: record refused" ctl node2 vm start bad1
check "forge bad1 as a newer writer's (format 9)" forge format 9
check "newer format: refused by name on node3" wait_for 10 bash -c "'$DCSH' exec node3 -- '$HCACTL' vm show bad1 2>&1 | grep -q 'newer hca (record format 9'"
check "bad1's good record back" forge put "$TMP/bad1.rec"
check "bad1 readable again on node2" wait_for 10 ctl node2 vm show bad1
check "forge bad1 with an unknown disk format" forge disk-format 7
check "unknown disk format: refused by name on node1" wait_for 10 bash -c "'$DCSH' exec node1 -- '$HCACTL' vm show bad1 2>&1 | grep -q 'vm bad1: record refused: .*format'"
for k in 1 2 3; do check "node$k's hcad still answers" ctl node$k node info; done
check "the refused record and its volume are still there" bash -c "'$DCSH' exec node1 -- rados -p $POOL -N vm stat bad1 >/dev/null && '$DCSH' exec node1 -- rbd -p $POOL info bad1-disk0 >/dev/null"
check "bad1's good record back again" forge put "$TMP/bad1.rec"
check "bad1 readable again on every node" wait_for 10 bash -c "for k in 1 2 3; do '$DCSH' exec node\$k -- '$HCACTL' vm show bad1 >/dev/null || exit 1; done"

# ---- --no-wait, job show, job cancel of a shutdown ----
# acpi=off: the guest never sees the power button, so the shutdown waits
check "define quiet on node2 (acpi=off)" ctl node2 vm define --name quiet --memory 64M --kernel "$G/vmlinux" \
	--initrd "$G/initramfs.cpio" --cmdline "console=ttyS0 quiet acpi=off"
check "start quiet from node1" ctl node1 vm start quiet
jid=$(ctl node3 vm shutdown quiet --timeout 120 --no-wait)
check "shutdown --no-wait from node3 prints a job of node2 ($jid)" bash -c "[[ '$jid' == node2-* ]]"
check "job show from node1: a shutdown of quiet, waiting" \
	wait_for 5 bash -c "[ \"\$('$DCSH' exec node1 -- '$HCACTL' job show '$jid' --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d[\"kind\"], d[\"vm\"], d[\"phase\"])')\" = 'shutdown quiet wait' ]"
check "job cancel from node3" ctl node3 job cancel "$jid"
check "the job ends cancelled" wait_for 5 bash -c "[ \"\$('$DCSH' exec node1 -- '$HCACTL' job show '$jid' --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"phase\"])')\" = cancelled ]"
check "quiet keeps running after the cancel" test "$(field node2 quiet state)" = running
check "job list on node1 shows it" bash -c "'$DCSH' exec node1 -- '$HCACTL' job list | grep -q '$jid'"
check "stop quiet (a stop interrupts what is left of the shutdown)" ctl node1 vm stop quiet --force

# ---- kill -9 of hcad in the middle of a define and of a start ----
hp=$(hcad_pid 1) # found first: the kill follows the answer at once
jid=$(ctl node1 vm define --name half --memory 64M --disk rbd:16M --disk rbd:16M --disk rbd:16M \
	--disk rbd:16M --disk rbd:16M --disk rbd:16M --kernel "$G/vmlinux" --no-wait)
kill -9 "$hp"
check "node1's hcad restarts after kill -9 in a define ($jid)" hcad_restart 1
check "the define job is resolved at restart" wait_for 20 job_ended node1 "$jid"
diag "define job after restart: $(job_field node1 "$jid" phase): $(job_field node1 "$jid" note)"
if ctl node1 vm show half >/dev/null 2>&1; then
	check "half defined: every volume it names exists" bash -c "for d in 0 1 2 3 4 5; do '$DCSH' exec node1 -- rbd -p $POOL info half-disk\$d >/dev/null || exit 1; done"
else
	check "half not defined: none of its volumes is left" bash -c "! '$DCSH' exec node1 -- rbd -p $POOL ls | grep -q '^half-'"
fi
check "define web2 on node1" define_on node1 web2
U2=$(field node1 web2 uuid)
hp=$(hcad_pid 1)
jid=$(ctl node1 vm start web2 --no-wait)
kill -9 "$hp"
check "node1's hcad restarts after kill -9 in a start ($jid)" hcad_restart 1
check "the start job is resolved at restart" wait_for 20 job_ended node1 "$jid"
ph=$(job_field node1 "$jid" phase)
diag "start job after restart: $ph: $(job_field node1 "$jid" note)"
if [ "$ph" = succeeded ]; then
	check "start finished: web2 runs, claimed, one QEMU" test "$(field node1 web2 state)-$(field node1 web2 active)-$(qemus "$U2")" = "running-True-1"
else
	# evaluated on every try: the release may land just after the job ends
	rolled_back() { test "$(qemus "$U2")-$(field node1 web2 active)" = "0-False"; }
	check "start rolled back: no QEMU, claim released" wait_for 10 rolled_back
fi
ctl node1 vm stop web2 --force >/dev/null 2>&1

hca_done
