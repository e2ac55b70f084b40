#!/usr/bin/env bash
# make demo, end to end, leaving nothing behind:
#  1. one node: hcad boots the test guest, is killed and restarted under the
#     running VM, shuts it down cleanly; the guest's journal is verified;
#  2. a 3-node cluster (corosync + Ceph, deploy/devcluster.sh): a VM defined
#     on node1 with an RBD disk, listed on node3, running on node2, then
#     live-migrated to node3; its journal read back from Ceph is verified;
#     then a VM with a local volume moves with it to node2 (--with-storage)
#     while its journal grows; it is replicated to node3 every 5 s (recovery
#     points, a test failover), fails over to node3 (planned: nothing lost),
#     and its journal is verified there.
set -euo pipefail

BUILD=${1:?usage: demo.sh BUILD_DIR}
HCACTL=$BUILD/hcactl
GUEST=$BUILD/guest
D=$(mktemp -d /tmp/hca-demo.XXXXXX)
export HCA_API="hca-demo-$$"
HCAD_PID=

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
counter() { grep -ao 'hca-workload boot=[0-9a-f]* count=[0-9]*' "$D/s/vm/web1/serial.log" 2>/dev/null | tail -n 1 | sed 's/.*count=//'; }

DCSH=$(dirname "$0")/devcluster.sh
export HCA_DC_DIR=/tmp/hca-demo-dc HCA_DC_NETNS=hcademo HCA_BUILD=$BUILD

cleanup() {
	[ -f "$D/s/vm/web1/qemu.pid" ] && kill -9 "$(cat "$D/s/vm/web1/qemu.pid")" 2>/dev/null
	[ -n "$HCAD_PID" ] && kill "$HCAD_PID" 2>/dev/null && wait "$HCAD_PID" 2>/dev/null
	"$DCSH" down >/dev/null 2>&1
	rm -rf "$D" "$HCA_DC_DIR.raw"
}
trap cleanup EXIT

start_hcad() {
	"$BUILD/hcad" -c "$D/hcad.conf" >>"$D/hcad.log" 2>&1 &
	HCAD_PID=$!
	for _ in $(seq 100); do "$HCACTL" node info >/dev/null 2>&1 && return; sleep 0.1; done
	echo "hcad did not start:"; tail "$D/hcad.log"; exit 1
}

cat >"$D/hcad.conf" <<CONF
node_name = demo
state_dir = $D/s
storage_dir = $D/vols
api_name = $HCA_API
CONF
SECONDS=0
step "starting hcad (state in $D)"
start_hcad
"$HCACTL" node info

step "defining web1: 1 vCPU, 128 MiB, a 64 MiB qcow2 journal disk, the test guest"
"$HCACTL" vm define --name web1 --vcpus 1 --memory 128M --disk 64M \
	--kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio" \
	--cmdline "console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=8 hca.dirty_rate=2"
"$HCACTL" vm start web1
"$HCACTL" vm list

step "the guest's serial console (workload counter, journal sequence)"
for _ in $(seq 300); do [ -n "$(counter)" ] && break; sleep 0.1; done
sleep 2
grep -a 'hca-workload' "$D/s/vm/web1/serial.log" | tail -n 3

step "kill -9 hcad: the VM keeps running"
pid=$("$HCACTL" vm show web1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
c0=$(counter)
kill -9 "$HCAD_PID"; wait "$HCAD_PID" 2>/dev/null || true
sleep 2
echo "QEMU pid $pid state: $(awk '{print $3}' /proc/"$pid"/stat); counter $c0 -> $(counter) while hcad was down"

step "restart hcad: it re-attaches to the running QEMU"
start_hcad
"$HCACTL" vm show web1 | grep -E '^(state|pid|accel)'

step "shutdown (ACPI power button, the guest flushes and powers off)"
"$HCACTL" vm shutdown web1 --timeout 60
"$HCACTL" vm list

step "verifying the guest's journal on its disk"
"$GUEST/hca-journal-verify" "$D/vols/web1-disk0.qcow2"

"$HCACTL" vm undefine web1
kill "$HCAD_PID"; wait "$HCAD_PID" 2>/dev/null || true
HCAD_PID=
unset HCA_API # each cluster node's hcad serves the default API in its namespace

on() { local n=$1; shift; "$DCSH" exec "$n" -- "$@"; }
step "a 3-node cluster: network namespaces, corosync, a tiny Ceph, hcad on each node"
"$DCSH" up 3
on node1 "$HCACTL" cluster status

step "define db1 on node1, its disk an RBD image in Ceph"
on node1 "$HCACTL" vm define --name db1 --vcpus 1 --memory 128M --disk rbd:64M \
	--kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio" \
	--cmdline "console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=8 hca.dirty_rate=2"
sleep 1
echo "node3 sees it:"
on node3 "$HCACTL" vm list

step "start it on node2 (node2 becomes its owner)"
on node2 "$HCACTL" vm start db1 --on node2
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$HCA_DC_DIR/n2/s/vm/db1/serial.log" 2>/dev/null && break; sleep 0.1; done
sleep 2
grep -a 'hca-workload' "$HCA_DC_DIR/n2/s/vm/db1/serial.log" | tail -n 2
echo "node1 sees it:"
on node1 "$HCACTL" vm list

step "from node3, which does not own it: show, shut down and start it again (carried to node2, as jobs)"
on node3 "$HCACTL" vm show db1 | grep -E '^(name|state|owner|node|active)'
on node3 "$HCACTL" vm shutdown db1 --timeout 60 --progress
on node3 "$HCACTL" vm start db1 --progress
boots() { grep -ao 'hca-workload boot=[0-9a-f]*' "$HCA_DC_DIR/n2/s/vm/db1/serial.log" 2>/dev/null | sort -u | wc -l; }
for _ in $(seq 300); do [ "$(boots)" -ge 2 ] && break; sleep 0.1; done
sleep 2 # the guest up again (it sees the power button once booted)
echo "the jobs, as any node sees them:"
on node1 "$HCACTL" job list | head -n 6

step "live-migrate it to node3, asked on node1 (carried to its owner node2): the guest runs on while its RAM crosses"
db1_log() { echo "$HCA_DC_DIR/n$1/s/vm/db1/serial.log"; }
echo "on node2 before: $(grep -a 'hca-workload boot=' "$(db1_log 2)" | tail -n 1)"
if [ -t 2 ]; then
	on node1 "$HCACTL" vm migrate db1 node3 # its progress line, rewritten in place
else
	on node1 "$HCACTL" vm migrate db1 node3 --progress
fi
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$(db1_log 3)" 2>/dev/null && break; sleep 0.1; done
sleep 1
echo "on node3 after, the same boot counting on:"
grep -a 'hca-workload boot=' "$(db1_log 3)" | tail -n 2
on node2 "$HCACTL" vm show db1 | grep -E '^(state|pid|owner)'
echo "the migration, as node2 sees it:"
on node2 "$HCACTL" migration list

step "shut it down from node1 (carried to its owner node3), read its journal back from Ceph and verify it"
on node1 "$HCACTL" vm shutdown db1 --timeout 60 --progress
on node1 qemu-img convert -O raw "rbd:hca/db1-disk0:conf=$HCA_DC_DIR/ceph/ceph.conf:id=admin" "$HCA_DC_DIR.raw"
"$GUEST/hca-journal-verify" "$HCA_DC_DIR.raw"
on node1 "$HCACTL" vm undefine db1

step "define app1 on node1 with a local disk (a 1 GiB qcow2 volume on node1), start it"
on node1 "$HCACTL" vm define --name app1 --vcpus 1 --memory 128M --disk 1G \
	--kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio" \
	--cmdline "console=ttyS0 quiet hca.disk=/dev/vda hca.rec_ms=20 hca.dirty_mib=8 hca.dirty_rate=2"
on node1 "$HCACTL" vm start app1
app1_log() { echo "$HCA_DC_DIR/n$1/s/vm/app1/serial.log"; }
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$(app1_log 1)" 2>/dev/null && break; sleep 0.1; done
sleep 2
echo "on node1: $(grep -a 'hca-workload boot=' "$(app1_log 1)" | tail -n 1)"
ls -ls "$HCA_DC_DIR"/n*/vols/app1-* 2>/dev/null

step "move it with its disk to node2 (shared-nothing: the volume is mirrored over TLS, then the memory), its journal growing all along"
if [ -t 2 ]; then
	on node1 "$HCACTL" vm migrate app1 node2 --with-storage
else
	on node1 "$HCACTL" vm migrate app1 node2 --with-storage --progress
fi
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$(app1_log 2)" 2>/dev/null && break; sleep 0.1; done
sleep 1
echo "on node2 after, the same boot counting on:"
grep -a 'hca-workload boot=' "$(app1_log 2)" | tail -n 2
echo "the volume now lives on node2 only (sparse: blocks in use on the left):"
ls -ls "$HCA_DC_DIR"/n*/vols/app1-* 2>/dev/null

step "replicate app1 (running on node2) to node3 every 5 s: changed blocks, zstd, over TLS"
on node2 "$HCACTL" replica enable app1 --to node3 --interval 5s --keep 6
points() { on node1 "$HCACTL" replica status app1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_point"])'; }
first=
for _ in $(seq 600); do p=$(points 2>/dev/null || echo 0); [ -n "$first" ] || { [ "$p" -gt 0 ] && first=$p; }; [ -n "$first" ] && [ "$p" -ge $((first + 2)) ] && break; sleep 0.5; done
echo "asked on node1 (neither source nor replica):"
on node1 "$HCACTL" replica status app1
on node1 "$HCACTL" replica points app1

step "test failover: a copy of the newest point boots on node3, without network, while replication goes on"
on node1 "$HCACTL" replica failover app1 --test --progress
clone_log=$HCA_DC_DIR/n3/s/vm/app1-test/serial.log
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$clone_log" 2>/dev/null && break; sleep 0.1; done
sleep 1
echo "the test copy, from the point's journal on:"
grep -a 'hca-workload boot=' "$clone_log" | tail -n 1
on node1 "$HCACTL" replica failover app1 --test --stop --progress

step "planned failover to node3: the guest pauses, its last changes ship, it starts on node3 (nothing it wrote is lost)"
on node1 "$HCACTL" replica failover app1 --planned --progress
on node1 "$HCACTL" vm list
for _ in $(seq 300); do grep -aq 'hca-workload boot=' "$(app1_log 3)" 2>/dev/null && break; sleep 0.1; done
sleep 1
grep -a 'hca-workload boot=' "$(app1_log 3)" | tail -n 1

step "shut it down on node3, verify its journal on node3's volume (two boots: node2's, then node3's)"
on node3 "$HCACTL" vm shutdown app1 --timeout 60 --progress
"$GUEST/hca-journal-verify" "$HCA_DC_DIR/n3/vols/app1-disk0.qcow2"
on node3 "$HCACTL" replica disable app1
on node3 "$HCACTL" vm undefine app1

step "tearing the cluster down"
"$DCSH" down
step "demo finished in ${SECONDS}s"
