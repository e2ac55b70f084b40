#!/usr/bin/env bash
# The long-lived holder of one devcluster node, run by devcluster.sh inside the
# node's network namespace and a fresh mount + UTS namespace. It gives the node
# what a real machine has privately: its hostname, its own /run (corosync's pid
# and lock files are fixed there), the devcluster's shared /dev/shm tmpfs (libqb
# IPC files), and /etc/corosync and /etc/ceph holding this cluster's configs, so
# plain `corosync`, `ceph -s` and `rados` work inside the node. Then it sleeps:
# `nsenter --target PID --mount --net --uts` enters the node for as long as it lives.
#   holder.sh DC_DIR K
set -euo pipefail
DC=$1
K=$2
D=$DC/n$K

hostname "node$K"
mount -t tmpfs -o mode=0755,size=16m hca-dc-run /run
mkdir -p /run/lock
mount --bind "$DC/shm" /dev/shm
[ -d /etc/corosync ] && mount --bind "$D/corosync" /etc/corosync
[ -d /etc/ceph ] && mount --bind "$DC/ceph" /etc/ceph
# The pid file is the readiness signal: written last, atomically. exec keeps $$.
echo $$ >"$D/holder.pid.tmp"
mv "$D/holder.pid.tmp" "$D/holder.pid"
exec sleep infinity
