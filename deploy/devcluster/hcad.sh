# shellcheck shell=bash
# devcluster hcad: one hcad per node, inside the node, its API on the default
# service name "hcad" (one per network namespace). Sourced by devcluster.sh.

# The one place that writes a node's hcad.conf: a real cluster node's
# configuration (corosync membership, records and RBD volumes in Ceph).
hcad_conf() { # K
	local k=$1 d
	d=$(node_dir "$k")
	cat >"$d/hcad.conf" <<CONF
node_name = node$k
state_dir = $d/s
storage_dir = $d/vols
log_file = $d/hcad.log
log_level = debug
cluster = corosync
store = rados
ceph_conf = $DC/ceph/ceph.conf
ceph_client = admin
rados_pool = hca
pki_dir = $DC/pki
CONF
}

# The cluster CA and one certificate per node, made the way an operator
# does: hcactl cluster init, then cluster cert issue per node.
hcad_pki() { # N
	local k
	"$BUILD/hcactl" cluster init --name devcluster --pki "$DC/pki" >/dev/null ||
		fail "pki: cannot create the cluster CA"
	for k in $(seq "$1"); do
		"$BUILD/hcactl" cluster cert issue "node$k" --ip "$NET.$k" --pki "$DC/pki" >/dev/null ||
			fail "pki: cannot issue node$k's certificate"
	done
}

hcad_start() { # K
	local d
	d=$(node_dir "$1")
	mkdir -p "$d/s" "$d/vols"
	hcad_conf "$1"
	node_daemon "$1" hcad "$BUILD/hcad" -c "$d/hcad.conf"
}

# Ready: it answers, and its records in Ceph are reachable.
hcad_answers() { in_node "$1" "$BUILD/hcactl" --api hcad cluster status 2>/dev/null | grep -q '^storage: *rados: ok'; }

hcad_wait() { # N
	local k
	for k in $(seq "$1"); do
		wait_daemon 15 "$k" hcad hcad_answers "$k" ||
			fail "node$k: hcad does not answer 'hcactl node info': $(tail -n 1 "$(node_dir "$k")/hcad.out" 2>/dev/null)"
	done
}

# SIGTERM every hcad (it leaves its VMs running), then kill the QEMUs they
# started, found by their pidfiles.
hcad_stop_all() {
	local k f p
	for k in "$@"; do signal_ns "$(node_ns "$k")" TERM hcad; done
	for k in "$@"; do wait_until 5 proc_gone "$(node_ns "$k")" hcad || true; done
	for f in "$DC"/n*/s/vm/*/qemu.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f" 2>/dev/null) || continue
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q qemu && kill -9 "$p" 2>/dev/null
	done
	return 0
}
