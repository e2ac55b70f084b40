/*
 * rep_dst: the replica node's service. Takes the cycles the source nodes
 * stream here (rep_stream.h's receiver) and applies each to the VM's
 * replica store (rep_store.h), one store per VM under host->dir/VM/, whose
 * blocking calls run on the executor queue given:
 *
 *   open   host->check(), then (on the queue) open the VM's store, kept
 *          between cycles, and begin(cycle, base, full); frames that come
 *          before that is done wait, in order
 *   frame  write / write-zeroes, on the queue, two at a time (one per disk:
 *          a cycle's ranges of one disk may overlap and must land in order)
 *   end    commit the point (id = the cycle number, time = its cut), prune,
 *          then rep_rx_ack()
 *   fail   abort: what the cycle wrote is dropped
 *
 * Control operations of one VM are keyed "rep/VM" on the queue so they stay
 * in order. It also answers the channel call REP_M_POINTS ("rep.points",
 * an hca.RepPointsRequest, answered with an hca.RepPointList) so any node
 * can list this node's points of a VM.
 *
 * Everything here is called on the loop thread of @env.
 */
#ifndef HCA_REP_DST_H
#define HCA_REP_DST_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/env.h"
#include "base/exec.h"
#include "replica/rep_store.h"
#include "replica/rep_stream.h"

#define REP_M_POINTS "rep.points"
#define REP_M_DIGESTS "rep.digests" /* RepDigestsRequest -> RepDigests */

struct rep_dst_host {
	void *ctx;
	const char *dir; /* STATE_DIR/replica: one sub-directory per VM (copied) */
	/*
	 * Is @c (from node @peer) a cycle of a relation this node replicates
	 * to? 0, or -errno and a line in @err (-EAGAIN / -ESTALE: unknown
	 * relation, -EPERM: this node is not its target), which the sender
	 * gets.
	 */
	int (*check)(void *ctx, const struct rep_cycle *c, const char *peer, char *err,
		     size_t len);
	unsigned keep_default; /* points kept when keep is NULL or says 0 */
	/* the points kept for @vm (the relation's keep); may be NULL */
	unsigned (*keep)(void *ctx, const char *vm);
	/* NULL: "qemu-storage-daemon" and "qemu-img" from PATH (copied) */
	const char *qsd, *qemu_img;
	/*
	 * The RBD pool @vm's replica lives in ("" or NULL: this node's files;
	 * the relation's target_pool), asked when a cycle opens; may be NULL.
	 * A store found in another place than it names is refused.
	 */
	const char *(*pool)(void *ctx, const char *vm);
	/* reaching Ceph for stores in a pool (NULL: Ceph's defaults; copied) */
	const char *ceph_conf, *ceph_client;
};

struct rep_dst;

/*
 * Start taking cycles: registers the stream receiver (rep_recv_new) and
 * REP_M_POINTS on @env's channel. @env, @x (codec resources) and @q (the
 * queue the stores' calls run on, 2 threads are plenty) are borrowed and
 * outlive it; @h is copied. NULL with errno set (EINVAL, ENOMEM, the
 * receiver's errors).
 */
struct rep_dst *rep_dst_new(const struct hca_env *env, struct rep_ctx *x, struct exec_queue *q,
			    const struct rep_dst_host *h);

/* The channel came (back) up: register REP_M_POINTS again. */
void rep_dst_channel_up(struct rep_dst *d);

/*
 * Fail the cycles in progress, close the stores (their daemons keep
 * running until the next hcad opens them again), free. Operations still on the queue
 * finish first (this waits for them: free the executor after, not before).
 * NULL is a no-op.
 */
void rep_dst_free(struct rep_dst *d);

/*
 * This node's points of @vm, oldest first: up to @max into @out; returns
 * how many there are (0: no replica here), or -errno. Reads the index
 * file (small) on the calling thread.
 */
int rep_dst_points(struct rep_dst *d, const char *vm, struct rep_store_point *out,
		   unsigned max);

/*
 * Stop and remove @vm's store (disable, reverse), once the cycle in
 * progress, if any, is over (it is failed first). Async: @done(@opaque,
 * 0 or -errno, a line or NULL) on the loop, never from inside this call.
 * 0, or -errno (-ENOMEM, -EINVAL: a bad name) and no @done.
 */
int rep_dst_drop(struct rep_dst *d, const char *vm,
		 void (*done)(void *opaque, int err, const char *msg), void *opaque);

/*
 * Hold (@on) or release point @point of @vm (a test failover boots from
 * it: never pruned while held); held, @paths gets each disk's top file
 * (rep_store_point_files(): open it read-only and with -U). Async: @done
 * (@opaque, 0 or -errno, a line or NULL, the number of disks, @paths) on
 * the loop. 0 or -errno and no @done.
 */
typedef void (*rep_dst_hold_fn)(void *opaque, int err, const char *msg, unsigned ndisks,
				char (*paths)[PATH_MAX]);
int rep_dst_hold(struct rep_dst *d, const char *vm, uint64_t point, bool on,
		 rep_dst_hold_fn done, void *opaque);

/*
 * Close @vm's store and stop its daemon, keeping its files (a planned
 * failover boots from the newest point: rep_store_read_points() and the
 * files dI.<seq>.qcow2 under host->dir/VM/). Async as rep_dst_drop().
 */
int rep_dst_release(struct rep_dst *d, const char *vm,
		    void (*done)(void *opaque, int err, const char *msg), void *opaque);

/*
 * Make @vm's store anew from local images (rep_store_seed(): @n disks as
 * the relation's cycles will name them, @src their images) with the one
 * point @point: a reversed relation's first cycle then compares digests
 * with it instead of copying the disks. Async as rep_dst_drop(); -EBUSY
 * while a cycle or a drop of @vm is under way here.
 */
int rep_dst_seed(struct rep_dst *d, const char *vm, const struct rep_disk *disks, unsigned n,
		 const struct rep_seed_src *src, uint64_t point,
		 void (*done)(void *opaque, int err, const char *msg), void *opaque);

#endif /* HCA_REP_DST_H */
