/*
 * rep_store: one replicated VM's store of recovery points on the replica
 * node (replica/DESIGN.md section 5, recipe (b)).
 *
 * One qemu-storage-daemon per VM holds, per disk, a qcow2 overlay chain:
 *
 *   dI.0.qcow2 (base) <- dI.S1.qcow2 <- dI.S2.qcow2 <- ... <- dI.SA.qcow2 (active)
 *
 * A cycle's writes go into the active overlay through a writable NBD export
 * (unix socket, libnbd). Committing a point: NBD flush, then ONE QMP
 * `transaction` of `blockdev-snapshot`s puts a fresh overlay on every disk:
 * the old active layers are the point (frozen from then on), the exports
 * follow the new active layer. Pruning the oldest point: `block-commit` of
 * its overlay into the base, which then reads as that point did. A
 * half-applied cycle only lives in the active overlay, which open() and
 * abort() throw away: a point exists only after flush + snapshot.
 *
 * File names never change (a file's name is in its child's qcow2 header):
 * S is a store-wide sequence number, the same for every disk of one point,
 * never reused. The directory holds:
 *
 *   qmp.sock nbd.sock qsd.pid qsd.log  the daemon's
 *   points                             the index: disks, points, the active
 *                                      sequence (temp file, fsync, rename)
 *   dI.S.qcow2                         disk I's chain
 *
 * The daemon outlives the caller; the next open asks it to quit (it
 * flushes) and starts another from the files. rep_store_close(.., true)
 * and rep_store_destroy() stop it.
 *
 * Errors: 0 / -errno and one line for people in @err where there is one.
 * Threads: blocking calls, made on executor workers. rep_store_write() and
 * rep_store_zero() may run on several threads at once, between begin() and
 * commit()/abort(); every other call is the only one running on the store.
 */
#ifndef HCA_REP_STORE_H
#define HCA_REP_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replica/rep_wire.h"

#define REP_STORE_POINTS_MAX 256u /* points an index may hold */
#define REP_POOL_MAX 63u	   /* bytes of an RBD pool's name */

/* Is @pool an RBD pool name a store takes (1 to REP_POOL_MAX letters,
 * digits and "_.-", not starting with ".")? */
bool rep_store_pool_valid(const char *pool);

struct rep_store;

struct rep_store_cfg {
	const char *dir;       /* the VM's directory, created if missing */
	const char *vm;        /* for logs */
	unsigned ndisks;       /* 1 to REP_DISKS_MAX; 0: the store must exist,
				* with the disks its index names */
	struct rep_disk disks[REP_DISKS_MAX];
	unsigned keep;         /* points kept, >= 1 (0: 1) */
	const char *qsd;       /* NULL: "qemu-storage-daemon" (in PATH) */
	const char *qemu_img;  /* NULL: "qemu-img" */
	/*
	 * NULL or "": the points are files in @dir (above). Else the disks are
	 * images of this RBD pool and the points their snapshots
	 * (rep_store_rbd.h); @dir keeps the index. @ceph_conf and @ceph_client
	 * (NULL: Ceph's defaults, "admin"; no blanks) reach the cluster. With
	 * ndisks 0, the index says which pool.
	 */
	const char *pool;
	const char *ceph_conf, *ceph_client;
	const char *node; /* a pool store: this node, whose images they are */
};

struct rep_store_point {
	uint64_t id;          /* the cycle that made it */
	uint64_t time_ms;     /* the cut's wall-clock time */
	bool app_consistent;
	uint64_t bytes;       /* raw bytes the cycle wrote */
	bool held;            /* never pruned while held */
	uint64_t seq;         /* its overlays: dI.<seq>.qcow2 */
};

/*
 * Open the store in cfg->dir (everything in @cfg copied), creating it if
 * new. A daemon still running there is asked to quit and a new one
 * starts from the files, as the index describes them (never trusting what
 * the old one did after the index was written). Whatever a cycle left in
 * the active overlay is discarded.
 * 0 with *@out the caller's; -EINVAL (bad config, or the index names other
 * disks or sizes: the VM's disks changed), -EIO (qemu-img or the daemon
 * failed: its message in @err), other -errno.
 */
int rep_store_open(const struct rep_store_cfg *cfg, struct rep_store **out, char *err,
		   size_t len);

/* The newest point's id, 0 if none. */
uint64_t rep_store_newest(const struct rep_store *s);

/* Points kept from now on (>= 1). */
void rep_store_set_keep(struct rep_store *s, unsigned keep);

/*
 * A cycle starts: @cycle (> the newest point) applies on point @base (or a
 * later one: its changes cover everything since; exactly @base when
 * @exact, a resync's), or on anything if @full. 0; -ESTALE (base is not
 * the newest point: the message names both), -EBUSY (a cycle is open),
 * -EINVAL.
 */
int rep_store_begin(struct rep_store *s, uint64_t cycle, uint64_t base, bool full, bool exact,
		    char *err, size_t len);

/* A local image a store is seeded from. */
struct rep_seed_src {
	char path[PATH_MAX];
	bool raw;              /* else qcow2 */
};

/*
 * A new store in cfg->dir (whatever was there is removed) whose one point,
 * (files only: -EOPNOTSUPP for a pool)
 * @point_id, holds what the images @src[0..cfg->ndisks) hold: copied
 * locally (qemu-img convert, without -U: an image a QEMU writes is
 * refused), never over the network. A reversed relation starts from it,
 * so that its first cycle compares digests instead of copying. 0 with
 * *@out open, or -errno and a line in @err.
 */
int rep_store_seed(const struct rep_store_cfg *cfg, uint64_t point_id,
		   const struct rep_seed_src *src, struct rep_store **out, char *err, size_t len);

/* What rep_store_digests() gives: runs of digests of allocated blocks. */
struct rep_store_digests {
	uint64_t point;	/* the newest point, whose content they are; 0: none */
	uint64_t next;	/* where the next call starts */
	size_t nruns;
	struct rep_store_drun {
		uint64_t off;	/* gran-aligned */
		size_t first, n; /* digests dg[first .. first + n) */
	} *runs;
	uint8_t *dg;	/* REP_DIGEST_LEN bytes a block */
};

/*
 * The digests of the newest point's allocated blocks of disk @disk from
 * @off (gran-aligned), at most @max_blocks of them, into @out (free it with
 * rep_store_digests_free). Blocks not listed read as zeros. No cycle may
 * be open. 0; -EBUSY, -EINVAL, -ERANGE, -EIO, -ENOMEM.
 */
int rep_store_digests(struct rep_store *s, unsigned disk, uint64_t off, uint32_t gran,
		      uint32_t max_blocks, struct rep_store_digests *out, char *err, size_t len);
void rep_store_digests_free(struct rep_store_digests *d);

/*
 * Write @len bytes of @buf at @off of disk @disk / make that range read as
 * zeros (write-zeroes, trimmed where possible). Thread-safe. 0; -ENOSPC
 * (the replica's storage is full), -ERANGE, -EPIPE (no cycle open), -EIO.
 */
int rep_store_write(struct rep_store *s, unsigned disk, uint64_t off, const void *buf,
		    size_t len);
int rep_store_zero(struct rep_store *s, unsigned disk, uint64_t off, uint64_t len);

/*
 * Make the open cycle point @point_id: flush, snapshot all disks in one
 * transaction, write the index; then prune the oldest points down to the
 * kept count (a prune failure is logged, retried at the next commit, and
 * does not fail the commit). On failure the cycle is still open: abort()
 * it. 0; -EPIPE (no cycle), -EIO, -ENOSPC.
 */
int rep_store_commit(struct rep_store *s, uint64_t point_id, uint64_t time_ms,
		     bool app_consistent, uint64_t bytes, char *err, size_t len);

/* Drop what the open cycle wrote (a fresh active overlay on the newest
 * point); no-op without one. 0 or -errno. */
int rep_store_abort(struct rep_store *s, char *err, size_t len);

/* Up to @max points into @out, oldest first; returns how many there are. */
unsigned rep_store_points(const struct rep_store *s, struct rep_store_point *out,
			  unsigned max);

/* Hold (@on) or release a point while it is copied out (a failover): a
 * held point is never pruned, and while any point is held nothing is (a
 * prune writes the base every chain reads). Written to the index. 0,
 * -ENOENT, -errno. */
int rep_store_hold(struct rep_store *s, uint64_t point_id, bool on);

/*
 * The top file of each disk for point @point_id into @paths (@max rows).
 * Returns the number of disks, or -ENOENT. The daemon holds the chain
 * open: a reader must open the file read-only and without locking
 * (`qemu-img convert -U`, `-o backing_fmt=qcow2` with `-U` in qemu-img
 * info, a read-only qcow2 overlay backed by it), and hold the point
 * (rep_store_hold) for as long as it reads.
 */
int rep_store_point_files(const struct rep_store *s, uint64_t point_id, char paths[][PATH_MAX],
			  unsigned max);

/* The RBD pool the store is in, "" for one in files. */
const char *rep_store_pool(const struct rep_store *s);

/* The daemon's pid (tests, status), -1 if unknown (or none: RBD). */
int rep_store_daemon_pid(const struct rep_store *s);

/* The disks of the store (as opened, or as its index names them). */
unsigned rep_store_disks(const struct rep_store *s, struct rep_disk *out, unsigned max);

/* Free @s; with @stop_daemon, quit the daemon (its files stay). NULL ok. */
void rep_store_close(struct rep_store *s, bool stop_daemon);

/*
 * Stop the daemon running in @dir, if any (quit over QMP, SIGKILL after a
 * timeout), and remove @dir with everything in it; for a store in an RBD
 * pool, its images first (the directory stays if they cannot be removed).
 * 0 (also if @dir does not exist) or -errno.
 */
int rep_store_destroy(const char *dir, char *err, size_t len);

/*
 * The points of the store in @dir, read from its index without the daemon
 * (status on the loop thread: the file is small). Up to @max into @out;
 * returns how many there are, 0 without an index, or -errno.
 */
int rep_store_read_points(const char *dir, struct rep_store_point *out, unsigned max);

#endif /* HCA_REP_STORE_H */
