#!/usr/bin/env bash
# `make install` into a scratch DESTDIR: the binaries, the documents and the
# systemd unit land where deploy/README.md says; the unit passes
# systemd-analyze and stops hcad alone (KillMode=process), so restarting
# hcad under systemd never kills a VM; PREFIX reaches the unit's paths.
. "$(dirname "$0")/lib.sh"

D=$(mktemp -d /tmp/hca-install.XXXXXX)
trap 'rm -rf "$D"' EXIT
# -o all: the build is CI's (or the caller's), never redone here
if make -s -C "$TOP" -o all install DESTDIR="$D" PREFIX=/opt/hca >"$D.log" 2>&1; then
	ok "make install into a DESTDIR"
else
	not_ok "make install into a DESTDIR"
	diag "$(tail -n 5 "$D.log")"
fi
rm -f "$D.log"
for f in opt/hca/sbin/hcad opt/hca/bin/hcactl etc/systemd/system/hcad.service \
	opt/hca/share/doc/hca/README.md opt/hca/share/doc/hca/DEPLOY.md; do
	check "installed: /$f" test -s "$D/$f"
done
check "hcad and hcactl are executable" test -x "$D/opt/hca/sbin/hcad" -a -x "$D/opt/hca/bin/hcactl"
U=$D/etc/systemd/system/hcad.service
check "the unit runs the installed hcad (PREFIX)" grep -qx 'ExecStart=/opt/hca/sbin/hcad -c /etc/hca/hcad.conf' "$U"
check "the unit checks the configuration first" grep -qx 'ExecStartPre=/opt/hca/sbin/hcad --check-config -c /etc/hca/hcad.conf' "$U"
check "the unit stops hcad alone, never the VMs' QEMUs (KillMode=process)" grep -qx 'KillMode=process' "$U"
check "the installed hcad answers --help" bash -c "'$D/opt/hca/sbin/hcad' --help 2>&1 | grep -qi usage"
if command -v systemd-analyze >/dev/null; then
	# the unit as installed, its paths pointed into the DESTDIR
	sed "s|/opt/hca/|$D/opt/hca/|g" "$U" >"$D/hcad.service"
	out=$(systemd-analyze verify "$D/hcad.service" 2>&1)
	check "systemd-analyze verify finds nothing wrong${out:+: $out}" test -z "$out"
else
	not_ok "systemd-analyze is missing (deploy/install-deps.sh installs systemd)"
fi
hca_done
