#!/usr/bin/env bash
# hca-test-lane: last
# Live migration between nodes, for real, on a 3-node devcluster (corosync,
# Ceph, hcad, QEMU; the guests' disks are shared RBD images):
#  (a) an idle guest goes round node1 -> node2 -> node3 -> node1, asked on a
#      node that is neither source nor target, on the source, on the target;
#  (b) a busy guest (64 MiB dirtied at HCA_MIG_DIRTY_RATE MiB/s) goes back
#      and forth twice;
#      after each: exit 0, the job's report, every node says the new owner,
#      an epoch one higher and running; one QEMU, on the target; the guest
#      counts on there;
#  (c) refused, the VM untouched: a local disk (the message names
#      --with-storage), the owner as target, an unknown node, a stopped VM;
#  (d) a slow migration cancelled from a third node while in transfer;
#  (e) a slow migration whose destination QEMU is killed with -9:
#      either way the VM runs on its source, same QEMU, same record.
# Watched from outside all along (every 0.3 s): never more than two QEMUs of
# a VM, never two outside a migration; every node's serial log of a VM kept,
# and across them no counter value printed twice (the guest ran exactly
# once), one boot, no mem-corrupt. At the end the journals, read back from
# Ceph, lost nothing.
# Left for later, not counted as passed: (f) a destination without room for
# the guest (its memory, or a node's admission limit): this machine has no
# way yet to make one node refuse for lack of room.
. "$(dirname "$0")/lib.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dcm-$$
export HCA_DC_NETNS=hcam$$
export HCA_BUILD=$BUILD
G=$GUEST
TMP=$HCA_DC_DIR.tmp
W=$TMP/vmwatch.py
# the busy guest rewrites 64 MiB at this rate (MiB/s): as high as converges
# here; 64 MiB of it do not fit in 128 MiB (the guest kernel runs out of memory)
RATE=${HCA_MIG_DIRTY_RATE:-32}
IDLE="hca.dirty_rate=0"
BUSY="hca.dirty_mib=64 hca.dirty_rate=$RATE"
declare -A UUID MIGS
WATCHERS=()
NMIG=0

dc() { "$DCSH" "$@"; }
on() { local n=$1; shift; dc exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$HCACTL" "$@"; }
# tctl SECONDS NODE ARGS: hcactl that cannot hang the test
tctl() { local s=$1 n=$2; shift 2; timeout "$s" "$DCSH" exec "$n" -- "$HCACTL" "$@"; }
cleanup() {
	local d
	for d in "$TMP"/w.*/; do [ -d "$d" ] && touch "$d/stop"; done
	sleep 0.5
	[ ${#WATCHERS[@]} -eq 0 ] || kill "${WATCHERS[@]}" 2>/dev/null
	dc down >/dev/null 2>&1
	rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
field() { ctl "$1" vm show "$2" --json | json "d['$3']"; }
storage_ok() { [ "$(ctl "$1" cluster status --json | json "d['storage_health']")" = ok ]; }
# define_on NODE NAME MEMORY WORKLOAD DISK-ARGS...: the test guest, its journal on /dev/vda
define_on() {
	local n=$1 name=$2 mem=$3 wl=$4
	shift 4
	ctl "$n" vm define --name "$name" --memory "$mem" --kernel "$G/vmlinux" \
		--initrd "$G/initramfs.cpio" --cmdline "console=ttyS0 quiet hca.disk=/dev/vda $wl" "$@" >/dev/null
}
job_field() { ctl "$1" job show "$2" --json | json "d['$3']"; }
# migrations NODE EXPR: EXPR over `migration list --json` asked on NODE (d: the list)
migrations() {
	ctl "$1" migration list --json | python3 -c "import json,sys; d=json.load(sys.stdin); print($2)" 2>/dev/null
}
job_phase_is() { [ "$(job_field "$1" "$2" phase)" = "$3" ]; }

# ---- seen from outside: QEMU processes and serial logs, by a helper ----
# vmwatch.py count|where PREFIX UUID: QEMUs of the VM in the nodes'
# namespaces, counted as test_ownership.sh's qemus does (running: not
# stopped, not a zombie; not the -daemonize launcher whose parent is hcad).
# vmwatch.py watch PREFIX UUID DC_DIR NAME OUT: every 0.3 s until OUT/stop,
# a line "TIME PHASE COUNT nodeK:PID..." in OUT/samples (PHASE read from
# OUT/phase) and what each node's serial log of NAME gained, appended to
# OUT/log.nK.N. Reading from open files loses nothing a log held, even
# if it is deleted or replaced; a node's next output after a time without
# a QEMU of the VM there starts a new line, so a line cut at a switchover
# never joins the next session's text into something that looks whole.
# vmwatch.py proof OUT: the counter lines of every kept log, as JSON.
# vmwatch.py samples FILE FROM: "N MAX-IN MAX-OUT" over the samples after
# line FROM (IN: phase other than "out").
cat >"$W" <<'PY'
import glob, json, os, re, sys, time


def node_inodes(prefix):
    m = {}
    for f in glob.glob("/run/netns/%s-node*" % prefix):
        try:
            m[os.stat(f).st_ino] = int(f.rsplit("node", 1)[1])
        except (OSError, ValueError):
            pass
    return m


def instances(prefix, uuid):
    ns, found, u = node_inodes(prefix), [], uuid.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
            if not any(a == b"-uuid" and b == u for a, b in zip(argv, argv[1:])):
                continue
            k = ns.get(os.stat("/proc/%s/ns/net" % d).st_ino)
            with open("/proc/%s/stat" % d) as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        try:
            with open("/proc/%s/comm" % ppid) as f:
                parent = f.read().strip()
        except OSError:
            parent = ""
        if k is None or state in ("Z", "X", "T", "t") or parent == "hcad":
            continue
        found.append((k, int(d), int(ppid)))
    # -daemonize forks twice: while the middle process lives, a QEMU's
    # parent is another process of the same VM; count the last of a chain
    parents = {pp for _, _, pp in found}
    return sorted((k, p) for k, p, _ in found if p not in parents)


def watch(prefix, uuid, dc, name, out):
    nodes = sorted(set(node_inodes(prefix).values()))
    logs = []                                     # [node, source, archive]
    current = {}                                  # node -> the source its path names
    seam = {k: False for k in nodes}
    samples = open(out + "/samples", "a")
    while True:
        stopping = os.path.exists(out + "/stop")
        try:  # the phase before the count: a count never precedes its label
            phase = open(out + "/phase").read().strip() or "out"
        except OSError:
            phase = "out"
        inst = instances(prefix, uuid)
        samples.write("%.3f %s %d %s\n" % (time.time(), phase, len(inst),
                                           " ".join("node%d:%d" % i for i in inst)))
        samples.flush()
        running = {k for k, _ in inst}
        for k in nodes:
            path = "%s/n%d/s/vm/%s/serial.log" % (dc, k, name)
            try:
                st, cur = os.stat(path), current.get(k)
                # a new file there (a deleted one's inode may be reused)
                if not cur or os.fstat(cur.fileno()).st_ino != st.st_ino or \
                        os.fstat(cur.fileno()).st_nlink == 0:
                    current[k] = open(path, "rb")
                    logs.append((k, current[k], open("%s/log.n%d.%d" % (out, k, len(logs)), "ab")))
            except OSError:
                pass
            for _, src, dst in (l for l in logs if l[0] == k):
                if os.fstat(src.fileno()).st_size < src.tell():
                    src.seek(0)  # truncated in place
                    dst.write(b"\n")
                data = src.read()
                if data:
                    if seam[k]:
                        dst.write(b"\n")
                        seam[k] = False
                    dst.write(data)
                    dst.flush()
            if k not in running:
                seam[k] = True
        if stopping:
            return
        time.sleep(0.3)


LINE = re.compile(rb"hca-workload boot=([0-9a-f]{16}) count=([0-9]+) seq=([0-9]+)\r?")


def proof(out):
    seen, boots, per_node, corrupt = {}, set(), {}, 0
    for f in sorted(glob.glob(out + "/log.n*")):
        node = "node" + os.path.basename(f).split(".")[1][1:]
        data = open(f, "rb").read()
        corrupt += data.count(b"mem-corrupt")
        for line in data.split(b"\n"):
            m = LINE.fullmatch(line)
            if m:
                boots.add(m[1].decode())
                seen.setdefault(int(m[2]), []).append(node)
                per_node[node] = per_node.get(node, 0) + 1
    counts = sorted(seen)
    dups = ["count=%d on %s" % (c, ",".join(seen[c])) for c in counts if len(seen[c]) > 1]
    print(json.dumps({"lines": sum(per_node.values()), "boots": sorted(boots), "dups": len(dups),
                      "dup_examples": dups[:5], "first": counts[0] if counts else 0,
                      "last": counts[-1] if counts else 0,
                      "missing": counts[-1] - counts[0] + 1 - len(counts) if counts else 0,
                      "per_node": per_node, "mem_corrupt": corrupt}))


def samples(path, start):
    rows = [l.split() for l in open(path).read().splitlines()[int(start):]]
    inn = [int(r[2]) for r in rows if r[1] != "out"]
    out = [int(r[2]) for r in rows if r[1] == "out"]
    print(len(rows), max(inn, default=0), max(out, default=0))


mode, args = sys.argv[1], sys.argv[2:]
if mode == "count":
    print(len(instances(*args)))
elif mode == "where":
    print(" ".join("node%d:%d" % i for i in instances(*args)))
elif mode == "watch":
    watch(*args)
elif mode == "proof":
    proof(*args)
elif mode == "samples":
    samples(*args)
PY

qemus() { python3 "$W" count "$HCA_DC_NETNS" "$1"; }
qemu_at() { python3 "$W" where "$HCA_DC_NETNS" "$1"; }
# only_on U NODE [PID]: exactly one QEMU of U, on NODE (with PID)
only_on() {
	local w
	w=$(qemu_at "$1")
	[ "${w%%:*}" = "$2" ] && [[ "$w" != *" "* ]] && { [ -z "${3:-}" ] || [ "${w#*:}" = "$3" ]; }
}
none_on() { [[ " $(qemu_at "$1") " != *" $2:"* ]]; }
# moved VM NODE OLD-PID: VM's one QEMU is on NODE, the one with OLD-PID is gone
moved() { only_on "${UUID[$1]}" "$2" && ! proc_alive "$3"; }

watch_start() { # VM
	mkdir -p "$TMP/w.$1"
	echo out >"$TMP/w.$1/phase"
	python3 "$W" watch "$HCA_DC_NETNS" "${UUID[$1]}" "$HCA_DC_DIR" "$1" "$TMP/w.$1" &
	WATCHERS+=($!)
}
phase() { echo "$2" >"$TMP/w.$1/phase"; }
mark() { wc -l <"$TMP/w.$1/samples" 2>/dev/null || echo 0; }
# samples_ok VM FROM WHAT: since samples line FROM, at most two QEMUs of VM
# during a migration, at most one outside
samples_ok() {
	local n max_in max_out
	read -r n max_in max_out <<<"$(python3 "$W" samples "$TMP/w.$1/samples" "$2")"
	if [ "${n:-0}" -gt 0 ] && [ "$max_in" -le 2 ] && [ "$max_out" -le 1 ]; then
		ok "$3: sampled $n times: at most $max_in QEMUs during it, $max_out outside"
	else
		not_ok "$3: sampled ${n:-0} times: at most ${max_in:-?} QEMUs during it, ${max_out:-?} outside"
		awk -v f="$2" 'NR > f && (($2 == "out" && $3 > 1) || $3 > 2)' "$TMP/w.$1/samples" | head -n 5 |
			while read -r l; do diag "sample: $l"; done
	fi
}

serial() { echo "$HCA_DC_DIR/n${1#node}/s/vm/$2/serial.log"; }
# count_on NODE VM: the counter of the last whole counter line in NODE's serial log of VM (0: none)
count_on() {
	local c
	c=$(grep -aoE '^hca-workload boot=[0-9a-f]{16} count=[0-9]+ seq=[0-9]+' "$(serial "$1" "$2")" 2>/dev/null |
		tail -n 1 | sed 's/.*count=\([0-9]*\).*/\1/')
	echo "${c:-0}"
}
count_above() { [ "$(count_on "$1" "$2")" -gt "$3" ]; }

# record_is VM OWNER EPOCH STATE: what every node's `vm show` says
record_is() {
	local k
	for k in 1 2 3; do
		[ "$(ctl "node$k" vm show "$1" --json | json "d['owner'], d['owner_epoch'], d['state']")" = "$2 $3 $4" ] ||
			return 1
	done
}
# untouched VM NODE EPOCH PID: still running on NODE with the same QEMU, record as it was
untouched() { record_is "$1" "$2" "$3" running && only_on "${UUID[$1]}" "$2" "$4"; }

# job_ok FILE VM FROM TO EPOCH: the job `vm migrate --json` printed
job_ok() {
	python3 - "$@" <<'PY'
import json, sys
f, vm, src, dst, epoch = sys.argv[1:]
try:
    j = json.load(open(f))
except ValueError:
    sys.exit(1)
m = j.get("migration") or {}
sys.exit(not (j.get("kind") == "migrate" and j.get("phase") == "succeeded" and j.get("vm") == vm
              and j.get("node") == src and m.get("source") == src and m.get("target") == dst
              and m.get("owner_epoch") == int(epoch)))
PY
}
figures() {
	python3 -c '
import json, sys
try:
    m = json.load(open(sys.argv[1]))["migration"]
    print("total %s ms, QEMU downtime %s ms, pause %s ms, setup %s ms, %.1f MiB of %.0f MiB sent in %s passes; %s; plan: %s; policy: %s" % (
        m["total_ms"], m["downtime_ms"], m["pause_ms"], m["setup_ms"], m["transferred"] / 2**20,
        m["ram_bytes"] / 2**20, m["passes"], m["mode"], m["plan"], m["policy"]))
except Exception as e:
    print("no migration report (%s)" % e)' "$1"
}

# migrate_ok VM ASK TO [OPTIONS]: a migration of VM to node TO asked on node
# ASK, and everything that must hold after it.
migrate_ok() {
	local vm=$1 ask=$2 to=$3 from e0 pid0 c0 m rc f what
	shift 3
	from=$(field node1 "$vm" owner)
	e0=$(field "$from" "$vm" owner_epoch)
	pid0=$(field "$from" "$vm" pid)
	c0=$(count_on "$from" "$vm")
	NMIG=$((NMIG + 1))
	f=$TMP/mig$NMIG
	what="$vm $from -> $to asked on $ask"
	m=$(mark "$vm")
	sleep 0.7 # samples before: one QEMU
	phase "$vm" in
	tctl 300 "$ask" vm migrate "$vm" "$to" --json "$@" >"$f.json" 2>"$f.err"
	rc=$?
	phase "$vm" out
	if [ "$rc" -ne 0 ]; then
		not_ok "$what: exit $rc"
		diag "stderr: $(head -c 400 "$f.err")"
		# what a failure must leave: the VM where it was
		check "$what failed: $vm still runs on $from, same QEMU, same record" \
			untouched "$vm" "$from" "$e0" "$pid0"
		samples_ok "$vm" "$m" "$what"
		return
	fi
	ok "$what: exit 0"
	MIGS[$vm]=$((${MIGS[$vm]:-0} + 1))
	check "$what: the job: migrate, run on $from, succeeded, owner epoch $((e0 + 1))" \
		job_ok "$f.json" "$vm" "$from" "$to" $((e0 + 1))
	diag "$what: $(figures "$f.json")"
	check "$what: every node says owner $to, epoch $((e0 + 1)), running" \
		wait_for 10 record_is "$vm" "$to" $((e0 + 1)) running
	check "$what: one QEMU, on $to; the source's (pid $pid0) is gone" moved "$vm" "$to" "$pid0"
	check "$what: the guest counts on on $to, past $c0" wait_for 20 count_above "$to" "$vm" $((c0 + 2))
	sleep 1 # samples after: one QEMU
	samples_ok "$vm" "$m" "$what"
}

# slow_migration VM ASK TO: a migration that cannot finish soon (5 MiB/s, no
# convergence help, no compression: zstd shrinks the busy guest's pages to a
# fifth, and 5 MiB/s of compressed pages ended it in a second or two, before
# the test could cancel it), without waiting; prints its job id
slow_migration() {
	tctl 60 "$2" vm migrate "$1" "$3" --no-wait --max-bandwidth 5 --converge never --compress none
}

SECONDS=0
if dc up 3 >/dev/null; then ok "3-node devcluster up in ${SECONDS}s"; else not_ok "devcluster up"; hca_done; exit 1; fi
for n in 1 2 3; do check "node$n: storage ok" wait_for 20 storage_ok node$n; done

check "define idle1 on node1 (128 MiB, RBD journal disk, $IDLE)" define_on node1 idle1 128M "$IDLE" --disk rbd:64M
check "define busy1 on node2 (192 MiB, RBD journal disk, $BUSY)" define_on node2 busy1 192M "$BUSY" --disk rbd:64M
check "start idle1 on node1" ctl node1 vm start idle1
check "start busy1 on node2" ctl node2 vm start busy1
for vm in idle1 busy1; do
	UUID[$vm]=$(field node1 "$vm" uuid)
	watch_start "$vm"
done
check "idle1 counts on node1" wait_for 60 count_above node1 idle1 0
check "busy1 counts on node2" wait_for 60 count_above node2 busy1 0
sleep 2 # the dirtier up to its rate

# ---- (a) the idle guest round the cluster, asked on neither, the source, the target ----
migrate_ok idle1 node3 node2
migrate_ok idle1 node2 node3
migrate_ok idle1 node1 node1

# ---- (b) the busy guest back and forth twice ----
migrate_ok busy1 node1 node3
migrate_ok busy1 node3 node2
migrate_ok busy1 node2 node3
migrate_ok busy1 node1 node2
n=$(migrations node3 "sum(j['kind'] == 'migrate' and j['phase'] == 'succeeded' for j in d)")
check "migration list on node3: the 7 migrations, succeeded (${n:-none})" test "${n:-0}" -ge 7

# ---- (c) refused, nothing changes ----
e_idle=$(field node1 idle1 owner_epoch)
p_idle=$(field node1 idle1 pid)
check "define loc1 on node1 with a local disk (qcow2 on node1)" define_on node1 loc1 128M "$IDLE" --disk 32M
check "start loc1 on node1" ctl node1 vm start loc1
UUID[loc1]=$(field node1 loc1 uuid)
e_loc=$(field node1 loc1 owner_epoch)
p_loc=$(field node1 loc1 pid)
expect_fail "loc1 (a local disk) to node2: refused, naming --with-storage" "vm loc1: .*--with-storage" \
	tctl 120 node2 vm migrate loc1 node2
check "loc1 still runs on node1: same QEMU ($p_loc), same owner and epoch ($e_loc)" untouched loc1 node1 "$e_loc" "$p_loc"
expect_fail "idle1 to node1, its owner: refused, naming node1" "vm idle1: .*node1" tctl 120 node3 vm migrate idle1 node1
expect_fail "idle1 to node9, not a member: refused, naming node9" "vm idle1: .*node9" tctl 120 node2 vm migrate idle1 node9
check "idle1 untouched by the refusals: node1, QEMU $p_idle, epoch $e_idle" untouched idle1 node1 "$e_idle" "$p_idle"
check "define cold1 on node3 (never started)" define_on node3 cold1 128M "$IDLE" --disk rbd:16M
e_cold=$(field node3 cold1 owner_epoch)
expect_fail "cold1 (stopped) to node2: refused, not running" "vm cold1: .*not running" tctl 120 node1 vm migrate cold1 node2
check "cold1 still stopped, owner node3, epoch $e_cold" record_is cold1 node3 "$e_cold" stopped
UUID[cold1]=$(field node1 cold1 uuid)
check "no QEMU of cold1 anywhere" test "$(qemus "${UUID[cold1]}")" = 0
check "stop loc1" ctl node1 vm stop loc1 --force

# ---- (d) a slow migration cancelled from a third node while in transfer ----
e0=$(field node1 busy1 owner_epoch)
p0=$(field node2 busy1 pid)
m=$(mark busy1)
phase busy1 in
jid=$(slow_migration busy1 node2 node3)
check "busy1 node2 -> node3 at 5 MiB/s, --no-wait: a job of node2 ($jid)" bash -c "[[ '$jid' == node2-* ]]"
if [ -n "$jid" ]; then
	check "the job reaches transfer" wait_for 60 job_phase_is node1 "$jid" transfer
	check "migration list on node1 shows it in transfer" \
		test "$(migrations node1 "[j['phase'] for j in d if j['id'] == '$jid']")" = "['transfer']"
	check "cancel from node1" ctl node1 job cancel "$jid"
	check "the job ends cancelled" wait_for 60 job_phase_is node3 "$jid" cancelled
	check "no QEMU of busy1 left on node3" wait_for 5 none_on "${UUID[busy1]}" node3
fi
phase busy1 out
check "busy1 still runs on node2: same QEMU ($p0), owner node2, epoch $e0" untouched busy1 node2 "$e0" "$p0"
check "busy1 counts on on node2" wait_for 20 count_above node2 busy1 $(($(count_on node2 busy1) + 2))
sleep 1
samples_ok busy1 "$m" "busy1, cancelled migration"

# ---- (e) the destination QEMU killed with -9 in transfer ----
m=$(mark busy1)
phase busy1 in
jid=$(slow_migration busy1 node2 node1)
check "busy1 node2 -> node1 at 5 MiB/s, --no-wait ($jid)" bash -c "[[ '$jid' == node2-* ]]"
if [ -n "$jid" ] && wait_for 60 job_phase_is node2 "$jid" transfer; then
	dst=$(qemu_at "${UUID[busy1]}" | tr ' ' '\n' | sed -n 's/^node1://p')
	check "the destination QEMU runs on node1 (pid ${dst:-none})" test -n "$dst"
	[ -z "$dst" ] || kill -9 "$dst"
	check "the job ends failed" wait_for 60 job_phase_is node3 "$jid" failed
	diag "the job's error: $(ctl node3 job show "$jid" --json | json "d['error']")"
	check "no QEMU of busy1 left on node1" wait_for 5 none_on "${UUID[busy1]}" node1
else
	not_ok "the job reaches transfer ($jid)"
fi
phase busy1 out
check "busy1 still runs on node2: same QEMU ($p0), owner node2, epoch $e0" untouched busy1 node2 "$e0" "$p0"
check "busy1 counts on on node2" wait_for 20 count_above node2 busy1 $(($(count_on node2 busy1) + 2))
sleep 1
samples_ok busy1 "$m" "busy1, destination killed"

# ---- (f) left for later: a destination without room (see the header) ----
ok "a destination without room for the guest refuses it # SKIP left for later: no node can be made short of room here"

# ---- the whole run: each guest ran exactly once, and lost nothing ----
for vm in idle1 busy1; do
	owner=$(field node1 "$vm" owner)
	check "shutdown $vm on $owner" ctl "$owner" vm shutdown "$vm" --timeout 60
done
for vm in idle1 busy1; do touch "$TMP/w.$vm/stop"; done
wait "${WATCHERS[@]}"
WATCHERS=()
for vm in idle1 busy1; do
	samples_ok "$vm" 0 "$vm, the whole run"
	pr=$(python3 "$W" proof "$TMP/w.$vm")
	diag "$vm serial logs: $pr"
	check "$vm: counter lines on the nodes it ran on, none printed twice" \
		test "$(json "d['lines'] > 100, d['dups']" <<<"$pr")" = "True 0"
	check "$vm: one boot id in every serial log" test "$(json "len(d['boots'])" <<<"$pr")" = 1
	check "$vm: counter lines lost only at switchovers (at most one each: ${MIGS[$vm]:-0})" \
		test "$(json "d['missing']" <<<"$pr")" -le "${MIGS[$vm]:-0}"
	on node1 qemu-img convert -O raw "rbd:hca/$vm-disk0:conf=$HCA_DC_DIR/ceph/ceph.conf:id=admin" "$TMP/$vm.raw"
	check "$vm: its journal from RBD verifies: one boot, no gap, nothing corrupt" \
		test "$("$VERIFY" "$TMP/$vm.raw" --json | json "d['boots'], d['gaps'], d['corrupt'], d['ok']")" = "1 0 0 True"
done
check "idle1 printed its counter on node1, node2 and node3" \
	test "$(python3 "$W" proof "$TMP/w.idle1" | json "sorted(d['per_node'])")" = "['node1', 'node2', 'node3']"
check "no mem-corrupt in any serial log, kept or current" \
	bash -c "! cat '$TMP'/w.*/log.* '$HCA_DC_DIR'/n*/s/vm/*/serial.log 2>/dev/null | grep -aq mem-corrupt"

hca_done
