#!/usr/bin/env bash
# Node set-up: hcad refuses an old QEMU and non-root clients; bridge NICs
# get a tap enslaved to the bridge, inside a private network namespace, and
# lose it when the VM stops.
# Outside: make a private network namespace and run this script inside it,
# so hcad's API socket, the bridge, the taps and QEMU all live there.
if [ -z "${HCA_IN_NETNS:-}" ]; then
	NS=hca-node-$$
	ip netns add "$NS" || { echo "Bail out! cannot create a network namespace"; exit 1; }
	HCA_IN_NETNS=$NS ip netns exec "$NS" bash "$0" "$@"
	rc=$?
	ip netns del "$NS"
	exit $rc
fi
. "$(dirname "$0")/lib.sh"
ip link set lo up
ip link add br0 type bridge
ip link set br0 up
hca_setup

# an old QEMU is refused with the reason
cat >"$T/qemu-7.2" <<'Q'
#!/bin/sh
echo "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)"
Q
chmod +x "$T/qemu-7.2"
sed -e "s|^state_dir = .*|state_dir = $T/s2|" -e "s|^api_name = .*|api_name = old-$$|" "$T/hcad.conf" >"$T/old.conf"
echo "qemu = $T/qemu-7.2" >>"$T/old.conf"
expect_fail "QEMU 7.2 refused, 10.0 required" "QEMU 7.2 .* too old: hca needs QEMU 10.0 or newer" \
	"$HCAD" -c "$T/old.conf"

# the API is root-only
expect_fail "non-root client refused" "permission denied: the hcad API is root-only" \
	setpriv --reuid=65534 --regid=65534 --clear-groups "$HCACTL" vm list

# a bridge NIC: a tap on br0 while the VM runs, gone after
tap_on_br0() { ip -o link show master br0 | grep -q hca; }
check "define with a bridge NIC" define_guest net1 --nic bridge=br0
check "start net1" "$HCACTL" vm start net1
check "its tap is enslaved to br0" tap_on_br0
check "the guest runs with it" wait_for 30 counter_above net1 0
check "stop net1" "$HCACTL" vm stop net1 --force
check "tap removed after stop" wait_for 5 bash -c "! ip -o link show master br0 | grep -q hca"

check "define with a missing bridge" define_guest net2 --nic bridge=nobr0
expect_fail "start refused: bridge missing" "vm net2: nic 0: bridge 'nobr0' does not exist" \
	"$HCACTL" vm start net2
check "no QEMU for net2" test -z "$(pgrep -f -- '-name guest=net2,')"

# Ceph unreachable at start: hcad serves anyway, says why, and retries
cat >"$T/ceph.conf" <<CEPH
[global]
mon_host = 10.254.254.254
auth_client_required = none
CEPH
sed -e "s|^state_dir = .*|state_dir = $T/s3|" -e "s|^api_name = .*|api_name = noceph-$$|" "$T/hcad.conf" >"$T/noceph.conf"
printf 'store = rados\nceph_conf = %s\n' "$T/ceph.conf" >>"$T/noceph.conf"
"$HCAD" -c "$T/noceph.conf" >>"$T/noceph.log" 2>&1 &
NOCEPH=$!
check "hcad without Ceph still answers" wait_for 10 "$HCACTL" --api "noceph-$$" node info
expect_fail "VM requests say storage is unavailable" "storage unavailable: " \
	"$HCACTL" --api "noceph-$$" vm list
check "cluster status reports the storage problem" bash -c "'$HCACTL' --api noceph-$$ cluster status | grep -q '^storage: *rados: [^o]'"
kill "$NOCEPH"; wait "$NOCEPH" 2>/dev/null

hca_done
