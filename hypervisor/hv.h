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

#include <jansson.h>
#include <qb/qbloop.h>

#include "proto/hca.pb-c.h"

#define HV_NAME_MAX 48
/*
 * A disk's name: QEMU 10 limits node names to 31 characters, and the
 * longest name made from a disk's is the replica's view, "rep-view-NAME"
 * (replica/rep_cut.h); the guest's own is "drive-NAME".
 */
#define HV_DISK_NAME_MAX 22u
#define HV_MAX_DISKS 16
#define HV_MAX_NICS 8
#define HV_MAX_VCPUS 64
#define HV_MIN_MEMORY_MIB 16
#define HV_MAX_MEMORY_MIB (1024ull * 1024) /* 1 TiB: hv_limits_default() */
#define HV_CMDLINE_MAX 4096
#define HV_QEMU_MIN_MAJOR 10

/* Limits a node applies to specs; hv_limits_default() fills sane values. */
struct hv_limits {
	uint32_t max_vcpus;
	uint64_t max_memory_mib;
};

void hv_limits_default(struct hv_limits *l);

/* hv_spec_check() flags. */
#define HV_CHECK_FILES 0x1u /* the files the spec names exist and are readable here */

/*
 * Check @spec (borrowed) against what any VM may say and @l (borrowed): name,
 * uuid shape (empty is allowed: assigned at define), ranges, at most
 * HV_MAX_DISKS disks and HV_MAX_NICS NICs, enum values this build knows
 * (protobuf-c keeps an unknown one as a bare integer), unique disk names,
 * `backing` only on an attached qcow2, absolute paths. With HV_CHECK_FILES
 * the kernel, initrd and attached images must also be readable on this node;
 * without it nothing outside @spec is looked at, so a record read from the
 * shared store (whose files may live on another node) is checked the same way
 * on every node. Returns 0, or -EINVAL with one line in @err (@errlen bytes,
 * always terminated) naming the VM and the field at fault.
 */
int hv_spec_check(const Hca__VmSpec *spec, const struct hv_limits *l, unsigned flags,
		  char *err, size_t errlen);

/* hv_spec_check() with HV_CHECK_FILES: for a spec about to be defined here. */
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
 * @path is a file, or "rbd:POOL/IMAGE" for an RBD image. Whether a qcow2's
 * backing chain is opened is decided from the DiskSpec (see hv_argv_build). */
struct hv_disk {
	const char *path;
	Hca__DiskFormat format;
	bool readonly;
	bool discard;   /* pass the guest's discards down (discard=unmap): a
			 * thin volume hcad made gives freed space back, and a
			 * migration's zero writes land as holes */
};

/* Where a VM's runtime files live: all under one directory per VM. */
struct hv_paths {
	char dir[128];
	char qmp[160];
	char console[160];
	char pidfile[160];
	char qemu_log[160];
	char serial_log[160];
	char qga[160];          /* the guest agent's channel (virtio-serial) */
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
	const char *incoming;        /* NULL: boot normally; else `-S -incoming`
				      * with this URI ("defer": QEMU waits for
				      * migrate-incoming); it stays paused after
				      * the stream until `cont` */
};

/* A NULL-terminated argv. Owns its strings. */
struct hv_argv {
	char **v;
	size_t n;
	size_t cap;
};

/*
 * Build QEMU's argv for @spec, which hv_spec_check() accepted. Pure: same
 * input, same output, no I/O. An attached qcow2 image (DiskSpec.path set) is
 * opened without the backing chain it names ("backing": null) unless
 * DiskSpec.backing is set, so a VM never opens a file its spec did not name;
 * volumes hcad created (path empty) open as they are.
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

/* Callbacks into the owner of a VM, on the loop thread. Any member may be NULL.
 * Neither may free @vm. */
struct hv_vm_ops {
	/* Every state change, with a reason for people. */
	void (*state_changed)(struct hv_vm *vm, Hca__VmState state,
			      const char *reason, void *opaque);
	/* Every QMP event QEMU sends (MIGRATION, BLOCK_JOB_*, ...), after hv_vm
	 * has updated its own state from it. @name and @data (may be NULL) are
	 * borrowed, valid during the call. May call hv_vm_qmp() and the
	 * operations below. */
	void (*event)(struct hv_vm *vm, const char *name, json_t *data,
		      void *opaque);
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
 * connect QMP. @done runs once QMP answered query-status (the VM runs, or
 * waits in VM_STATE_INMIGRATE when @argv has -incoming), or with QEMU's
 * stderr on failure.
 */
int hv_vm_start(struct hv_vm *vm, const struct hv_argv *argv, hv_done_fn done,
		void *opaque);

/*
 * Re-attach to a QEMU this node launched earlier: the pidfile names a live
 * process whose command line is this VM's, then QMP and query-status. If no
 * such process exists the VM is STOPPED and @done gets 0.
 */
int hv_vm_attach(struct hv_vm *vm, hv_done_fn done, void *opaque);

/*
 * Pause a RUNNING VM, resume a PAUSED one: -EALREADY if it already is, else
 * -EINVAL in any other state. A migration's pause (PAUSED_MIGRATE) is not
 * the user's: whoever drives the migration lifts it (hv_vm_qmp "cont").
 */
int hv_vm_pause(struct hv_vm *vm, hv_done_fn done, void *opaque);
int hv_vm_resume(struct hv_vm *vm, hv_done_fn done, void *opaque);

/* ACPI power button, then wait up to @timeout_s for QEMU to end. On timeout
 * the VM keeps running and @done gets -ETIMEDOUT. */
int hv_vm_shutdown(struct hv_vm *vm, unsigned timeout_s, hv_done_fn done,
		   void *opaque);

/* Stop waiting for a shutdown under way: the VM is RUNNING again (the guest
 * may still power off by itself, which is then seen as usual), the
 * operation's @done gets -ECANCELED at once. -EINVAL if no shutdown runs. */
int hv_vm_shutdown_abandon(struct hv_vm *vm);

/* Power off now: QMP quit, or SIGKILL with @force (also when QMP is dead). */
int hv_vm_stop(struct hv_vm *vm, bool force, hv_done_fn done, void *opaque);

/*
 * Completion of hv_vm_qmp(): @err 0 and @ret QEMU's "return" value; -EIO and
 * QEMU's error @errclass/@errdesc; -ETIMEDOUT (no reply in time; a late one
 * is dropped, the connection stays up); -ECONNRESET or -ECANCELED if the QMP
 * connection ended first (QEMU exited, the monitor was lost, or
 * hv_vm_free()). @ret, @errclass, @errdesc are borrowed, valid during the
 * call, NULL unless err says otherwise. Runs exactly once per accepted
 * command, on the loop, never from inside hv_vm_qmp(); from inside
 * hv_vm_free() with -ECANCELED, when @vm must not be used.
 */
typedef void (*hv_vm_qmp_fn)(struct hv_vm *vm, int err, json_t *ret,
			     const char *errclass, const char *errdesc,
			     void *opaque);

/*
 * Send any QMP command to the VM's QEMU, for callers above this module
 * (migration, replication). It is not an operation: it neither needs nor
 * takes the one slot of start/stop/shutdown/pause/resume, so it may be sent
 * while one of them runs, and commands may be pipelined. State changes it
 * causes arrive as events (ops->event) and through ops->state_changed.
 * @cmd is copied; @args (a JSON object or NULL) is stolen, also on failure.
 * @timeout_ms 0 means the VM's qmp_timeout_ms. @done may be NULL (the reply
 * is then only logged).
 * Returns 0, -ENOTCONN when QMP is not connected and negotiated (no QEMU,
 * still starting, or monitor lost), -EINVAL if @cmd is NULL or @args is not
 * an object, -ENOMEM.
 */
int hv_vm_qmp(struct hv_vm *vm, const char *cmd, json_t *args,
	      unsigned timeout_ms, hv_vm_qmp_fn done, void *opaque);

/*
 * The VM's state. While QEMU runs it follows QEMU's run state (query-status
 * when QMP connects, and again after the events STOP and MIGRATION with
 * status completed, failed or cancelled; RESUME means RUNNING):
 *   running                                   RUNNING
 *   inmigrate                                 INMIGRATE
 *   postmigrate                               POSTMIGRATE
 *   finish-migrate, colo, and paused/prelaunch
 *     right after INMIGRATE (QEMU ran with -S)  PAUSED_MIGRATE
 *   shutdown                                  SHUTTING_DOWN
 *   any other (paused, io-error, ...)         PAUSED, or RUNNING if QEMU
 *                                             says its vCPUs run
 * The end of an incoming migration under -S has no event but MIGRATION,
 * which QEMU sends only with the migration capability "events" on.
 */
Hca__VmState hv_vm_state(const struct hv_vm *vm);
const char *hv_vm_reason(const struct hv_vm *vm);
int hv_vm_pid(const struct hv_vm *vm);
uint64_t hv_vm_started_at(const struct hv_vm *vm);
/* True while an operation is under way (another one gets -EBUSY). */
bool hv_vm_busy(const struct hv_vm *vm);

/* "stopped", "running", "paused (migration)", ...; "unknown" for others. */
const char *hv_state_name(Hca__VmState s);

/* True in every state in which a QEMU process exists: all but STOPPED and
 * CRASHED. The one place for the rule "is there a QEMU to stop". */
bool hv_state_running(Hca__VmState s);

#endif
