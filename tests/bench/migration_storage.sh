#!/usr/bin/env bash
# make bench, shared-nothing migration part, on a 3-node devcluster: a guest
# whose 8 GiB local qcow2 disk holds 1 GiB of data, idle and writing its
# journal (a 4 KiB record every 2 ms, ~2 MiB/s), moved node1 <-> node2 by
# `hcactl vm migrate --with-storage` (TLS on: NBD and migration stream),
# against, in the same run:
#   baseline: the plain QEMU sequence libvirt's --copy-storage-all drives
#             (destination: nbd-server-start + a writable export + incoming;
#             source: blockdev-mirror to it, once ready `migrate` with
#             max-bandwidth unlimited and QEMU's other defaults, the mirrors
#             cancelled at pre-switchover), no TLS, by hand over QMP, on QEMUs
#             running hcad's own command line for the VM;
#   link:     raw TCP between the two nodes' namespaces (no TLS), 1 GiB.
# Figures per migration: total time (hca: the job, check to cleanup; the
# baseline: from the destination's QEMU launch to its guest running), the
# pause seen from outside (source STOP to destination RESUME event, one
# clock), bytes that left the source's interface. Medians; ratios.
# Targets (the issue): total <= 1.2 x (allocated + RAM) / link rate and
# <= 1.0 x the baseline; pause <= 200 ms.
# HCA_BENCH_BIG=1: a 2 GiB guest (the issue's size), else 512 MiB;
# HCA_BENCH_MIGRATIONS runs of each path (default 3).
set -uo pipefail

BUILD=$(cd "${1:?usage: migration_storage.sh BUILD_DIR}" && pwd)
TOP=$(cd "$(dirname "$0")/../.." && pwd)
DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-bench-sn HCA_DC_NETNS=hcabs HCA_BUILD=$BUILD
unset HCA_API
RUNS=${HCA_BENCH_MIGRATIONS:-3}
MEM=512M
[ "${HCA_BENCH_BIG:-0}" = 1 ] && MEM=2G
DATA_MIB=1024
G=$BUILD/guest
B=$(mktemp -d /tmp/hsb.XXXXXX) # short: QEMU's unix sockets live below it
NET=10.250.0                   # the devcluster's node addresses: nodeK = NET.K

MAIN=$BASHPID
cleanup() {
	local f
	[ "$BASHPID" = "$MAIN" ] || return 0 # not from a subshell
	for f in "$B"/q*/qemu.pid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	"$DCSH" down >/dev/null 2>&1
	rm -rf "$B"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

on() { local n=$1; shift; "$DCSH" exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$BUILD/hcactl" "$@"; }
other() { [ "$1" = node1 ] && echo node2 || echo node1; }
tx_bytes() {
	ip netns exec "$HCA_DC_NETNS-$1" sh -c 'cat /sys/class/net/*/statistics/tx_bytes' |
		awk '{s += $1} END {printf "%.0f\n", s}'
}
vol() { echo "$HCA_DC_DIR/n${1#node}/vols/$2-disk0.qcow2"; }
wait_counting() {
	for _ in $(seq 1800); do
		grep -aq 'hca-workload boot=.* count=' "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ---- the link: raw TCP, node1 -> node2 ----
cat >"$B/link.py" <<'PY'
import socket, sys, time
mode, host = sys.argv[1], sys.argv[2]
N = 1 << 30
if mode == "recv":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 5099))
    s.listen(1)
    c, _ = s.accept()
    got, t0 = 0, None
    while True:
        d = c.recv(1 << 20)
        if t0 is None:
            t0 = time.time()
        if not d:
            break
        got += len(d)
    print(int(got / (time.time() - t0)))
else:
    for _ in range(100):
        try:
            s = socket.create_connection((host, 5099))
            break
        except OSError:
            time.sleep(0.05)
    buf = b"\0" * (1 << 20)
    for _ in range(N >> 20):
        s.sendall(buf)
    s.close()
PY
link_rate() {
	local out
	on node2 python3 "$B/link.py" recv "$NET.2" >"$B/link.out" &
	sleep 0.3
	on node1 python3 "$B/link.py" send "$NET.2"
	wait
	cat "$B/link.out"
}

# ---- the baseline: two QEMUs by hand ----

# argv.py ARGV_FILE DIR UUID OLD_DISK NEW_DISK [incoming]: hcad's command line
# for the VM with its runtime paths moved to DIR, its own uuid, its disk file
# replaced, and for a destination `-incoming defer`.
cat >"$B/argv.py" <<'PY'
import os, sys
src, new, uuid, old_disk, new_disk = sys.argv[1:6]
argv = open(src, "rb").read().decode().split("\0")[:-1]
old = os.path.dirname(argv[argv.index("-pidfile") + 1])
out, skip = [], False
for a in argv:
    if skip:
        skip = False
    elif a == "-incoming":
        skip = True
    elif a != "-S":
        out.append(a.replace(old_disk, new_disk).replace(old, new))
out[out.index("-uuid") + 1] = uuid
if len(sys.argv) > 6:
    out += ["-incoming", "defer"]
sys.stdout.write("".join(a + "\0" for a in out))
PY

# copy_storage.py SRC_QMP DST_QMP HOST NBD_PORT MIG_PORT: libvirt's
# --copy-storage-all, no TLS, QEMU's defaults but bandwidth unlimited.
cat >"$B/copy_storage.py" <<'PY'
import json, select, socket, sys, time

UNLIMITED = (2**63 - 1) >> 20 << 20


from hca_qmp import Qmp


src, dst = Qmp(sys.argv[1]), Qmp(sys.argv[2])
host, nport, mport = sys.argv[3], sys.argv[4], sys.argv[5]
dst.cmd("nbd-server-start", addr={"type": "inet", "data": {"host": host, "port": nport}})
dst.cmd("block-export-add", type="nbd", id="exp0", **{"node-name": "drive-disk0"},
        writable=True, name="disk0")
# events: the MIGRATION events (pre-switchover, completed) come only with it
src.cmd("migrate-set-capabilities", capabilities=[
    {"capability": "events", "state": True},
    {"capability": "pause-before-switchover", "state": True}])
dst.cmd("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
dst.cmd("migrate-incoming", uri="tcp:%s:%s" % (host, mport))
src.cmd("blockdev-add", driver="nbd", **{"node-name": "nbd0"},
        server={"type": "inet", "host": host, "port": nport}, export="disk0")
src.cmd("blockdev-mirror", **{"job-id": "m0"}, device="drive-disk0", target="nbd0", sync="full")
if src.event("BLOCK_JOB_READY", 600) is None:
    raise TimeoutError("mirror not ready in 600 s")
src.cmd("migrate-set-parameters", **{"max-bandwidth": UNLIMITED})
src.cmd("migrate", uri="tcp:%s:%s" % (host, mport))
if src.event("MIGRATION", 600, lambda e: e["data"]["status"] == "pre-switchover") is None:
    raise TimeoutError("no pre-switchover in 600 s")
src.cmd("block-job-cancel", device="m0")
src.event("BLOCK_JOB_COMPLETED", 60)
src.cmd("blockdev-del", **{"node-name": "nbd0"})
src.cmd("migrate-continue", state="pre-switchover")
while True:
    st = src.cmd("query-migrate")
    if st.get("status") in ("completed", "failed", "cancelled"):
        break
    time.sleep(0.05)
if st["status"] != "completed":
    print(json.dumps({"failed": "%s: %s" % (st["status"], st.get("error-desc", ""))}))
    sys.exit()
dst.event("MIGRATION", 30, lambda e: e["data"]["status"] == "completed")
dst.cmd("block-export-del", id="exp0", mode="hard")
dst.event("BLOCK_EXPORT_DELETED", 10)
dst.cmd("nbd-server-stop")
dst.cmd("cont")
stop, resume = src.event("STOP", 5), dst.event("RESUME", 30)
end = time.time()
print(json.dumps({"end": end, "pause_ms": round((resume - stop) * 1000, 1) if stop and resume else None,
                  "downtime_ms": st.get("downtime")}))
src.cmd("quit")
PY

QN=0
QDIR=
qemu_start() { # NODE ARGV_FILE UUID DISK [incoming]
	local n=$1 src=$2 uuid=$3 disk=$4 argv=()
	QN=$((QN + 1))
	QDIR=$B/q$QN
	mkdir -p "$QDIR"
	mapfile -d '' argv < <(python3 "$B/argv.py" "$src" "$QDIR" "$uuid" "$ORIG_DISK" "$disk" ${5:+incoming})
	on "$n" "${argv[@]}" >"$QDIR/start.log" 2>&1 || { tail -n 1 "$QDIR/start.log" >&2; return 1; }
}

CUR=
CUR_DISK=
baseline_once() { # FROM TO OUT ARGV UUID
	local from=$1 to=$2 out=$3 argv=$4 uuid=$5 disk t0 a b res
	disk=$B/disk.$QN.$to.qcow2
	qemu-img create -q -f qcow2 "$disk" 8G
	a=$(tx_bytes "$from")
	t0=$(date +%s.%N)
	if ! qemu_start "$to" "$argv" "$uuid" "$disk" incoming; then
		echo '{"failed": "destination QEMU did not start"}' >>"$out"
		return 1
	fi
	res=$(PYTHONPATH="$TOP/tests/bench" python3 "$B/copy_storage.py" "$CUR/qmp.sock" "$QDIR/qmp.sock" "$NET.${to#node}" \
		$((20000 + QN)) $((21000 + QN)) 2>&1 | tail -n 1)
	b=$(tx_bytes "$from")
	res=$(printf '%s' "$res" | python3 -c '
import json, sys
t0, sent = float(sys.argv[1]), int(sys.argv[2])
raw = sys.stdin.read()
try:
    r = json.loads(raw)
except Exception:
    r = {"failed": raw[:200]}
if "end" in r:
    r = {"total_ms": round((r["end"] - t0) * 1000), "pause_ms": r["pause_ms"],
         "downtime_ms": r["downtime_ms"], "sent": sent}
print(json.dumps(r))' "$t0" "$((b - a))")
	echo "$res" >>"$out"
	case "$res" in
	'{"failed"'*)
		kill -9 "$(cat "$QDIR/qemu.pid" 2>/dev/null)" 2>/dev/null
		return 1 ;;
	esac
	kill -9 "$(cat "$CUR/qemu.pid" 2>/dev/null)" 2>/dev/null
	rm -f "$CUR_DISK"
	CUR=$QDIR
	CUR_DISK=$disk
}

hca_once() { # VM FROM TO OUT
	local vm=$1 from=$2 to=$3 out=$4 res rc a b
	a=$(tx_bytes "$from")
	res=$(timeout 900 "$DCSH" exec "$from" -- "$BUILD/hcactl" vm migrate "$vm" "$to" --with-storage --json 2>"$B/err")
	rc=$?
	b=$(tx_bytes "$from")
	printf '%s' "$res" | python3 -c '
import json, sys
rc, err, sent = int(sys.argv[1]), open(sys.argv[2]).read().strip(), int(sys.argv[3])
try:
    j = json.load(sys.stdin)
    m = j["migration"]
except Exception:
    print(json.dumps({"failed": "exit %d: %s" % (rc, err[:200])}))
    sys.exit()
if rc or j.get("phase") != "succeeded":
    print(json.dumps({"failed": "exit %d, phase %s: %s" % (rc, j.get("phase"), err[:200])}))
else:
    print(json.dumps({"total_ms": m.get("elapsed_ms"), "pause_ms": m.get("pause_ms"),
                      "downtime_ms": m.get("downtime_ms"), "sent": sent,
                      "disk_ready_ms": m.get("disk_ready_ms"), "finish_ms": m.get("disk_finish_ms"),
                      "mode": m.get("mode"), "disk_mode": m.get("disk_mode")}))' \
		"$rc" "$B/err" "$((b - a))" >>"$out"
}

bench_guest() { # PROFILE CMDLINE-EXTRA
	local prof=$1 extra=$2 vm tag pid uuid from to
	vm=bs-$prof
	tag=$B/res.$prof
	: >"$tag.hca"
	: >"$tag.base"
	if ! ctl node1 vm define --name "$vm" --memory "$MEM" --disk 8G --kernel "$G/vmlinux" \
		--initrd "$G/initramfs.cpio" --cmdline "console=ttyS0 quiet hca.disk=/dev/vda $extra" \
		>/dev/null; then
		echo "bench: $vm not defined" >&2
		return 1
	fi
	qemu-io -f qcow2 -c "write -P 0x5a 1G ${DATA_MIB}M" "$(vol node1 "$vm")" >/dev/null
	ctl node1 vm start "$vm" >/dev/null || { echo "bench: $vm did not start" >&2; return 1; }
	pid=$(cat "$HCA_DC_DIR/n1/s/vm/$vm/qemu.pid")
	cp "/proc/$pid/cmdline" "$tag.argv"
	ORIG_DISK=$(vol node1 "$vm")
	wait_counting "$HCA_DC_DIR/n1/s/vm/$vm/serial.log" || { echo "bench: $vm did not boot" >&2; return 1; }
	sleep 2
	from=node1 to=node2
	for _ in $(seq "$RUNS"); do
		hca_once "$vm" "$from" "$to" "$tag.hca"
		grep -q '"failed"' <(tail -n 1 "$tag.hca") || { from=$to; to=$(other "$from"); }
		sleep 2
	done
	ctl "$from" vm shutdown "$vm" --timeout 60 >/dev/null 2>&1 || ctl "$from" vm stop "$vm" --force >/dev/null 2>&1
	# the baseline: the same guest, fresh, on its own disk files
	CUR_DISK=$B/disk.base.qcow2
	qemu-img create -q -f qcow2 "$CUR_DISK" 8G
	qemu-io -f qcow2 -c "write -P 0x5a 1G ${DATA_MIB}M" "$CUR_DISK" >/dev/null
	uuid=$(cat /proc/sys/kernel/random/uuid)
	if ! qemu_start node1 "$tag.argv" "$uuid" "$CUR_DISK" || ! wait_counting "$QDIR/serial.log"; then
		echo "bench: the baseline QEMU did not boot" >&2
		return 1
	fi
	CUR=$QDIR
	sleep 2
	from=node1 to=node2
	for _ in $(seq "$RUNS"); do
		baseline_once "$from" "$to" "$tag.base" "$tag.argv" "$uuid" && { from=$to; to=$(other "$from"); }
		sleep 2
	done
	kill -9 "$(cat "$CUR/qemu.pid" 2>/dev/null)" 2>/dev/null
}

"$DCSH" down >/dev/null 2>&1
"$DCSH" up 3 >/dev/null || { echo "bench: devcluster up failed" >&2; exit 1; }
LINK=$(link_rate)
bench_guest idle "hca.dirty_rate=0"
bench_guest writing "hca.rec_ms=2 hca.dirty_rate=0"
LINK2=$(link_rate)
echo
echo "Shared-nothing migration on a 3-node devcluster (accel: tcg): $MEM guest, 8 GiB local qcow2"
echo "disk holding $DATA_MIB MiB, node1 <-> node2, $RUNS migrations per path; medians"
python3 - "$B" "$LINK" "$LINK2" "$MEM" "$DATA_MIB" <<'PY'
import json, os, sys

b, l1, l2, mem, data = sys.argv[1], int(sys.argv[2] or 0), int(sys.argv[3] or 0), sys.argv[4], int(sys.argv[5])
ram = (2 << 30) if mem == "2G" else (512 << 20)
link = (l1 + l2) // 2 if l1 and l2 else (l1 or l2)
print("link (raw TCP, no TLS): %.0f MiB/s (%.0f at the start, %.0f at the end)" %
      (link / 2**20, l1 / 2**20, l2 / 2**20))
ideal_ms = (data * 2**20 + ram) / link * 1000 if link else None


def load(f):
    rows = [json.loads(l) for l in open(f) if l.strip()] if os.path.exists(f) else []
    return [r for r in rows if "failed" not in r], [r["failed"] for r in rows if "failed" in r]


def med(v):
    v = sorted(x for x in v if x is not None)
    return None if not v else (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2


def fmt(x, nd=0):
    return "-" if x is None else "%.*f" % (nd, x)


flags = []
for prof in ("idle", "writing"):
    hca, hf = load("%s/res.%s.hca" % (b, prof))
    base, bf = load("%s/res.%s.base" % (b, prof))
    print("\n%s guest:" % prof)
    print("%-46s %5s %9s %8s %8s %9s" % ("path", "ok", "total ms", "pause", "downtime", "MiB sent"))
    for label, ok, failed in (("hca --with-storage (TLS)", hca, hf),
                              ("QEMU by hand, --copy-storage-all (no TLS)", base, bf)):
        print("%-46s %5s %9s %8s %8s %9s" % (label, "%d/%d" % (len(ok), len(ok) + len(failed)),
              fmt(med([r["total_ms"] for r in ok])), fmt(med([r["pause_ms"] for r in ok]), 1),
              fmt(med([r["downtime_ms"] for r in ok])),
              fmt(med([r["sent"] / 2**20 for r in ok]), 0)))
        for f in sorted(set(failed)):
            print("   failed (%dx): %s" % (failed.count(f), f[:160]))
    if hca:
        print("   hca: disks in sync after %s ms (median); closing the mirrors %s ms of the pause; %s" %
              (fmt(med([r["disk_ready_ms"] for r in hca])), fmt(med([r["finish_ms"] for r in hca])),
               hca[0].get("mode")))
    t, tb = med([r["total_ms"] for r in hca]), med([r["total_ms"] for r in base])
    p = med([r["pause_ms"] for r in hca])
    if t and tb:
        r = t / tb
        print("   hca / baseline total: %.2f (target <= 1.0)%s" % (r, "" if r <= 1.0 else "  MISSED"))
        if r > 1.0:
            flags.append("%s: total %.2fx the baseline" % (prof, r))
    if t and ideal_ms:
        r = t / ideal_ms
        print("   hca total / ((data + RAM) / link): %.2f (target <= 1.2)%s" %
              (r, "" if r <= 1.2 else "  MISSED"))
        if r > 1.2:
            flags.append("%s: total %.2fx (data + RAM) / link" % (prof, r))
    if p is not None:
        print("   hca pause %.1f ms (target <= 200)%s" % (p, "" if p <= 200 else "  MISSED"))
        if p > 200:
            flags.append("%s: pause %.1f ms" % (prof, p))
    if hca:
        s = med([r["sent"] for r in hca])
        print("   hca sent / (data + RAM): %.2f" % (s / (data * 2**20 + ram)))
print()
print("FLAG: " + "; ".join(flags) if flags else "every target met")
if mem != "2G":
    print("(a 512 MiB guest; HCA_BENCH_BIG=1 runs the issue's 2 GiB one)")
PY
