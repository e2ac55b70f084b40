# Shared by the integration tests: TAP output, a private hcad, the test guest.
# Each test script sources this, calls hca_setup, and ends with hca_done.
# Everything runs for real: hcad, hcactl, QEMU 10 and the test guest.
set -uo pipefail

BUILD=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HCAD=$BUILD/hcad
HCACTL=$BUILD/hcactl
GUEST=$BUILD/guest
VERIFY=$GUEST/hca-journal-verify
TAP_N=0
TAP_FAILED=0

ok() { TAP_N=$((TAP_N + 1)); echo "ok $TAP_N - $*"; }
not_ok() { TAP_N=$((TAP_N + 1)); TAP_FAILED=$((TAP_FAILED + 1)); echo "not ok $TAP_N - $*"; }
diag() { echo "# $*"; }

# check DESC CMD...: passes when CMD succeeds.
check() {
	local desc=$1
	shift
	if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

# expect_fail DESC PATTERN CMD...: CMD must exit non-zero with exactly one
# line on stderr matching PATTERN (grep -E).
expect_fail() {
	local desc=$1 pat=$2 out rc
	shift 2
	out=$("$@" 2>&1 >/dev/null)
	rc=$?
	if [ "$rc" -ne 0 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] &&
	   printf '%s' "$out" | grep -qE -- "$pat"; then
		ok "$desc"
	else
		not_ok "$desc"
		diag "exit $rc, stderr: $out"
	fi
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

hca_setup() {
	[ -x "$HCAD" ] && [ -x "$HCACTL" ] || { echo "Bail out! build hcad and hcactl first"; exit 1; }
	[ -f "$GUEST/vmlinux" ] || { echo "Bail out! no test guest: make guest"; exit 1; }
	# short: QEMU's unix sockets live under it (sun_path is 108 bytes)
	T=$(mktemp -d /tmp/hca.XXXXXX)
	export HCA_API="hca-test-$$"
	cat >"$T/hcad.conf" <<CONF
node_name = testnode
state_dir = $T/s
storage_dir = $T/vols
api_name = $HCA_API
log_level = debug
qmp_timeout_ms = ${HCA_QMP_TIMEOUT_MS:-3000}
shutdown_timeout_s = 30
CONF
	trap hca_cleanup EXIT
	hcad_start
}

hcad_start() {
	"$HCAD" -c "$T/hcad.conf" >>"$T/hcad.log" 2>&1 &
	HCAD_PID=$!
	if ! wait_for 10 "$HCACTL" node info; then
		echo "Bail out! hcad did not come up"
		tail -n 20 "$T/hcad.log"
		exit 1
	fi
}

hcad_kill9() {
	kill -9 "$HCAD_PID" 2>/dev/null
	wait "$HCAD_PID" 2>/dev/null
}

hcad_stop() {
	kill -TERM "$HCAD_PID" 2>/dev/null
	wait "$HCAD_PID" 2>/dev/null
}

hca_cleanup() {
	local f
	# No QEMU of this test may outlive it.
	for f in "$T"/s/vm/*/qemu.pid; do
		[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
	done
	hcad_kill9
	if [ "${TAP_FAILED:-0}" -gt 0 ] && [ -f "$T/hcad.log" ]; then
		diag "hcad log (last 40 lines):"
		tail -n 40 "$T/hcad.log" | sed 's/^/# /'
	fi
	rm -rf "$T"
}

hca_done() {
	echo "1..$TAP_N"
	[ "$TAP_FAILED" -eq 0 ]
}

# define_guest NAME [extra hcactl args]: the test guest with a 64 MiB journal disk.
define_guest() {
	local name=$1
	shift
	"$HCACTL" vm define --name "$name" --vcpus 1 --memory 96M --disk 64M \
		--kernel "$GUEST/vmlinux" --initrd "$GUEST/initramfs.cpio" \
		--cmdline "console=ttyS0 quiet hca.disk=/dev/vda hca.dirty_mib=4 hca.dirty_rate=1" "$@"
}

vm_field() { "$HCACTL" vm show "$1" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
vm_state() { vm_field "$1" state; }
serial_log() { echo "$T/s/vm/$1/serial.log"; }

# The workload's latest counter value on NAME's serial console (0 if none).
counter() {
	local c
	c=$(grep -ao 'hca-workload boot=[0-9a-f]* count=[0-9]*' "$(serial_log "$1")" 2>/dev/null |
		tail -n 1 | sed 's/.*count=//')
	echo "${c:-0}"
}

counter_above() { [ "$(counter "$1")" -gt "$2" ]; }

# The counter advances by at least 3 within 15 s.
counter_advances() {
	local c0
	c0=$(counter "$1")
	wait_for 15 counter_above "$1" $((c0 + 2))
}

qemu_pid() { cat "$T/s/vm/$1/qemu.pid" 2>/dev/null; }

# Alive and not a zombie (kill -0 succeeds on a zombie).
proc_alive() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

volume_path() { echo "$T/vols/$1-disk0.qcow2"; }

journal_verify() { "$VERIFY" "$1" --json; }
journal_field() { journal_verify "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
