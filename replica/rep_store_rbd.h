/*
 * rep_store_rbd: the data side of a replica store kept in an RBD pool
 * (rep_store.h with cfg->pool set; replica/DESIGN.md section 5, (c)).
 * Private to rep_store.c, which keeps the index, the points' bookkeeping
 * and the prune policy for both kinds of store.
 *
 * Disk I of VM V kept by node N is the image "hca-replica.N.V.NAME"
 * (NAME: the disk's) in the pool: a node that comes back after its VMs
 * failed over, and removes the stores of relations gone, never touches
 * another node's images of the same VM; a point is the snapshot "p<id>" of every disk, made after a
 * flush once the cycle's writes are in; a cycle writes the images' heads
 * directly (librbd). The index says which points exist: a snapshot it
 * does not name (made, then a crash before the index was written; or
 * left by an interrupted prune) is removed on open, and a head that
 * differs from the newest point is put back to it (a half-applied cycle).
 *
 * Errors: 0 / -errno and one line in @err (where there is one), logged.
 * Threads: rsr_write() and rsr_zero() may run on several threads at once;
 * everything else is the only call running on @r.
 */
#ifndef HCA_REP_STORE_RBD_H
#define HCA_REP_STORE_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replica/rep_store.h"
#include "replica/rep_wire.h"

#define RSR_POOL_MAX REP_POOL_MAX
#define RSR_CONF_MAX 255u
#define RSR_CLIENT_MAX 63u
#define RSR_NODE_MAX 63u

struct rsr;

struct rsr_cfg {
	const char *conf;   /* ceph.conf (NULL: Ceph's default search) */
	const char *client; /* cephx id without "client." (NULL: "admin") */
	const char *pool;
	const char *vm;
	const char *node;   /* the replica node, whose images these are */
	unsigned ndisks;
	const struct rep_disk *disks;
};

/* Is @pool a pool name this store takes (letters, digits, "_.-")? */
bool rsr_pool_valid(const char *pool);

/*
 * Connect and open the disks' images, creating them (sparse, the disks'
 * sizes) with @create; an image left from an earlier store of the VM is
 * removed first. Without @create each must exist with its disk's size.
 */
int rsr_open(const struct rsr_cfg *c, bool create, struct rsr **out, char *err, size_t len);
void rsr_close(struct rsr *r);

/* The I/O of a cycle; -ERANGE, -ENOSPC, -EIO, other -errno. */
int rsr_write(struct rsr *r, unsigned disk, uint64_t off, const void *buf, size_t len);
int rsr_zero(struct rsr *r, unsigned disk, uint64_t off, uint64_t len);

/* Flush every disk, then snapshot each as point @id (one that exists
 * already is kept: a retry). */
int rsr_point(struct rsr *r, uint64_t id, char *err, size_t len);

/* Remove point @id's snapshots (missing ones are fine). */
int rsr_unpoint(struct rsr *r, uint64_t id, char *err, size_t len);

/*
 * Make every head read as point @id again (0: as a new, empty image):
 * the ranges that differ, and only those, are copied back from the
 * snapshot (or zeroed). Then remove the snapshots that are not one of
 * @keep[0..@n). 0 or -errno.
 */
int rsr_revert(struct rsr *r, uint64_t id, const uint64_t *keep, unsigned n, char *err,
	       size_t len);

/* Call @fn for each allocated extent of disk @disk's head within [@off,
 * @off + @len), in order; stops at @fn's first nonzero result, which it
 * returns. */
int rsr_extents(struct rsr *r, unsigned disk, uint64_t off, uint64_t len,
		int (*fn)(uint64_t off, uint64_t len, void *arg), void *arg);

/* Read disk @disk's head. 0 or -errno. */
int rsr_read(struct rsr *r, unsigned disk, uint64_t off, void *buf, size_t len);

/*
 * What QEMU and qemu-img open for point @id of disk @disk: a json:
 * filename naming the raw format (never probed) on the rbd driver at the
 * snapshot. 0, or -ENAMETOOLONG.
 */
int rsr_point_spec(const struct rsr_cfg *c, unsigned disk, uint64_t id, char *out, size_t len);

/* Remove the images of @c's disks with their snapshots (missing ones are
 * fine). */
int rsr_destroy(const struct rsr_cfg *c, char *err, size_t len);

#endif /* HCA_REP_STORE_RBD_H */
