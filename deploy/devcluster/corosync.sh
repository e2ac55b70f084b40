# shellcheck shell=bash
# devcluster corosync: one corosync 3 (knet, aes256/sha256, votequorum) per
# node. Each node's /etc/corosync is its own DIR/nK/corosync (bind-mounted by
# the holder), so a plain `corosync` or `corosync-quorumtool` inside the node
# uses it. Sourced by devcluster.sh.

corosync_authkey() {
	mkdir -p "$DC/corosync"
	dd if=/dev/urandom of="$DC/corosync/authkey" bs=256 count=1 status=none
	chmod 0400 "$DC/corosync/authkey"
}

corosync_conf() { # N K
	local n=$1 k=$2 d i two_node=""
	d=$(node_dir "$k")
	mkdir -p "$d/corosync" "$d/corosync-state"
	[ "$n" -eq 2 ] && two_node="    two_node: 1"
	{
		cat <<CONF
# devcluster node$k of $n ($DC)
totem {
    version: 2
    cluster_name: hca-dc
    transport: knet
    crypto_cipher: aes256
    crypto_hash: sha256
    keyfile: $DC/corosync/authkey
    token: 1000
    token_coefficient: 0
}

quorum {
    provider: corosync_votequorum
$two_node
}

logging {
    to_logfile: yes
    logfile: $d/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: on
}

system {
    state_dir: $d/corosync-state
}

nodelist {
CONF
		for i in $(seq "$n"); do
			printf '    node {\n        ring0_addr: %s\n        name: node%d\n        nodeid: %d\n    }\n' \
				"$(node_addr "$i")" "$i" "$i"
		done
		echo "}"
	} >"$d/corosync/corosync.conf"
}

corosync_start() { node_daemon "$1" corosync corosync -f; }

# Members and quorum as node K sees them: "MEMBERS QUORATE" (e.g. "3 yes").
corosync_view() {
	local out members quorate
	out=$(in_node "$1" corosync-quorumtool -s 2>/dev/null) || true
	members=$(printf '%s\n' "$out" | awk '/^Nodes:/ {print $2}')
	quorate=$(printf '%s\n' "$out" | awk -F: '/^Quorate:/ {gsub(/ /, "", $2); print tolower($2)}')
	echo "${members:-0} ${quorate:-no}"
}

corosync_sees() { [ "$(corosync_view "$1")" = "$2" ]; } # K "MEMBERS QUORATE"

corosync_wait() { # N
	local k
	for k in $(seq "$1"); do
		wait_daemon 20 "$k" corosync corosync_sees "$k" "$1 yes" ||
			fail "node$k: corosync does not see $1 quorate members ($(corosync_view "$k")): $(tail -n 1 "$(node_dir "$k")/corosync.log" 2>/dev/null)"
	done
}
