/*
 * vmm: the node's VMs. Owns the table of VMs (records from the store plus a
 * supervised QEMU each), and carries out every local API request.
 * Runs on the loop thread; blocking work goes to the work queue.
 */
#ifndef HCA_VMM_H
#define HCA_VMM_H

#include <stddef.h>

#include <qb/qbloop.h>

#include "agent/conf.h"
#include "agent/memb.h"
#include "agent/peers.h"
#include "base/exec.h"
#include "proto/hca.pb-c.h"
#include "storage/sto.h"

struct vmm;

struct vmm_cfg {
	qb_loop_t *loop;
	const struct conf *conf;   /* borrowed, outlives the vmm */
	struct sto_store *store;   /* borrowed */
	struct sto_vols *vols;     /* borrowed: this node's volumes ("file") */
	struct sto_vols *rbd;      /* borrowed: the cluster's RBD pool, or NULL */
	struct exec *exec;         /* borrowed: the executor (modules make their queues) */
	struct exec_queue *q_store; /* borrowed: Ceph and volume calls, keyed by record */
	struct exec_queue *q_sys;   /* borrowed: the rest (taps) */
	struct memb *memb;         /* borrowed: membership and quorum */
	Hca__Accel accel;
	const char *accel_reason;  /* copied */
	const char *qemu_version;  /* copied */
};

struct vmm *vmm_new(const struct vmm_cfg *cfg);

/*
 * Storage came (back): @store and @rbd (may be NULL) borrowed from now on;
 * loads the records. Before this, a vmm created with no store answers
 * every VM request with "storage unavailable: @health".
 */
int vmm_set_storage(struct vmm *m, struct sto_store *store, struct sto_vols *rbd,
		    char *err, size_t errlen);
/* One line saying why storage is not usable, shown by cluster status. */
void vmm_set_storage_health(struct vmm *m, const char *health);

/*
 * Membership changed: re-read every shared record. Watches may have missed
 * changes while this node was cut off (a partition breaks its Ceph watch
 * too), and the store, not the watch, says what is true.
 */
void vmm_resync(struct vmm *m);

/* The node channel came up (@peers borrowed), or is off and why (@why). */
void vmm_set_peers(struct vmm *m, struct peers *peers, const char *why);

/* Stop the store watches and timers: nothing new is queued after this.
 * Call before the work queue is freed. NULL ok. */
void vmm_shutdown(struct vmm *m);

/* Detach from every VM (their QEMUs keep running) and free. NULL ok. */
void vmm_free(struct vmm *m);

/*
 * Read every VM record and re-attach to the QEMUs still running. A corrupt
 * record is logged and listed as such; it does not stop the others.
 * Returns 0 or -errno if the store cannot be listed.
 */
int vmm_load(struct vmm *m, char *err, size_t errlen);

/* A reply, valid during the call only: pack or copy it there. */
typedef void (*vmm_reply_fn)(const Hca__ApiReply *reply, void *ctx);

/* Carry out @req (borrowed, only during the call); @reply runs exactly once,
 * now or later on the loop. */
void vmm_request(struct vmm *m, const Hca__ApiRequest *req, vmm_reply_fn reply,
		 void *ctx);

#endif
