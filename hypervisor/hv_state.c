/*
 * hv_state: the VM states, their names, and how QEMU's run states map onto
 * them. Pure functions, apart from QMP so that the table is tested alone.
 */
#include "hypervisor/hv_priv.h"

#include <string.h>

const char *hv_state_name(Hca__VmState s)
{
	switch (s) {
	case HCA__VM_STATE__VM_STATE_STOPPED: return "stopped";
	case HCA__VM_STATE__VM_STATE_STARTING: return "starting";
	case HCA__VM_STATE__VM_STATE_RUNNING: return "running";
	case HCA__VM_STATE__VM_STATE_PAUSED: return "paused";
	case HCA__VM_STATE__VM_STATE_SHUTTING_DOWN: return "shutting-down";
	case HCA__VM_STATE__VM_STATE_CRASHED: return "crashed";
	case HCA__VM_STATE__VM_STATE_INMIGRATE: return "inmigrate";
	case HCA__VM_STATE__VM_STATE_POSTMIGRATE: return "postmigrate";
	case HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE: return "paused (migration)";
	default: return "unknown";
	}
}

bool hv_state_running(Hca__VmState s)
{
	return s != HCA__VM_STATE__VM_STATE_STOPPED && s != HCA__VM_STATE__VM_STATE_CRASHED;
}

static bool migrating_in(Hca__VmState cur)
{
	return cur == HCA__VM_STATE__VM_STATE_INMIGRATE ||
	       cur == HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE;
}

Hca__VmState hv_runstate_map(const char *status, bool running, Hca__VmState cur,
			     const char *mig)
{
	const char *s = status ? status : "";

	if (!strcmp(s, "running"))
		return HCA__VM_STATE__VM_STATE_RUNNING;
	if (!strcmp(s, "inmigrate"))
		return HCA__VM_STATE__VM_STATE_INMIGRATE;
	if (!strcmp(s, "postmigrate"))
		return HCA__VM_STATE__VM_STATE_POSTMIGRATE;
	/* QEMU announces "completed" before it leaves finish-migrate for
	 * postmigrate, with no event for the latter: a query-status in
	 * between must not leave the source paused (migration) for good. */
	if (!strcmp(s, "finish-migrate"))
		return mig && !strcmp(mig, "completed") ? HCA__VM_STATE__VM_STATE_POSTMIGRATE :
							   HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE;
	if (!strcmp(s, "colo"))
		return HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE;
	/* An incoming QEMU started with -S ends its migration paused: that
	 * pause is the migration's, to be lifted by whoever drives it. */
	if ((!strcmp(s, "paused") || !strcmp(s, "prelaunch")) && migrating_in(cur))
		return HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE;
	if (!strcmp(s, "shutdown"))
		return HCA__VM_STATE__VM_STATE_SHUTTING_DOWN;
	/* paused, suspended, io-error, watchdog, guest-panicked, debug, ... and
	 * any state a later QEMU adds: its own "running" flag decides. */
	return running ? HCA__VM_STATE__VM_STATE_RUNNING : HCA__VM_STATE__VM_STATE_PAUSED;
}

const char *hv_runstate_reason(Hca__VmState st)
{
	switch (st) {
	case HCA__VM_STATE__VM_STATE_RUNNING: return "running";
	case HCA__VM_STATE__VM_STATE_INMIGRATE: return "waiting for an incoming migration";
	case HCA__VM_STATE__VM_STATE_POSTMIGRATE: return "migrated away";
	case HCA__VM_STATE__VM_STATE_PAUSED_MIGRATE: return "paused by a migration";
	case HCA__VM_STATE__VM_STATE_SHUTTING_DOWN: return "shutting down";
	default: return "paused";
	}
}
