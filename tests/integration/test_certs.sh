#!/usr/bin/env bash
# The cluster PKI end to end: `hcactl cluster init` and `cluster cert
# issue/renew/show` in a temporary directory, checked with the openssl tool;
# a real TLS 1.3 mutual handshake between two nodes' certificates (and its
# refusal of another cluster's); QEMU 10 loading the generated
# tls-creds-x509 directories, and speaking TLS with them over NBD.
# Needs no hcad: these commands work on local files.
. "$(dirname "$0")/lib.sh"

[ -x "$HCACTL" ] || { echo "Bail out! build hcactl first"; exit 1; }
command -v openssl >/dev/null || { echo "Bail out! no openssl tool"; exit 1; }
T=$(mktemp -d /tmp/hca-certs.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT
PKI=$T/pki
N1=$PKI/node1
N2=$PKI/node2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listening() { ss -ltnH "sport = :$1" | grep -q .; }
text_of() { openssl x509 -in "$1" -noout -text; }
has() { local f=$1; shift; text_of "$f" | grep -qF -- "$*"; }
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }
same() { cmp -s "$1" "$2"; }
serial_of() { openssl x509 -in "$1" -noout -serial; }
pubkey_of() { openssl x509 -in "$1" -noout -pubkey; }
verify_ok() { openssl verify -CAfile "$1" "$2" 2>&1 | grep -q ': OK$'; }
verify_fails() { ! openssl verify -CAfile "$1" "$2" >/dev/null 2>&1; }
only_files() { [ "$(cd "$1" && find . -mindepth 1 | sort | tr '\n' ' ')" = "$2" ]; }
# show --json of node1: its names, chained, about a year left.
show_json_ok() {
	"$HCACTL" cluster cert show node1 --pki "$PKI" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(not (d["dns"] == ["node1"] and d["ip"] == ["127.0.0.1"] and d["chains_to_ca"]
              and d["chain_error"] is None and d["days_left"] in (364, 365) and not d["is_ca"]))'
}

export T PKI HCACTL
export -f text_of has serial_of pubkey_of

# ---- the CA ----
check "cluster init" "$HCACTL" cluster init --name itest --pki "$PKI"
check "PKI dir 0700, CA key 0600" bash -c "[ \$(stat -c %a '$PKI') = 700 ] && [ \$(stat -c %a '$PKI/ca.key') = 600 ]"
check "CA subject" has "$PKI/ca.crt" "Subject: CN = hca cluster CA itest"
check "CA basicConstraints critical, CA:TRUE" bash -c "openssl x509 -in '$PKI/ca.crt' -noout -text | grep -A1 'Basic Constraints: critical' | grep -q 'CA:TRUE'"
check "CA keyUsage keyCertSign+cRLSign" has "$PKI/ca.crt" "Certificate Sign, CRL Sign"
check "CA key is EC P-256" bash -c "openssl pkey -in '$PKI/ca.key' -noout -text | grep -q 'NIST CURVE: P-256'"
check "CA valid 10 years" bash -c "openssl x509 -in '$PKI/ca.crt' -noout -checkend $((3649 * 86400)) >/dev/null && ! openssl x509 -in '$PKI/ca.crt' -noout -checkend $((3651 * 86400)) >/dev/null"
expect_fail "a second init is refused" "a cluster CA already exists \(.*/ca.crt\): refusing to overwrite it" \
	"$HCACTL" cluster init --pki "$PKI"

# ---- node certificates ----
check "issue node1 (with IP 127.0.0.1)" "$HCACTL" cluster cert issue node1 --ip 127.0.0.1 --pki "$PKI"
check "issue node2" "$HCACTL" cluster cert issue node2 --pki "$PKI" --days 30
check "node1: SAN DNS:node1, IP:127.0.0.1" has "$N1/node.crt" "DNS:node1, IP Address:127.0.0.1"
check "node1: serverAuth and clientAuth" has "$N1/node.crt" "TLS Web Server Authentication, TLS Web Client Authentication"
check "node1: keyUsage" has "$N1/node.crt" "Digital Signature, Key Encipherment"
check "node1: CA:FALSE" has "$N1/node.crt" "CA:FALSE"
check "node1: subject CN=node1" has "$N1/node.crt" "Subject: CN = node1"
check "node1 chains to the CA (openssl verify)" verify_ok "$PKI/ca.crt" "$N1/node.crt"
check "node2 valid 30 days" bash -c "openssl x509 -in '$N2/node.crt' -noout -checkend $((29 * 86400)) >/dev/null && ! openssl x509 -in '$N2/node.crt' -noout -checkend $((31 * 86400)) >/dev/null"
check "node key 0600, node dir 0700" bash -c "[ \$(stat -c %a '$N1/node.key') = 600 ] && [ \$(stat -c %a '$N1') = 700 ]"
check "node dir holds exactly its files" only_files "$N1" \
	"./ca.crt ./node.crt ./node.key ./qemu ./qemu/ca-cert.pem ./qemu/client-cert.pem ./qemu/client-key.pem ./qemu/server-cert.pem ./qemu/server-key.pem "
check "QEMU keys 0600" bash -c "[ \$(stat -c %a '$N1/qemu/server-key.pem') = 600 ] && [ \$(stat -c %a '$N1/qemu/client-key.pem') = 600 ]"
check "QEMU server cert is the node cert" same "$N1/qemu/server-cert.pem" "$N1/node.crt"
check "cert show" bash -c "'$HCACTL' cluster cert show node1 --pki '$PKI' | grep -q '^chains to CA: yes'"
check "cert show --json" show_json_ok
expect_fail "issuing node1 again is refused" "node1 already has a certificate in .* \(--force replaces it" \
	"$HCACTL" cluster cert issue node1 --pki "$PKI"
expect_fail "bad node name refused" "invalid node name 'Node_1'" "$HCACTL" cluster cert issue Node_1 --pki "$PKI"
check "... and nothing made for it" bash -c "! ls '$PKI' | grep -qi node_1"
expect_fail "bad IP refused" "invalid --ip '10.0.0.256'" "$HCACTL" cluster cert issue node3 --ip 10.0.0.256 --pki "$PKI"
expect_fail "no CA" "no cluster CA in $T/nope: run 'hcactl cluster init' first" \
	"$HCACTL" cluster cert issue node3 --pki "$T/nope"
check "... and nothing made" test ! -e "$T/nope"
printf 'junk\n' >"$T/junk.pem"
expect_fail "show of a file that is no certificate" "junk.pem: not a PEM certificate" \
	"$HCACTL" cluster cert show --file "$T/junk.pem"

# ---- the CA key kept offline ----
check "init with --ca-out" "$HCACTL" cluster init --name off --pki "$T/pki2" --ca-out "$T/usb"
check "... the PKI dir gets only ca.crt" only_files "$T/pki2" "./ca.crt "
check "... the key is in the offline dir, 0600" mode_is "$T/usb/ca.key" 600
expect_fail "issue without the key says where it is" \
	"the CA key is not here \(kept offline\?\): pass --ca-key PATH" \
	"$HCACTL" cluster cert issue nodex --pki "$T/pki2"
check "issue with --ca-key" "$HCACTL" cluster cert issue nodex --pki "$T/pki2" --ca-key "$T/usb/ca.key"
expect_fail "another CA's key refused" "is not the key of the cluster CA" \
	"$HCACTL" cluster cert issue nodey --pki "$T/pki2" --ca-key "$PKI/ca.key"
check "... and nothing made" test ! -e "$T/pki2/nodey"

# ---- another cluster's certificate ----
ROGUE=$T/other/rogue
check "a second cluster CA and node" bash -c "'$HCACTL' cluster init --name other --pki '$T/other' >/dev/null && '$HCACTL' cluster cert issue rogue --pki '$T/other' >/dev/null"
check "openssl: rogue does not chain to our CA" verify_fails "$PKI/ca.crt" "$ROGUE/node.crt"
check "cert show: rogue does not chain" bash -c "'$HCACTL' cluster cert show --file '$ROGUE/node.crt' --pki '$PKI' | grep -q '^chains to CA: no: .*unable to get local issuer certificate'"

# ---- renew ----
cp "$N1/node.crt" "$T/node1-before.crt"
check "renew node1" "$HCACTL" cluster cert renew node1 --pki "$PKI"
check "... new serial" bash -c "[ \"\$(serial_of '$T/node1-before.crt')\" != \"\$(serial_of '$N1/node.crt')\" ]"
check "... new key" bash -c "[ \"\$(pubkey_of '$T/node1-before.crt')\" != \"\$(pubkey_of '$N1/node.crt')\" ]"
check "... same names" has "$N1/node.crt" "DNS:node1, IP Address:127.0.0.1"
check "... chains" verify_ok "$PKI/ca.crt" "$N1/node.crt"
check "... previous kept as node.crt.old" same "$T/node1-before.crt" "$N1/node.crt.old"
check "... QEMU's copy renewed too" same "$N1/qemu/server-cert.pem" "$N1/node.crt"
check "... no temporary left" bash -c "! find '$N1' -name '*.tmp*' | grep -q ."
expect_fail "renew of a node without certificate" "node9 has no certificate in" \
	"$HCACTL" cluster cert renew node9 --pki "$PKI"
mkdir -p "$T/pki3" && cp "$PKI/ca.crt" "$PKI/ca.key" "$T/pki3/" && cp -r "$ROGUE" "$T/pki3/rogue"
expect_fail "renew of another cluster's certificate" "was not issued by the cluster CA" \
	"$HCACTL" cluster cert renew rogue --pki "$T/pki3"

# ---- a TLS 1.3 mutual handshake between node1 (server) and node2 (client) ----
# tls_try CA [CLIENT_DIR]: node1 serves with -rev (it sends each line back
# reversed, so nothing reads its stdin); the client says hello as CLIENT_DIR's
# node, trusting CA. Logs in $T/srv.log and $T/cli.log.
tls_try() {
	local port ca=$1 cdir=${2:-} spid
	local who=${cdir:+-cert $cdir/node.crt -key $cdir/node.key}
	port=$(free_port)
	timeout 20 openssl s_server -accept "127.0.0.1:$port" -tls1_3 -naccept 1 -rev \
		-cert "$N1/node.crt" -key "$N1/node.key" -CAfile "$PKI/ca.crt" \
		-Verify 1 -verify_return_error </dev/null >"$T/srv.log" 2>&1 &
	spid=$!
	wait_for 10 listening "$port" || return 1
	# shellcheck disable=SC2086 # $who is two options or none
	printf 'hello-from-%s\nCLOSE\n' "$(basename "${cdir:-none}")" |
		timeout 20 openssl s_client -connect "127.0.0.1:$port" -tls1_3 -ign_eof $who \
			-CAfile "$ca" -verify_return_error -verify_hostname node1 -brief >"$T/cli.log" 2>&1
	wait "$spid"
	return 0
}
tls_try "$PKI/ca.crt" "$N2"
check "TLS 1.3 mutual handshake node2 -> node1" bash -c "grep -q 'Protocol version: TLSv1.3' '$T/cli.log' && grep -q '^Verified peername: node1' '$T/cli.log' && grep -q '^Peer certificate: CN = node2' '$T/srv.log' && grep -q '^Verification: OK' '$T/srv.log'"
check "... and data flows both ways" grep -q 2edon-morf-olleh "$T/cli.log"
tls_try "$PKI/ca.crt" "$ROGUE"
check "node1 refuses another cluster's client certificate" bash -c "grep -q 'unable to get local issuer certificate' '$T/srv.log' && grep -q 'CONNECTION FAILURE' '$T/srv.log' && ! grep -q eugor-morf-olleh '$T/cli.log'"
tls_try "$PKI/ca.crt"
check "node1 refuses a client without certificate" bash -c "grep -q 'peer did not return a certificate' '$T/srv.log' && ! grep -q enon-morf-olleh '$T/cli.log'"
tls_try "$T/other/ca.crt" "$N2"
check "node2 refuses node1 when trusting another CA" bash -c "grep -q 'certificate verify failed' '$T/cli.log' && ! grep -q 2edon-morf-olleh '$T/cli.log'"

# ---- QEMU 10 accepts the generated credentials ----
# qemu_creds DIR ENDPOINT: QEMU loads (and sanity-checks) them at start.
qemu_creds() {
	printf '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n' |
		timeout 60 qemu-system-x86_64 -nodefaults -machine none -display none \
			-object "tls-creds-x509,id=t0,dir=$1,endpoint=$2,verify-peer=on" -qmp stdio \
			>"$T/qemu.out" 2>&1 &&
		[ "$(grep -c '"return": {}' "$T/qemu.out")" -eq 2 ] && ! grep -q 'qemu-system' "$T/qemu.out"
}
export -f qemu_creds
check "QEMU loads node1/qemu as server" qemu_creds "$N1/qemu" server
check "QEMU loads node2/qemu as client" qemu_creds "$N2/qemu" client
cp -r "$N1/qemu" "$T/qemu-mixed" && cp "$T/other/ca.crt" "$T/qemu-mixed/ca-cert.pem"
check "QEMU does check them: another CA's ca-cert.pem is refused" \
	bash -c "! qemu_creds '$T/qemu-mixed' server && grep -q 'failed validation' '$T/qemu.out'"

# NBD over TLS: qemu-nbd serves with node1's credentials, qemu-img reads as node2.
nbd_info() { # CLIENT_QEMU_DIR PORT
	timeout 30 qemu-img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$1" \
		--image-opts "driver=nbd,host=127.0.0.1,port=$2,tls-creds=tls0" >"$T/nbd.out" 2>&1
}
export -f nbd_info
qemu-img create -q -f raw "$T/disk.raw" 1M
NBD_PORT=$(free_port)
qemu-nbd --object "tls-creds-x509,id=tls0,endpoint=server,dir=$N1/qemu" --tls-creds tls0 \
	-f raw -b 127.0.0.1 -p "$NBD_PORT" --persistent "$T/disk.raw" >"$T/nbd-server.log" 2>&1 &
PIDS+=($!)
check "qemu-nbd serves with node1's credentials" wait_for 10 listening "$NBD_PORT"
check "qemu-img reads it over TLS as node2" bash -c "nbd_info '$N2/qemu' $NBD_PORT && grep -q 'virtual size: 1 MiB' '$T/nbd.out'"
check "... and not as another cluster's node" bash -c "! nbd_info '$ROGUE/qemu' $NBD_PORT"

hca_done
