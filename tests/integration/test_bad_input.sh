#!/usr/bin/env bash
# Every bad input gets one clear line naming the VM and the cause, a non-zero
# exit, and leaves no volume, process or record behind.
HCA_QMP_TIMEOUT_MS=1500
. "$(dirname "$0")/lib.sh"
hca_setup

records() { ls "$T/s/store/vm" 2>/dev/null | wc -l; }
volumes() { ls "$T/vols" 2>/dev/null | wc -l; }
qemus() { pgrep -f -- "-name guest=$1," | wc -l; }
# exit_is CODE CMD...: CMD exits with CODE (what it prints is not looked at).
exit_is() { local want=$1; shift; "$@" >/dev/null 2>&1; [ $? -eq "$want" ]; }
job_phase() {
	"$HCACTL" job show "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['phase'])"
}
job_phase_is() { [ "$(job_phase "$1")" = "$2" ]; }

check "define good1" define_guest good1
expect_fail "duplicate name" "vm good1: already defined" define_guest good1
expect_fail "unknown VM" "vm nosuch: no such VM" "$HCACTL" vm start nosuch
expect_fail "invalid name" "invalid" "$HCACTL" vm define --name 'Bad Name' --kernel "$GUEST/vmlinux"
small() { "$HCACTL" vm define --name "$1" --disk 16M --kernel "$GUEST/vmlinux" "${@:2}"; }
expect_fail "zero memory" "memory" small m0 --memory 0
expect_fail "oversized memory" "vm m1: memory .* out of range" small m1 --memory 64T
expect_fail "zero vCPUs" "vcpus" small c0 --vcpus 0
expect_fail "too many vCPUs" "vm c1: vcpus 999 out of range" small c1 --vcpus 999
expect_fail "missing kernel file" "vm k1: kernel '/nonexistent/vmlinux': No such file" \
	"$HCACTL" vm define --name k1 --disk 64M --kernel /nonexistent/vmlinux
expect_fail "missing disk image" "vm d1: disk image '/nonexistent.img'" \
	"$HCACTL" vm define --name d1 --disk name=data,path=/nonexistent.img --kernel "$GUEST/vmlinux"
check "nothing half-created by failed defines (1 record, 1 volume)" test "$(records)-$(volumes)" = "1-1"

# a disk in use by another VM
qemu-img create -q -f raw "$T/shared.img" 16M
check "define with an attached image" "$HCACTL" vm define --name att1 --disk "name=data,path=$T/shared.img,format=raw" --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio"
expect_fail "disk in use by another VM" "vm att2: disk data: .*shared.img is in use by vm att1" \
	"$HCACTL" vm define --name att2 --disk "name=data,path=$T/shared.img,format=raw" --kernel "$GUEST/vmlinux"
expect_fail "the same image by another path (/./) is in use too" "vm att3: disk data: .*shared.img is in use by vm att1" \
	"$HCACTL" vm define --name att3 --disk "name=data,path=$T/./shared.img,format=raw" --kernel "$GUEST/vmlinux"
ln -s "$T/shared.img" "$T/link.img"
expect_fail "the same image through a symlink is in use too" "vm att4: disk data: .*shared.img is in use by vm att1" \
	"$HCACTL" vm define --name att4 --disk "name=data,path=$T/link.img,format=raw" --kernel "$GUEST/vmlinux"
uuid1=$(vm_field good1 uuid)
expect_fail "a uuid already used by another VM" "vm dup1: uuid $uuid1 is already vm good1's" \
	"$HCACTL" vm define --name dup1 --uuid "$uuid1" --disk 16M --kernel "$GUEST/vmlinux"
# an attached qcow2 is opened alone, never with the backing file it names
qemu-img create -q -f raw "$T/secret.raw" 16M
qemu-img create -q -f qcow2 -b "$T/secret.raw" -F raw "$T/overlay.qcow2"
check "define a VM with a qcow2 that names a backing file" "$HCACTL" vm define --name ovl \
	--disk "name=data,path=$T/overlay.qcow2,format=qcow2" --kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio"
check "start it" "$HCACTL" vm start ovl
check "its QEMU did not open the backing file" bash -c "! ls -l /proc/\$(cat '$T/s/vm/ovl/qemu.pid')/fd | grep -q secret.raw"
check "stop it" "$HCACTL" vm stop ovl --force

# starting twice
check "start good1" "$HCACTL" vm start good1
expect_fail "start a running VM" "vm good1: already running" "$HCACTL" vm start good1
expect_fail "undefine a running VM" "vm good1: is running; stop it first" "$HCACTL" vm undefine good1

# QMP timeout: QEMU frozen with SIGSTOP cannot answer
pid=$(qemu_pid good1)
kill -STOP "$pid"
expect_fail "QMP timeout names the VM and the command" "vm good1: QEMU did not answer .stop. within 1500 ms" \
	"$HCACTL" vm pause good1
kill -CONT "$pid"
check "forced stop after the timeout" wait_for 10 "$HCACTL" vm stop good1 --force
no_qemu() { test "$(qemus "$1")" -eq 0; } # re-evaluated on every try
check "no QEMU left for good1" wait_for 5 no_qemu good1

# QEMU failing to start: its stderr is shown, nothing is left running
echo "not a kernel" >"$T/notakernel"
check "define a VM whose kernel is junk" "$HCACTL" vm define --name junk --disk 16M --kernel "$T/notakernel"
expect_fail "QEMU failure shows QEMU's stderr" "vm junk: QEMU failed to start: .*(kernel|PVH|ELF|linux)" \
	"$HCACTL" vm start junk
check "junk is stopped, no QEMU left" test "$(vm_state junk)-$(qemus junk)" = "stopped-0"

# the same failure as a job not waited for: the id at once, the error in the job
id=$("$HCACTL" vm start junk --no-wait 2>/dev/null)
check "--no-wait prints the job's id ('$id')" grep -qE '^[a-z0-9-]+-[0-9]+$' <<<"$id"
check "the job of the junk start ends failed" wait_for 30 job_phase_is "$id" failed
job_error() { "$HCACTL" job show "$1" | grep -qE "^error: +vm junk: QEMU failed to start"; }
check "job show gives QEMU's error" job_error "$id"
check "junk is still stopped, no QEMU left" test "$(vm_state junk)-$(qemus junk)" = "stopped-0"

# a disk volume deleted behind hcad's back
rm -f "$T/vols/junk-disk0.qcow2"
expect_fail "start with a missing volume" "vm junk: disk disk0: .*No such file" "$HCACTL" vm start junk

# malformed API messages
for kind in garbage badmagic truncated badcrc wrongtype badheader; do
	msg=$("$BUILD/tools/api_raw" "$HCA_API" "$kind")
	if [ $? -eq 0 ] && grep -q '^malformed request' <<<"$msg"; then
		ok "malformed API message ($kind): $msg"
	else
		not_ok "malformed API message ($kind) refused cleanly"
	fi
done
check "hcad still serves after malformed messages" "$HCACTL" vm list

# jobs: what the user types wrong is refused in one line
expect_fail "job show of an unknown job" "job nosuch: .*(no such job|not found)" "$HCACTL" job show nosuch
check "an unknown job is hcad's error (exit 1)" exit_is 1 "$HCACTL" job show nosuch
expect_fail "job cancel of an unknown job" "job nosuch: .*(no such job|not found)" "$HCACTL" job cancel nosuch
expect_fail "job cancel without an id" "missing argument \(usage: hcactl job cancel ID\)" "$HCACTL" job cancel
check "job cancel without an id is a usage error (exit 2)" exit_is 2 "$HCACTL" job cancel
expect_fail "a job id that cannot be one" "invalid job id" "$HCACTL" job show 'no such'
expect_fail "--no-wait on a command that is not long" "unknown option '--no-wait' for 'vm pause'" \
	"$HCACTL" vm pause good1 --no-wait
check "--no-wait on vm list is a usage error (exit 2)" exit_is 2 "$HCACTL" vm list --no-wait
expect_fail "--no-wait with --progress" "--no-wait and --progress exclude each other" \
	"$HCACTL" vm start good1 --no-wait --progress

# corrupt state record: hcad names it and keeps serving the other VMs
hcad_stop
rec="$T/s/store/vm/good1.rec"
printf '\xff' | dd of="$rec" bs=1 seek=40 conv=notrunc status=none
hcad_start
expect_fail "corrupt record named on show" "good1.*corrupt" "$HCACTL" vm show good1
expect_fail "corrupt record refused for start" "good1.*corrupt" "$HCACTL" vm start good1
check "other VMs still served" "$HCACTL" vm show att1

# bad configuration files
for bad in "state_dir = relative" "nosuchkey = 1" "qmp_timeout_ms = 5" "accel = fast" "just words"; do
	printf '%s\n' "$bad" >"$T/bad.conf"
	expect_fail "config '$bad' refused with file:line" "bad.conf:1: " "$HCAD" -c "$T/bad.conf"
done
expect_fail "missing config file" "nonexistent.conf" "$HCAD" -c "$T/nonexistent.conf"
expect_fail "second hcad on one state dir" "another hcad" "$HCAD" -c "$T/hcad.conf"

hca_done
