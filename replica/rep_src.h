/*
 * rep_src: the source side of a replication cycle, on the node where the
 * VM runs. One call ships one cycle of one VM:
 *
 *   plan     query-named-block-nodes: which disks still have their change
 *            bitmap (hca-rep-M, consistent); a disk without one is read
 *            whole this cycle (first replication, QEMU restarted);
 *   prepare  a temporary qcow2 target per disk (qemu-img, on a worker) and
 *            its node in QEMU;
 *   freeze   (app-consistent points) the guest agent freezes the file
 *            systems (rep_ga.h); whatever it answers, they are thawed
 *            right after the cut, on every path;
 *   cut      ONE QMP transaction over every disk: the old bitmap frozen, a
 *            new one started, a copy-before-write filter placed: the point
 *            in time, crash-consistent across the VM's disks;
 *   view     a snapshot-access node per disk exported over NBD on a unix
 *            socket, with the frozen bitmap;
 *   ship     a worker reads the changed extents (rep_read.h) and the stream
 *            (rep_stream.h) carries them to the replica node, which makes a
 *            recovery point and answers;
 *   teardown the exports, views, cut jobs and targets go, whatever happened;
 *   settle   acknowledged: the frozen bitmaps are removed; failed: they are
 *            merged into the new ones, so the next cycle ships both and
 *            nothing is lost.
 *
 * The caller (the agent) decides when a cycle runs and keeps the relation
 * record; this module only talks to the VM's QEMU, the executor and the
 * channel. Loop thread.
 */
#ifndef HCA_REP_SRC_H
#define HCA_REP_SRC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "base/env.h"
#include "base/exec.h"
#include "replica/rep_stream.h"

struct hv_vm;
struct rep_src;

struct rep_src_host {
	void *ctx;
	/* The VM's QEMU handle here now, or NULL (never kept across calls). */
	struct hv_vm *(*vm_hv)(void *ctx, const char *vm);
	const char *work_dir; /* root-only: temporary targets, NBD sockets */
	const char *qemu_img; /* NULL: "qemu-img" */
};

struct rep_src_disk {
	char name[REP_NAME_MAX + 1]; /* the disk's name in the spec: node drive-NAME */
	uint64_t size;
	bool raw;                    /* raw format: its bitmap cannot persist */
};

/* One cycle to run. */
struct rep_src_req {
	char vm[REP_NAME_MAX + 1];
	char target[64];             /* the replica node */
	uint64_t relation, incarnation;
	uint64_t min_cycle;          /* the cycle number is at least this */
	uint64_t base;               /* the newest point the replica acknowledged; 0: none */
	bool app_consistent;         /* freeze the guest's file systems for the cut */
	bool whole;                  /* read every disk whole (the replica lost its base) */
	char qga[160];               /* the guest agent's socket (app_consistent) */
	unsigned ndisks;
	struct rep_src_disk disks[REP_DISKS_MAX];
};

struct rep_src_result {
	int err;                     /* 0: the replica made point `cycle` */
	char msg[320];
	uint64_t cycle;
	uint64_t cut_ms;             /* wall clock of the cut */
	uint64_t dur_ms;             /* the whole cycle */
	bool full;                   /* every disk read whole */
	unsigned whole_disks;        /* disks read whole (no usable bitmap) */
	bool app_consistent;
	bool resync;                 /* disks read whole were compared by digests */
	uint64_t same_bytes;         /* resync: data the replica had already, not sent */
	struct rep_tx_stats tx;
};

typedef void (*rep_src_done_fn)(void *opaque, const struct rep_src_result *r);

/* @env, @x, @q (the queue reads and qemu-img run on), @h: borrowed, outlive it. */
struct rep_src *rep_src_new(const struct hca_env *env, struct rep_ctx *x, struct exec_queue *q,
			    const struct rep_src_host *h);
/* Cycles under way end with -ESHUTDOWN (done is not called). NULL ok. */
void rep_src_free(struct rep_src *s);

/* Start a cycle (@r copied). 0; -EBUSY (one runs for this VM); -ENOENT (no
 * QEMU); -EINVAL; -ENOMEM. @done comes once, later, on the loop. */
int rep_src_cycle(struct rep_src *s, const struct rep_src_req *r, rep_src_done_fn done,
		  void *opaque);
bool rep_src_busy(const struct rep_src *s, const char *vm);
/* Abort @vm's cycle now (disable, shutdown): done(-ECANCELED) follows
 * after the teardown. */
void rep_src_cancel(struct rep_src *s, const char *vm, const char *why);
/* Every QMP event of a VM's QEMU on this node. */
void rep_src_event(struct rep_src *s, const char *vm, const char *event, json_t *data);
/* Remove every change bitmap of @vm's disks (disable): fire and forget. */
void rep_src_forget(struct rep_src *s, const char *vm, const struct rep_src_disk *d, unsigned n);

#endif /* HCA_REP_SRC_H */
