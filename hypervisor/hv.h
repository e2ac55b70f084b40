/*
 * hv: the hypervisor module. Turns a VM spec into a QEMU command line (a pure
 * function), launches QEMU so that it outlives the agent, and supervises it
 * through QMP on the caller's event loop.
 *
 * Nothing here assumes it runs inside hcad: the caller passes the loop, the
 * paths and a sink for state changes.
 */
#ifndef HCA_HV_H
#define HCA_HV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <qb/qbloop.h>

#include "proto/hca.pb-c.h"

#define HV_NAME_MAX 48
#define HV_MAX_DISKS 16
#define HV_MAX_NICS 8
#define HV_MAX_VCPUS 64
#define HV_MIN_MEMORY_MIB 16
#define HV_CMDLINE_MAX 4096
#define HV_QEMU_MIN_MAJOR 10

/* Limits a node applies to specs; hv_limits_default() fills sane values. */
struct hv_limits {
	uint32_t max_vcpus;
	uint64_t max_memory_mib;
};

void hv_limits_default(struct hv_limits *l);

/*
 * Check @spec before anything is created. Returns 0, or -EINVAL with one
 * line in @err naming the VM and the field at fault. Files (kernel, initrd,
 * attached images) are checked for existence here too.
 */
int hv_spec_validate(const Hca__VmSpec *spec, const struct hv_limits *l,
		     char *err, size_t errlen);

bool hv_name_valid(const char *name);

/* The MAC of NIC @idx: the spec's, else derived from the uuid (52:54:00:..). */
void hv_nic_mac(const Hca__VmSpec *spec, size_t idx, char out[18]);

/* The tap device name for NIC @idx (≤ 15 chars, stable for the VM). */
void hv_nic_tap(const Hca__VmSpec *spec, size_t idx, char out[16]);

/* ---- accelerator ---- */

/*
 * Decide whether KVM can really run guests here. /dev/kvm alone is not
 * enough: a nested kvm_pvm provides it but cannot run a stock kernel. Needs
 * the kvm_intel or kvm_amd module. @reason says why, for `vm show`.
 */
Hca__Accel hv_accel_detect(char *reason, size_t len);

const char *hv_accel_name(Hca__Accel a);

/* ---- command line ---- */

/* A disk as QEMU opens it, resolved by the caller from the spec's DiskSpec.
 * @path is a file, or "rbd:POOL/IMAGE" for an RBD image. */
struct hv_disk {
	const char *path;
	Hca__DiskFormat format;
	bool readonly;
};

/* Where a VM's runtime files live: all under one directory per VM. */
struct hv_paths {
	char dir[128];
	char qmp[160];
	char console[160];
	char pidfile[160];
	char qemu_log[160];
	char serial_log[160];
};

/* Fill @p for @dir. Returns -ENAMETOOLONG if a unix socket path would not fit. */
int hv_paths_init(struct hv_paths *p, const char *dir);

struct hv_argv_ctx {
	const char *qemu;            /* binary path */
	Hca__Accel accel;
	const struct hv_paths *paths;
	const struct hv_disk *disks; /* one per spec->disks, same order */
	const char *ceph_conf;       /* for rbd: disks */
	const char *ceph_user;       /* cephx id, e.g. "admin" */
};

/* A NULL-terminated argv. Owns its strings. */
struct hv_argv {
	char **v;
	size_t n;
	size_t cap;
};

/*
 * Build QEMU's argv for @spec. Pure: same input, same output, no I/O.
 * Returns 0 or -ENOMEM. Free with hv_argv_free().
 */
int hv_argv_build(const Hca__VmSpec *spec, const struct hv_argv_ctx *ctx,
		  struct hv_argv *out);
void hv_argv_free(struct hv_argv *a);

/* ---- QEMU version ---- */

/*
 * Run `@qemu --version` and parse it. Returns 0 and fills @major/@minor and
 * @text (the first line), or -errno with @text holding the reason.
 */
int hv_qemu_version(const char *qemu, int *major, int *minor, char *text,
		    size_t len);

/* ---- a running VM ---- */

struct hv_vm;

struct hv_vm_ops {
	/* Every state change, with a reason for people. */
	void (*state_changed)(struct hv_vm *vm, Hca__VmState state,
			      const char *reason, void *opaque);
};

struct hv_vm_cfg {
	qb_loop_t *loop;
	const char *qemu;
	unsigned qmp_timeout_ms;
	const struct hv_paths *paths;
};

/*
 * Completion of an asynchronous operation: @err 0 or -errno, @msg one line
 * naming the VM and the cause on failure (valid during the call).
 */
typedef void (*hv_done_fn)(struct hv_vm *vm, int err, const char *msg,
			   void *opaque);

/* @name and @uuid copied; @cfg contents copied; @ops borrowed. */
struct hv_vm *hv_vm_new(const char *name, const char *uuid,
			const struct hv_vm_cfg *cfg,
			const struct hv_vm_ops *ops, void *opaque);

/*
 * Detach from QEMU (the process keeps running) and free. Pending operations
 * complete with -ECANCELED. NULL is a no-op.
 */
void hv_vm_free(struct hv_vm *vm);

/*
 * Launch QEMU with @argv (daemonized: its own session, pidfile, logs), then
 * connect QMP. @done runs when the VM runs, or with QEMU's stderr on failure.
 */
int hv_vm_start(struct hv_vm *vm, const struct hv_argv *argv, hv_done_fn done,
		void *opaque);

/*
 * Re-attach to a QEMU this node launched earlier: the pidfile names a live
 * process whose command line is this VM's, then QMP and query-status. If no
 * such process exists the VM is STOPPED and @done gets 0.
 */
int hv_vm_attach(struct hv_vm *vm, hv_done_fn done, void *opaque);

int hv_vm_pause(struct hv_vm *vm, hv_done_fn done, void *opaque);
int hv_vm_resume(struct hv_vm *vm, hv_done_fn done, void *opaque);

/* ACPI power button, then wait up to @timeout_s for QEMU to end. On timeout
 * the VM keeps running and @done gets -ETIMEDOUT. */
int hv_vm_shutdown(struct hv_vm *vm, unsigned timeout_s, hv_done_fn done,
		   void *opaque);

/* Power off now: QMP quit, or SIGKILL with @force (also when QMP is dead). */
int hv_vm_stop(struct hv_vm *vm, bool force, hv_done_fn done, void *opaque);

Hca__VmState hv_vm_state(const struct hv_vm *vm);
const char *hv_vm_reason(const struct hv_vm *vm);
int hv_vm_pid(const struct hv_vm *vm);
uint64_t hv_vm_started_at(const struct hv_vm *vm);
/* True while an operation is under way (another one gets -EBUSY). */
bool hv_vm_busy(const struct hv_vm *vm);

const char *hv_state_name(Hca__VmState s);

#endif
