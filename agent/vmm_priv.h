/* vmm internals shared by vmm.c (table, queries, hv operations) and
 * vmm_ops.c (define, undefine, start). Not for other modules. */
#ifndef HCA_VMM_PRIV_H
#define HCA_VMM_PRIV_H

#include <stdbool.h>

#include "agent/vmm.h"
#include "hypervisor/hv.h"

struct vm {
	struct vm *next;
	struct vmm *m;
	char name[HV_NAME_MAX + 1];
	Hca__VmRecord *rec;   /* NULL while being defined, or when corrupt */
	uint64_t version;     /* the record's store version (CAS token) */
	char broken[256];     /* why the record could not be read */
	bool defining, undefining, preparing;
	struct hv_vm *hv;     /* only on the owner node */
	Hca__VmRunState *run; /* elsewhere: what the owner last published */
	struct hv_paths paths;
};

struct vmm {
	qb_loop_t *loop;
	const struct conf *conf;
	struct sto_store *store;
	struct sto_vols *vols;
	struct sto_vols *rbd;
	struct work_queue *work;
	struct memb *memb;
	struct peers *peers;      /* the node channel, NULL when off */
	char peers_off[200];      /* why it is off */
	Hca__Accel accel;
	char accel_reason[160];
	char qemu_version[160];
	char storage_health[160]; /* one line: "ok" or why not */
	struct hv_limits limits;
	struct vm *vms;       /* sorted by name */
	struct sto_watch *watch_vm, *watch_state;
};

/* A reply waiting on asynchronous steps (worker jobs, QEMU). */
struct pending {
	struct vmm *m;
	struct vm *vm;
	vmm_reply_fn fn;
	void *ctx;
	Hca__ErrorCode code;  /* set with err when a step failed */
	char err[512];
	Hca__VmRecord *rec;   /* define: the record being created; start: the
			       * record with this node as owner, to be CAS'd */
	char key[STO_KEY_MAX + 1];
	uint64_t version;
	bool took_owner;      /* start: the ownership CAS went through */
};

struct pending *vmm_pending_new(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx);
void vmm_pending_free(struct pending *p);

__attribute__((format(printf, 4, 5)))
void vmm_reply_error(vmm_reply_fn fn, void *ctx, Hca__ErrorCode code, const char *fmt, ...);
void vmm_reply_vm(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx);
/* hv_done_fn answering the pending reply @opaque. */
void vmm_hv_done(struct hv_vm *hv, int err, const char *msg, void *opaque);

struct vm *vmm_vm_find(struct vmm *m, const char *name);
struct vm *vmm_vm_new(struct vmm *m, const char *name);
void vmm_vm_link(struct vmm *m, struct vm *v);
void vmm_vm_unlink(struct vmm *m, struct vm *v);
void vmm_vm_free(struct vm *v);
int vmm_vm_attach_hv(struct vmm *m, struct vm *v);
/* @name's VM if an operation may start on it; else replies and returns NULL. */
struct vm *vmm_vm_for_op(struct vmm *m, const char *name, const char *op,
			 vmm_reply_fn fn, void *ctx);
bool vmm_vm_running(const struct vm *v);
void vmm_key(char *key, size_t len, const char *name);
Hca__VmSpec *vmm_spec_copy(const Hca__VmSpec *s);
/* The volume backend named @backend ("" is "file"), NULL if this node has none. */
struct sto_vols *vmm_vols(struct vmm *m, const char *backend);

Hca__VmRecord *vmm_record_decode(const uint8_t *buf, size_t len, char *err, size_t errlen,
				 const char *name);
/* Create @v's supervisor and re-attach to its QEMU if one runs. */
void vmm_vm_supervise(struct vmm *m, struct vm *v);

/* vmm_sync.c: the cluster's view of the VMs */
bool vmm_owned(const struct vmm *m, const struct vm *v);
void vmm_state_publish(struct vmm *m, struct vm *v);
int vmm_sync_start(struct vmm *m, char *err, size_t errlen);
void vmm_sync_stop(struct vmm *m);

void vmm_define(struct vmm *m, const Hca__DefineRequest *d, vmm_reply_fn fn, void *ctx);
void vmm_undefine(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx);
void vmm_start(struct vmm *m, const Hca__VmRef *ref, vmm_reply_fn fn, void *ctx);
/* Replies and returns false if @v is owned by another node. */
bool vmm_check_owned(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx);

#endif
