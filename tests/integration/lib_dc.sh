# Shared by the devcluster tests that drive migrations under faults
# (test_migration_faults.sh, test_migration_storage.sh), sourced after
# lib.sh with DCSH, HCA_DC_DIR and HCA_DC_NETNS set: hcactl on a node, the
# records and jobs as JSON, a node's hcad, the QEMUs of a VM as seen from
# outside.

dc() { "$DCSH" "$@"; }
on() { local n=$1; shift; dc exec "$n" -- "$@"; }
ctl() { local n=$1; shift; on "$n" "$HCACTL" "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
field() { ctl "$1" vm show "$2" --json | json "d['$3']"; }
storage_ok() { [ "$(ctl "$1" cluster status --json | json "d['storage_health']")" = ok ]; }
job_field() { ctl "$1" job show "$2" --json | json "$3"; }
job_phase() { job_field "$1" "$2" "d['phase']"; }
job_ended() { case "$(job_phase "$1" "$2")" in succeeded|failed|cancelled) return 0 ;; esac; return 1; }

# hcad_pid K: node K's hcad (the nodes share the PID namespace: by its
# network namespace, never by name alone)
hcad_pid() {
	local p
	for p in $(ip netns pids "$HCA_DC_NETNS-node$1" 2>/dev/null); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = hcad ] && { echo "$p"; return 0; }
	done
	return 1
}
# hcad_restart K: start node K's hcad again as the devcluster does
hcad_restart() {
	local d=$HCA_DC_DIR/n$1
	on "node$1" bash -c "setsid '$BUILD/hcad' -c '$d/hcad.conf' </dev/null >>'$d/hcad.out' 2>&1 &"
	wait_for 20 storage_ok "node$1"
}

# The QEMU daemons of VM uuid $1 as "nodeK:PID" lines (not the -daemonize
# launcher, whose parent is hcad; not zombies).
qemu_list() {
	local u=$1 k p st
	local -A parent=()
	local found=()
	for k in 1 2 3; do
		for p in $(ip netns pids "$HCA_DC_NETNS-node$k" 2>/dev/null); do
			tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q -- "-uuid $u" || continue
			st=$(awk '{print $3, $4}' "/proc/$p/stat" 2>/dev/null)
			case "${st% *}" in Z | X | '') continue ;; esac
			[ "$(cat "/proc/${st#* }/comm" 2>/dev/null)" = hcad ] && continue
			parent[${st#* }]=1
			found+=("node$k:$p")
		done
	done
	# -daemonize forks twice: while the middle process lives, a QEMU's
	# parent is another process of the same VM; the last of a chain counts
	for k in "${found[@]}"; do [ -n "${parent[${k#*:}]:-}" ] || echo "$k"; done
}

# rep_point_raw NODE VM OUT: the newest recovery point of VM on NODE (its
# replica node) as a raw image: the backing file of the store's active
# overlay, the one with the highest sequence number, read with -U (the
# store's daemon holds the chain). Replication is paused around the read
# and the cycle in flight let finish: a prune after a cycle writes the
# base the chain reads, which a reader outside the daemon could see
# half-written (failovers hold the point instead, which stops prunes).
rep_point_raw() {
	local d=$HCA_DC_DIR/n${1#node}/s/replica/$2 top rc=1 run
	run=$(ctl "$1" replica status "$2" --json | json "d['state']") || return 1
	if [ "$run" = enabled ]; then
		ctl "$1" replica pause "$2" >/dev/null || return 1
		sleep 3
	fi
	# in the node's mount namespace: a test may mount over its directories
	top=$(on "$1" bash -c "ls '$d'/d0.*.qcow2 2>/dev/null | sort -t. -k2 -n | tail -1")
	[ -n "$top" ] && top=$(on "$1" qemu-img info -U --output=json "$top" |
		json "d.get('full-backing-filename') or d.get('backing-filename') or ''")
	[ -n "$top" ] && on "$1" qemu-img convert -U -O raw "$top" "$3" && rc=0
	[ "$run" != enabled ] || ctl "$1" replica resume "$2" >/dev/null || rc=1
	return $rc
}

# Guests with local disks (the replica and shared-nothing tests): quiet
# COMMAND; a VM's first local volume and its replica store on a node; a
# field of `replica status`; the guest's counter advancing in a node's
# serial log; node K's hcad stopped (by SIGNAL, TERM by default; lib.sh's
# hcad_stop is the single-node tests' own).
quiet() { "$@" >/dev/null; }
vol() { echo "$HCA_DC_DIR/n${1#node}/vols/$2-disk0.qcow2"; }
rdir() { echo "$HCA_DC_DIR/n${1#node}/s/replica/$2"; }
st() { ctl "$1" replica status "$2" --json | json "d['$3']"; }
counting_on() { # NODE NAME
	local log=$HCA_DC_DIR/n${1#node}/s/vm/$2/serial.log a
	a=$(grep -ac 'count=' "$log" 2>/dev/null)
	sleep 1
	[ "$(grep -ac 'count=' "$log" 2>/dev/null)" -gt "${a:-0}" ]
}
node_hcad_stop() { # K [SIGNAL]
	local p
	p=$(hcad_pid "$1") || return 1
	kill "-${2:-TERM}" "$p"
	wait_for 20 bash -c "! kill -0 $p 2>/dev/null"
}
