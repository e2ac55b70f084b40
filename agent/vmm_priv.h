/* vmm internals shared by vmm.c (table, queries, hv operations) and
 * vmm_ops.c (define, undefine, start). Not for other modules. */
#ifndef HCA_VMM_PRIV_H
#define HCA_VMM_PRIV_H

#include <stdbool.h>

#include "agent/job.h"
#include "agent/vmm.h"
#include "hypervisor/hv.h"
#include "storage/sto_vm.h"

struct vm {
	struct vm *next;
	struct vmm *m;
	char name[HV_NAME_MAX + 1];
	Hca__VmRecord *rec;   /* NULL while being defined, or when refused */
	uint64_t version;     /* the record's store version (CAS token) */
	char broken[256];     /* why the record was refused */
	struct job *job;      /* the one job under way on this VM, or NULL */
	struct hv_vm *hv;     /* only on the owner node */
	Hca__VmRunState *run; /* elsewhere: what the owner last published */
	struct hv_paths paths;
	bool releasing;       /* a CAS clearing `active` is on its way */
	unsigned refs;        /* worker steps holding it: freed after the last */
	bool freed;           /* vmm_vm_free() called while refs > 0 */
	bool stale;           /* a record update was skipped during a job */
	/* state/NAME publication: one write in flight, the latest next */
	bool publishing, publish_again;
	uint64_t publish_seq;
	unsigned mig_notes;   /* vmm_mig.c: notes being acted on (1: in, 2: out) */
	unsigned mig_rm_tries; /* vmm_mig.c: removals of a note's volumes that failed */
	uint32_t mig_rbd;     /* vmm_mig.c: disks (by spec index) an incoming
			       * migration brings into the pool: opened from
			       * there (raw) until the commit names them */
};

struct vmm {
	qb_loop_t *loop;
	const struct conf *conf;
	struct sto_store *store;
	struct sto_vols *vols;
	struct sto_vols *rbd;
	struct exec *exec;
	struct exec_queue *q_store, *q_sys;
	struct vmm_mig *migs;     /* the migration service, once the channel is up */
	struct vmm_rep *reps;     /* the replica service, once the channel is up */
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
	struct jobs *jobs;
	unsigned attaching;   /* re-attaches under way after a load */
	bool resolved;        /* interrupted jobs of this node resolved */
	Hca__Job **interrupted; /* read at load, resolved once attaches end */
	uint64_t *interrupted_ver;
	size_t n_interrupted;
	Hca__Job **ended;     /* ended jobs of earlier runs, read at load */
	uint64_t *ended_ver;
	size_t n_ended;
	bool stopping;
	bool loaded;          /* every record read, watches on */
	char load_err[512];   /* why the last load failed */
	qb_loop_timer_handle load_retry;
};

/*
 * An operation under way: the job that reports it, and what its
 * asynchronous steps carry from the loop to a worker and back.
 */
/* How long an op waits for its job's record before it gives up (within the
 * 10 s every request is answered in). */
#define VMM_JOB_DURABLE_MS 8000u

struct op {
	struct exec_item item; /* its steps, keyed by the VM's record */
	struct vmm *m;
	struct vm *vm;
	struct job *job;
	Hca__ErrorCode code;  /* set with err when a step failed */
	char err[512];
	Hca__VmRecord *rec;   /* define: the record being created; start: a
			       * copy of the record the claim was made from */
	char key[STO_KEY_MAX + 1];
	uint64_t version;
	uint64_t epoch;       /* start: the owner epoch the claim wrote */
	bool claimed;         /* start: this node holds the claim (active) */
	bool unknown;         /* define: the record write's outcome is unknown */
	bool reread;          /* define: learn that outcome before anything else */
	bool foreign;         /* define: the volume being made existed already */
	size_t made;          /* define: volumes made */
	unsigned timeout_s;   /* shutdown */
	unsigned waited_s;    /* shutdown: progress */
	qb_loop_timer_handle tick;
	bool force;           /* stop */
	bool taps;            /* start: its bridge taps were made */
	/* the caller's answer (the job), sent once the job's record is in the
	 * store: a job id a caller holds always names a record */
	vmm_reply_fn reply_fn;
	void *reply_ctx;
	bool begun;           /* the first step waited for the record */
	Hca__MigrateRequest *migrate; /* migrate: the request */
	/* migrate --with-storage: the local volumes that move (names copied on
	 * the loop, sizes read on a worker) */
	Hca__MigDisk mdisks[HV_MAX_DISKS];
	char mdisk_name[HV_MAX_DISKS][64], mvol_name[HV_MAX_DISKS][STO_VOL_NAME_MAX + 1];
	char mpath[HV_MAX_DISKS][STO_VOL_NAME_MAX + 80];
	size_t n_mdisks;
	uint64_t mig_epoch;
	void *ext;            /* the owner of a longer operation (a failover) */
};

struct op *vmm_op_new(struct vmm *m, struct vm *v, Hca__JobKind kind, const char *requested_on,
		      vmm_reply_fn fn, void *ctx);
/* End @op's job (code 0: succeeded) and free it. */
__attribute__((format(printf, 3, 4)))
void vmm_op_end(struct op *op, Hca__ErrorCode code, const char *fmt, ...);
void vmm_op_free(struct op *op);
/* Answer the caller with the job now (ops that need no store first). */
void vmm_op_reply(struct op *op);
/* Run @fn on the store's queue, then @done on the loop, ordered with every
 * other step on the VM's record (key vm/NAME). The first push waits until
 * the job's record is in the store (answering the caller then): nothing
 * is changed before a restart could find the job. If the record cannot be
 * written, @done runs without @fn, with op->code set. */
void vmm_op_push(struct op *op, exec_fn fn, exec_fn done);
/* The same, waiting for every change made to the job so far to be in the
 * store first (a volume recorded before it is made). */
void vmm_op_push_durable(struct op *op, exec_fn fn, exec_fn done);
/* The op of a step; NULL when the step was cancelled by a shutdown. */
struct op *vmm_op_of(struct exec_item *it);
void vmm_reply_job(struct job *j, vmm_reply_fn fn, void *ctx);

__attribute__((format(printf, 4, 5)))
void vmm_reply_error(vmm_reply_fn fn, void *ctx, Hca__ErrorCode code, const char *fmt, ...);
void vmm_reply_vm(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx);

struct vm *vmm_vm_find(struct vmm *m, const char *name);
struct vm *vmm_vm_new(struct vmm *m, const char *name);
void vmm_vm_link(struct vmm *m, struct vm *v);
void vmm_vm_unlink(struct vmm *m, struct vm *v);
void vmm_vm_free(struct vm *v);
/* Drop a worker step's reference; true if that freed @v. */
bool vmm_vm_put(struct vm *v);
int vmm_vm_attach_hv(struct vmm *m, struct vm *v);
/* @name's VM if an operation may start on it; else replies and returns NULL. */
struct vm *vmm_vm_for_op(struct vmm *m, const char *name, const char *op,
			 vmm_reply_fn fn, void *ctx);
bool vmm_vm_running(const struct vm *v);
void vmm_key(char *key, size_t len, const char *name);
Hca__VmSpec *vmm_spec_copy(const Hca__VmSpec *s);
/* The volume backend named @backend ("" is "file"), NULL if this node has none. */
struct sto_vols *vmm_vols(struct vmm *m, const char *backend);

/* Decode and check a record read from vm/@name: the format, the spec's
 * rules (without files: they are the owner's). NULL with @err if refused. */
Hca__VmRecord *vmm_record_check(struct vmm *m, const uint8_t *buf, size_t len, const char *name,
				char *err, size_t errlen);
/* Create @v's supervisor and re-attach to its QEMU if one runs. */
void vmm_vm_supervise(struct vmm *m, struct vm *v);
void vmm_hv_error(struct vm *v, int rc, const char *op, vmm_reply_fn fn, void *ctx);
/* The store answers (its health is "ok"). */
bool vmm_storage_ok(const struct vmm *m);
/* Is @v busy? Replies "another operation is under way" and returns true. */
bool vmm_vm_busy(struct vm *v, vmm_reply_fn fn, void *ctx);

/* vmm_sync.c: the cluster's view of the VMs */
bool vmm_owned(const struct vmm *m, const struct vm *v);
void vmm_state_publish(struct vmm *m, struct vm *v);
int vmm_sync_start(struct vmm *m, char *err, size_t errlen);
void vmm_sync_stop(struct vmm *m);
/* Re-read vm/@name (a watch may have been skipped meanwhile). */
void vmm_sync_refresh(struct vmm *m, const char *name);
/* @v's job has ended: if an update was skipped meanwhile, read it now. */
void vmm_job_done(struct vm *v);
/* Replace @v's record with @rec (taken) at @version, following its owner. */
void vmm_sync_apply(struct vmm *m, struct vm *v, Hca__VmRecord *rec, uint64_t version);

/* vmm_ops.c: define and undefine */
void vmm_define(struct vmm *m, const Hca__DefineRequest *d, const char *via, vmm_reply_fn fn,
		void *ctx);
void vmm_undefine(struct vmm *m, const char *name, const char *via, vmm_reply_fn fn, void *ctx);
/* The VM other than @self that has @path as a disk, or NULL. */
struct vm *vmm_disk_user(struct vmm *m, const struct vm *self, const char *path, bool running_only);
const char *vmm_disk_path(const Hca__VmRecord *r, size_t i);
/* The same, where this node keeps it: a volume of the "file" backend is
 * wherever this node's storage holds it (it moves with the VM), whatever
 * path the record kept from the node that made it; into @buf. */
const char *vmm_disk_local_path(struct vmm *m, const Hca__VmRecord *r, size_t i, char *buf,
				size_t len);
/* Remove the volumes a define job recorded as made ("backend:name"). */
void vmm_job_volumes_remove(struct vmm *m, struct job *j);

/* vmm_mig.c: the migration service's host */
/* vmm_rep.c: the replica service's host and the `replica` requests */
void vmm_rep_setup(struct vmm *m);   /* the channel is up */
void vmm_rep_store(struct vmm *m);   /* the store came (back) */
void vmm_rep_free(struct vmm *m);
void vmm_rep_event(struct vm *v, const char *event, json_t *data);
/* A replication cycle of @name runs here now. */
bool vmm_rep_busy(struct vmm *m, const char *name);
void vmm_replica_enable(struct vmm *m, const Hca__ReplicaEnable *q, vmm_reply_fn fn, void *ctx);
void vmm_replica_status(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx);
void vmm_replica_points(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx);
void vmm_replica_failover(struct vmm *m, const Hca__ReplicaFailover *q, const char *via,
			  vmm_reply_fn fn, void *ctx);
/* after a failover, on the VM's new node: replicate back to the old one */
void vmm_replica_reverse(struct vmm *m, const char *name, vmm_reply_fn fn, void *ctx);
/* pause (PAUSED), resume (ENABLED), disable (NONE: the relation goes) */
void vmm_replica_state(struct vmm *m, const char *name, Hca__RepState state, vmm_reply_fn fn,
		       void *ctx);

void vmm_mig_setup(struct vmm *m);   /* the channel is up */
void vmm_mig_store(struct vmm *m);   /* the store came (back) */
void vmm_mig_free(struct vmm *m);
void vmm_mig_event(struct vm *v, const char *event, json_t *data);
/* A QEMU re-attached after a restart: finish what a migration left. */
void vmm_mig_attached(struct vmm *m, struct vm *v);
bool vmm_mig_busy(struct vmm *m, const char *name);
void vmm_migrate(struct vmm *m, const Hca__MigrateRequest *q, const char *via, vmm_reply_fn fn,
		 void *ctx);

/* vmm_run.c: start, stop, shutdown and the owner's claim */
/* sto_owner_cas() from @cur; if it fails only because this node's own
 * claim flag moved meanwhile (a release of ours landed after the request
 * read the record), once more from the record as it is now. */
int vmm_own_cas(struct vmm *m, const char *name, struct sto_owner *cur,
		const struct sto_owner *next, uint64_t *epoch, uint64_t *version, char *err,
		size_t errlen);
/* Launch @v's QEMU (its supervisor exists); @incoming: NULL, or the URI of
 * an incoming migration ("defer"). The claim is the caller's business. */
int vmm_launch(struct vmm *m, struct vm *v, const char *incoming, hv_done_fn done, void *opaque);
void vmm_start(struct vmm *m, const Hca__VmRef *ref, const char *via, vmm_reply_fn fn, void *ctx);
void vmm_stop(struct vmm *m, const Hca__StopRequest *r, const char *via, vmm_reply_fn fn,
	      void *ctx);
void vmm_shutdown_vm(struct vmm *m, const Hca__ShutdownRequest *r, const char *via,
		     vmm_reply_fn fn, void *ctx);
/* QEMU ended on this owner: clear the record's claim (active), by CAS. */
void vmm_release(struct vmm *m, struct vm *v);
/* A QEMU runs on this owner and the record's claim is clear (a record from
 * before claims existed, or a claim write whose outcome was lost): set it. */
void vmm_claim_running(struct vmm *m, struct vm *v);
/* Replies and returns false if @v is owned by another node. */
bool vmm_check_owned(struct vmm *m, struct vm *v, vmm_reply_fn fn, void *ctx);

/* vmm_fwd.c: requests for VMs of other nodes, and the job requests */
/* Forward @q to @node's hcad; the answer comes back through @fn. */
void vmm_forward(struct vmm *m, const char *node, const Hca__ApiRequest *q, vmm_reply_fn fn,
		 void *ctx);
/* Where @q must run, if not here: the node name, or NULL (here). */
const char *vmm_route(struct vmm *m, const Hca__ApiRequest *q);
void vmm_job_show(struct vmm *m, const char *id, vmm_reply_fn fn, void *ctx);
void vmm_job_list(struct vmm *m, vmm_reply_fn fn, void *ctx);
void vmm_job_cancel(struct vmm *m, const char *id, const char *via, vmm_reply_fn fn, void *ctx);
void vmm_fwd_register(struct vmm *m);

/* vmm_resolve.c: jobs interrupted by a crash of hcad, resolved at load */
int vmm_resolve_load(struct vmm *m, char *err, size_t errlen);
void vmm_resolve_run(struct vmm *m);

#endif
