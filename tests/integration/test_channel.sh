#!/usr/bin/env bash
# The node-to-node channel on a real 3-node devcluster: the cluster CA and
# node certificates made by hcactl, ping between every pair of nodes over
# mutual TLS 1.3, and every refusal: another CA, a name that is not a
# member, no client certificate, plaintext, an oversized or garbage frame
# after a valid handshake; a killed peer is noticed and reconnected to.
. "$(dirname "$0")/lib.sh"

DCSH=$TOP/deploy/devcluster.sh
export HCA_DC_DIR=/tmp/hca-dch-$$
export HCA_DC_NETNS=hcah$$
export HCA_BUILD=$BUILD
PKI=$HCA_DC_DIR/pki
dc() { "$DCSH" "$@"; }
on() { local n=$1; shift; dc exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$HCACTL" "$@"; }
trap 'dc down >/dev/null 2>&1; rm -rf "$HCA_DC_DIR.x"' EXIT

# tls_to NODE2 CERT KEY [CA] < INPUT: a TLS 1.3 client from node1 to node2's
# channel port; prints what openssl says
tls_to() {
	on node1 timeout 5 openssl s_client -quiet -tls1_3 -connect 10.250.0.2:7010 \
		-cert "$2" -key "$3" -CAfile "${4:-$PKI/ca.crt}" -verify_return_error 2>&1
}
log2() { cat "$HCA_DC_DIR/n2/hcad.log"; }
logged() { log2 | grep -q -- "$1"; }
still_serves() { ctl node1 cluster ping node2 >/dev/null; }

if dc up 3 >/dev/null; then ok "3-node devcluster with a cluster CA up"; else not_ok "devcluster up"; hca_done; exit 1; fi
check "each node has a certificate from the cluster CA" bash -c "openssl verify -CAfile '$PKI/ca.crt' '$PKI'/node{1,2,3}/node.crt >/dev/null"
for a in 1 2 3; do
	for b in 1 2 3; do
		[ $a = $b ] && continue
		check "ping node$a -> node$b over mutual TLS" bash -c "'$DCSH' exec node$a -- '$HCACTL' cluster ping node$b | grep -q 'peer certificate: node$b'"
	done
done
expect_fail "ping a node that is not a member" "node9 is not a member of this cluster" ctl node1 cluster ping node9

mkdir -p "$HCA_DC_DIR.x"
# another cluster's CA and node
"$HCACTL" cluster init --name other --pki "$HCA_DC_DIR.x/other" >/dev/null
"$HCACTL" cluster cert issue node1 --pki "$HCA_DC_DIR.x/other" >/dev/null
out=$(printf '' | tls_to node2 "$HCA_DC_DIR.x/other/node1/node.crt" "$HCA_DC_DIR.x/other/node1/node.key")
check "a certificate from another CA is refused (and logged)" bash -c "! grep -q 'Verify return code: 0' <<<\"\$0\" && '$DCSH' exec node1 true" "$out"
check "  ...node2 logged why" wait_for 3 bash -c "grep -qE 'chan .*(refusing certificate|TLS error)' '$HCA_DC_DIR/n2/hcad.log'"
# the cluster's own CA, but a name that is not in the nodelist
"$HCACTL" cluster cert issue node9 --pki "$PKI" >/dev/null
printf '' | tls_to node2 "$PKI/node9/node.crt" "$PKI/node9/node.key" >/dev/null
check "a cluster certificate for a non-member (node9) is refused" wait_for 3 logged "refused 'node9': not a member of the cluster"
# no client certificate at all
on node1 timeout 5 openssl s_client -quiet -tls1_3 -connect 10.250.0.2:7010 -CAfile "$PKI/ca.crt" </dev/null >/dev/null 2>&1
check "a client without a certificate is refused" still_serves
# plaintext
on node1 bash -c 'exec 3<>/dev/tcp/10.250.0.2/7010; printf "GET / HTTP/1.0\r\n\r\n" >&3; timeout 3 cat <&3 >/dev/null'
check "a plaintext client is cut off, the server keeps serving" still_serves
# after a valid handshake: a frame announcing 1 GiB, then garbage
big=$(printf 'HCA1\x00\x01\x00\x05\x40\x00\x00\x00\x00\x00\x00\x00' | base64)
on node1 bash -c "echo $big | base64 -d | timeout 5 openssl s_client -quiet -tls1_3 -connect 10.250.0.2:7010 -cert '$PKI/node1/node.crt' -key '$PKI/node1/node.key' -CAfile '$PKI/ca.crt' >/dev/null 2>&1"
check "an oversized frame is cut off before allocation (logged)" wait_for 3 bash -c "grep -qE 'chan .*refusing a frame of 1073741824 bytes: the limit is' '$HCA_DC_DIR/n2/hcad.log'"
on node1 bash -c "head -c 64 /dev/urandom | timeout 5 openssl s_client -quiet -tls1_3 -connect 10.250.0.2:7010 -cert '$PKI/node1/node.crt' -key '$PKI/node1/node.key' -CAfile '$PKI/ca.crt' >/dev/null 2>&1"
check "a garbage frame is cut off (logged)" wait_for 3 bash -c "grep -qE 'chan .*refusing a frame: bad frame magic' '$HCA_DC_DIR/n2/hcad.log'"
check "node2 still serves its peers after all that" still_serves

# a killed peer: noticed, then reconnected to once it is back
for p in $(ip netns pids "$HCA_DC_NETNS-node2"); do
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = hcad ] && kill -9 "$p"
done
expect_fail "ping a killed peer fails cleanly" "ping node2: " ctl node1 cluster ping node2
on node2 "$BUILD/hcad" -c "$HCA_DC_DIR/n2/hcad.conf" >/dev/null 2>&1 &
check "after the peer restarts, node1 reconnects" wait_for 15 still_serves

hca_done
