# shellcheck shell=bash
# devcluster Ceph: one mon (node1), one memstore OSD per node (osd.K-1 in node
# K, its own CRUSH host nodeK), cephx with a generated admin keyring, no mgr.
# Everything lives in DIR/ceph, which is each node's /etc/ceph too.
# Sourced by devcluster.sh.

C() { echo "$DC/ceph"; }
ceph_in() { in_node 1 ceph -c "$(C)/ceph.conf" --connect-timeout 5 "$@"; } # a client in node1

ceph_conf() { # N
	local n=$1 c size=2 k
	c=$(C)
	[ "$n" -ge 2 ] || size=1
	cat >"$c/ceph.conf" <<CONF
# devcluster ($DC): $n nodes, one mon on node1, one memstore OSD per node
[global]
fsid = $FSID
mon host = [v2:$NET.1:3300,v1:$NET.1:6789]
mon initial members = node1
public network = $NET.0/24
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
ms bind ipv6 = false
crash dir = $c/crash
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
paxos propose interval = 0.1
osd pool default size = $size
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon osd min down reporters = 1
osd heartbeat interval = 1
osd heartbeat grace = 5
osd mon heartbeat interval = 5

[mon]
mon data = $c/mon/\$id
keyring = $c/mon/\$id/keyring
log file = $c/log/\$name.log
mon cluster log file = $c/log/cluster.log
admin socket = $c/run/\$name.asok

[osd]
osd data = $c/osd/\$id
keyring = $c/osd/\$id/keyring
osd objectstore = memstore
memstore device bytes = $((${HCA_DC_OSD_MB:-256} << 20))
# deleted snapshots are trimmed at once (memstore passes for a rotating
# disk: 5 s a step), one placement group at a time (two at once have
# crashed a memstore OSD in SnapMapper)
osd snap trim sleep = 0
osd max trimming pgs = 1
osd op num shards = 1
osd op num threads per shard = 2
log file = $c/log/\$name.log
admin socket = $c/run/\$name.asok

[client]
keyring = $c/ceph.client.admin.keyring
CONF
	for k in $(seq "$n"); do
		printf '\n[osd.%d]\ncrush location = root=default host=node%d\n' $((k - 1)) "$k" >>"$c/ceph.conf"
	done
}

# Keys: mon., client.admin and one per OSD, all imported into the mon's
# initial keyring so the mon's auth database starts with them.
ceph_keys() { # N
	local c id
	c=$(C)
	exec 4>&1 >/dev/null # ceph-authtool is chatty on stdout
	ceph-authtool --create-keyring "$c/mon.keyring" --gen-key -n mon. --cap mon 'allow *'
	ceph-authtool --create-keyring "$c/ceph.client.admin.keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
	ceph-authtool "$c/mon.keyring" --import-keyring "$c/ceph.client.admin.keyring"
	for id in $(seq 0 $(($1 - 1))); do
		mkdir -p "$c/osd/$id"
		ceph-authtool --create-keyring "$c/osd/$id/keyring" --gen-key -n "osd.$id" \
			--cap mon 'allow profile osd' --cap mgr 'allow profile osd' --cap osd 'allow *'
		ceph-authtool "$c/mon.keyring" --import-keyring "$c/osd/$id/keyring"
	done
	chmod 0600 "$c"/*.keyring "$c"/osd/*/keyring
	exec 1>&4 4>&-
}

ceph_mon_up() {
	local c
	c=$(C)
	monmaptool --create --fsid "$FSID" --addv node1 "[v2:$NET.1:3300,v1:$NET.1:6789]" "$c/monmap" >/dev/null
	mkdir -p "$c/mon/node1"
	in_node 1 ceph-mon -c "$c/ceph.conf" --mkfs -i node1 --monmap "$c/monmap" --keyring "$c/mon.keyring" \
		>>"$c/log/mkfs.log" 2>&1 || fail "ceph-mon --mkfs failed: $(tail -n 1 "$c/log/mkfs.log")"
	node_daemon 1 ceph-mon ceph-mon -f -c "$c/ceph.conf" -i node1
}

# OSD K-1's store, made without the mon (its fsid is in the conf).
ceph_osd_mkfs() { # K
	local c id=$(($1 - 1))
	c=$(C)
	in_node "$1" ceph-osd -c "$c/ceph.conf" -i "$id" --mkfs --no-mon-config \
		--osd-uuid "$(cat "$c/osd/$id/uuid")" >>"$c/log/mkfs.log" 2>&1 ||
		fail "osd.$id: ceph-osd --mkfs failed: $(tail -n 1 "$c/log/mkfs.log")"
}

ceph_osds_up() { # N
	local c k id cmds="" pids=()
	c=$(C)
	for k in $(seq "$1"); do
		id=$((k - 1))
		cat /proc/sys/kernel/random/uuid >"$c/osd/$id/uuid"
		ceph_osd_mkfs "$k" &
		pids+=($!)
	done
	wait_pids "${pids[@]}"
	wait_daemon 15 1 ceph-mon ceph_in health ||
		fail "the Ceph mon does not answer: $(tail -n 1 "$c/log/mon.node1.log" 2>/dev/null)"
	for id in $(seq 0 $(($1 - 1))); do cmds+="osd new $(cat "$c/osd/$id/uuid") $id"$'\n'; done
	printf '%s' "$cmds" | ceph_in >/dev/null 2>>"$c/log/mkfs.log" ||
		fail "registering the OSDs failed: $(tail -n 1 "$c/log/mkfs.log")"
	for k in $(seq "$1"); do
		node_daemon "$k" "ceph-osd" ceph-osd -f -c "$c/ceph.conf" -i $((k - 1))
	done
}

# "UP IN" OSD counts.
ceph_osd_counts() {
	ceph_in osd stat -f json 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["num_up_osds"], d["num_in_osds"])'
}

ceph_osds_all_up() { [ "$(ceph_osd_counts)" = "$1 $1" ]; }

# Until all N OSDs are up and in; an OSD that dies fails it at once.
ceph_osds_wait() { # N
	local n=$1 k deadline=$((${EPOCHREALTIME/[.,]/} + 30000000))
	until ceph_osds_all_up "$n"; do
		for k in $(seq "$n"); do
			daemon_alive "$k" ceph-osd ||
				fail "osd.$((k - 1)) (node$k) died: $(tail -n 1 "$(C)/log/osd.$((k - 1)).log" 2>/dev/null)"
		done
		[ "${EPOCHREALTIME/[.,]/}" -lt "$deadline" ] ||
			fail "OSDs not all up and in after 30 s (up, in: $(ceph_osd_counts 2>/dev/null || echo '?'))"
		sleep 0.2
	done
}

ceph_pool() {
	local c
	c=$(C)
	ceph_in osd pool create hca 8 8 >/dev/null 2>>"$c/log/mkfs.log" ||
		fail "creating pool hca failed: $(tail -n 1 "$c/log/mkfs.log")"
	if ! in_node 1 timeout 20 rbd -c "$c/ceph.conf" pool init hca >>"$c/log/mkfs.log" 2>&1; then
		ceph_in osd pool application enable hca rbd >/dev/null 2>>"$c/log/mkfs.log" ||
			fail "enabling application rbd on pool hca failed: $(tail -n 1 "$c/log/mkfs.log")"
	fi
	# The pool takes a write (its PGs peered: without a mgr there are no PG stats).
	{ in_node 1 timeout 20 rados -c "$c/ceph.conf" -p hca put devcluster-ready "$c/ceph.conf" &&
		in_node 1 timeout 10 rados -c "$c/ceph.conf" -p hca rm devcluster-ready; } 2>>"$c/log/mkfs.log" ||
		fail "pool hca does not take a write: $(tail -n 1 "$c/log/mkfs.log")"
}
