/*
 * hv_priv.h: internals of the hypervisor module shared by its files and its
 * unit tests; nothing above the module includes this.
 */
#ifndef HCA_HV_PRIV_H
#define HCA_HV_PRIV_H

#include <stdbool.h>

#include "hypervisor/hv.h"

/*
 * The VM state for QEMU's run state @status (query-status, see
 * qapi/run-state.json; @running its "running" flag), given the state @cur
 * the VM is in and the status of the last MIGRATION event @mig ("" if none).
 * Pure. The table is in hv.h, at hv_vm_state().
 */
Hca__VmState hv_runstate_map(const char *status, bool running, Hca__VmState cur,
			     const char *mig);

/* A reason for people to go with hv_runstate_map()'s answer. */
const char *hv_runstate_reason(Hca__VmState st);

#endif
