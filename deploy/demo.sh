#!/usr/bin/env bash
# make demo: one node, end to end. Starts hcad, boots the test guest, shows
# its counter, kills and restarts hcad under the running VM, shuts the VM
# down cleanly and verifies its journal. Leaves nothing behind.
set -euo pipefail

BUILD=${1:?usage: demo.sh BUILD_DIR}
HCACTL=$BUILD/hcactl
GUEST=$BUILD/guest
D=$(mktemp -d /tmp/hca-demo.XXXXXX)
export HCA_API="hca-demo-$$"
HCAD_PID=

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
counter() { grep -ao 'hca-workload boot=[0-9a-f]* count=[0-9]*' "$D/s/vm/web1/serial.log" 2>/dev/null | tail -n 1 | sed 's/.*count=//'; }

cleanup() {
	[ -f "$D/s/vm/web1/qemu.pid" ] && kill -9 "$(cat "$D/s/vm/web1/qemu.pid")" 2>/dev/null
	[ -n "$HCAD_PID" ] && kill "$HCAD_PID" 2>/dev/null && wait "$HCAD_PID" 2>/dev/null
	rm -rf "$D"
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
step "demo finished in ${SECONDS}s; cleaning up"
