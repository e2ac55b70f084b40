/*
 * storage internals: the backend ops tables and helpers shared by the
 * backends. Not for use outside storage/ except by its tests.
 *
 * A backend embeds struct sto_vols / struct sto_store as the first member
 * of its own handle and fills in an ops table. The front ends (sto_vol.c,
 * sto_store.c) check names, sizes and pointers once, so every backend gets
 * arguments that already satisfy the contract in sto.h.
 */
#ifndef HCA_STO_PRIV_H
#define HCA_STO_PRIV_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <qb/qblog.h>
#include <rados/librados.h>

#include "storage/sto.h"

/* Anything in a store or volume directory whose name contains this is a temp
 * file: neither keys nor volume names may contain it. */
#define STO_TMP_MARK '#'
/* Per-directory lock file; names starting with '.' are never keys/volumes. */
#define STO_LOCK_NAME ".lock"

struct sto_vol_ops {
	/* Backend name reported by sto_vols_backend(): "file", "rbd". */
	const char *name;
	/* Create @vol exclusively; -EEXIST if it exists in any format. On any
	 * failure nothing of the new volume remains. */
	int (*create)(struct sto_vols *s, const char *vol, uint64_t size,
		      enum sto_fmt fmt, char *err, size_t errlen);
	/* Delete @vol; a missing volume returns 0 (undefine may be retried). */
	int (*remove)(struct sto_vols *s, const char *vol, char *err,
		      size_t errlen);
	/* Grow @vol to @size; -EINVAL if @size is smaller than now, 0 if equal. */
	int (*resize)(struct sto_vols *s, const char *vol, uint64_t size,
		      char *err, size_t errlen);
	/* Whether @vol exists and, if so, its virtual size and format. */
	int (*info)(struct sto_vols *s, const char *vol,
		    struct sto_vol_info *out, char *err, size_t errlen);
	/* What QEMU opens: a file path, an rbd: spec. -ENOENT, -ERANGE. */
	int (*path)(struct sto_vols *s, const char *vol, char *buf, size_t len,
		    char *err, size_t errlen);
	/* Snapshot @vol as @snap (a valid name); -ENOENT, -EEXIST. NULL if
	 * the backend has none: the front end returns -EOPNOTSUPP. */
	int (*snapshot)(struct sto_vols *s, const char *vol, const char *snap,
			char *err, size_t errlen);
	/* Replace @vol by a copy of image @src. NULL: -EOPNOTSUPP. */
	int (*import)(struct sto_vols *s, const char *vol, const char *src, enum sto_fmt fmt,
		      char *err, size_t errlen);
	/* Bytes new volumes may still take (free space for an unprivileged
	 * writer). NULL if the backend cannot say: -EOPNOTSUPP. */
	int (*room)(struct sto_vols *s, uint64_t *avail, char *err, size_t errlen);
	/* Free the backend's handle; never called with NULL. */
	void (*close)(struct sto_vols *s);
};

struct sto_vols {
	const struct sto_vol_ops *ops;
};

struct sto_store_ops {
	/* Backend name reported by sto_store_backend(): "dir", "rados". */
	const char *name;
	/* Read a record: payload (malloc'd, never NULL), length, version >= 1.
	 * -ENOENT if absent, -EBADMSG if corrupt. */
	int (*get)(struct sto_store *st, const char *key, uint8_t **buf,
		   size_t *len, uint64_t *version, char *err, size_t errlen);
	/* Compare-and-swap write: store @buf as version @expect + 1 iff the
	 * current version is @expect (0 = absent), atomically with respect to
	 * every other writer of this store, in any process or node. Durable
	 * when it returns 0. -ECANCELED, -EEXIST, -ENOENT as in sto.h. */
	int (*put)(struct sto_store *st, const char *key, const void *buf,
		   size_t len, uint64_t expect, uint64_t *new_version,
		   char *err, size_t errlen);
	/* Compare-and-delete, @expect >= 1; same atomicity as put. */
	int (*del)(struct sto_store *st, const char *key, uint64_t expect,
		   char *err, size_t errlen);
	/* Keys starting with @prefix, in any order (the front end sorts), as a
	 * malloc'd array of malloc'd strings. */
	int (*list)(struct sto_store *st, const char *prefix, char ***keys,
		    size_t *n, char *err, size_t errlen);
	/* Take or renew @cookie's lease on @key for @duration_s >= 1 seconds,
	 * whether or not @key holds a record; -EBUSY if another cookie holds
	 * an unexpired one. Atomic across processes and nodes. */
	int (*lock)(struct sto_store *st, const char *key, const char *cookie,
		    unsigned duration_s, char *err, size_t errlen);
	/* Release @cookie's lease; -ENOENT if it holds none unexpired. */
	int (*unlock)(struct sto_store *st, const char *key, const char *cookie,
		      char *err, size_t errlen);
	/* The unexpired holder's cookie into @out (@len > STO_COOKIE_MAX);
	 * -ENOENT if none. */
	int (*lock_owner)(struct sto_store *st, const char *key, char *out,
			  size_t len, char *err, size_t errlen);
	/* Start watching namespace @ns (valid); the backend allocates the
	 * watch, embedding struct sto_watch first, and sets its st. */
	struct sto_watch *(*watch_new)(struct sto_store *st, const char *ns,
				       sto_watch_fn fn, void *opaque,
				       char *err, size_t errlen);
	/* Stop @w (no callback running or to come when it returns), free it. */
	void (*watch_free)(struct sto_watch *w);
	/* One cheap round trip to where the records live, bounded by the
	 * backend's timeouts; a failure is logged at debug level only. */
	int (*probe)(struct sto_store *st, char *err, size_t errlen);
	/* Free the backend's handle; never called with NULL. */
	void (*close)(struct sto_store *st);
};

struct sto_store {
	const struct sto_store_ops *ops;
};

struct sto_watch {
	struct sto_store *st; /* whose ops free it; outlives the watch */
};

/*
 * The record format both store backends keep, so a corrupt record is
 * -EBADMSG everywhere:
 *
 *   0 magic "HCAR" | 4 format u16 | 6 header length u16 | 8 version u64 |
 *   16 payload length u32 | 20 payload crc32c | 24 reserved | 28 header crc32c
 *   32 payload
 *
 * Integers are big-endian. The header has its own CRC so a flipped bit in
 * the version is caught like one in the payload.
 */
#define STO_REC_HDR_LEN 32u

struct sto_rec_hdr {
	uint64_t version;
	uint32_t len;
	uint32_t crc;
};

/* Fill @h (STO_REC_HDR_LEN bytes) for @len bytes of @buf at @version. */
void sto_rec_hdr_encode(uint8_t *h, uint64_t version, const void *buf,
			uint32_t len);

/* Check and decode a header: 0, or -EBADMSG with what is wrong in @why. */
int sto_rec_hdr_decode(const uint8_t *h, struct sto_rec_hdr *out, char *why,
		       size_t whylen);

/* Check a whole record of @n bytes at @rec (header, length, payload CRC):
 * 0 with the header in @out and the payload at rec + STO_REC_HDR_LEN, or
 * -EBADMSG with what is wrong in @why. */
int sto_rec_check(const uint8_t *rec, size_t n, struct sto_rec_hdr *out,
		  char *why, size_t whylen);

/* ---- Ceph, shared by the rados store and the rbd volumes ---- */

/*
 * A line for people for a librados/librbd result that means the same to
 * every Ceph backend (access, blocklisting, timeouts, a full pool), else
 * the errno's text. Backends answer their own cases first. -ETIMEDOUT is
 * "Ceph did not answer within @op_timeout_s s (op timeout)", formatted
 * into @buf (@len bytes, the caller's); the other texts are static.
 */
const char *sto_ceph_reason(int rc, unsigned op_timeout_s, char *buf,
			    size_t len);

/*
 * Connect to the cluster of @ceph_conf (NULL: Ceph's default search) as
 * cephx user @client_id and find @pool, with every Ceph wait bounded by
 * @op_timeout_s (see STO_CEPH_TIMEOUT_MIN; -EINVAL out of range). On success
 * *cluster is connected (rados_shutdown it) and *pool_id names the pool.
 * -ENOENT if the pool does not exist. @what names the caller's object for
 * @err ("store", "volumes").
 */
int sto_rados_connect(const char *ceph_conf, const char *client_id,
		      const char *pool, unsigned op_timeout_s,
		      const char *what, rados_t *cluster, int64_t *pool_id,
		      char *err, size_t errlen);

/*
 * The rados store with every namespace it uses prefixed by @ns_prefix
 * (NULL or "": none), so several stores (one per test) share one pool
 * without seeing each other. sto_store_open_rados() is this with no prefix.
 */
struct sto_store *sto_store_open_rados_prefixed(const char *ceph_conf,
						const char *client_id,
						const char *pool,
						const char *ns_prefix,
						unsigned op_timeout_s,
						char *err, size_t errlen);

/*
 * Format a message, log it at @prio from the caller's file and line, copy it
 * to @err and return @rc: the one way storage reports a failure.
 */
#define STO_FAIL(prio, err, errlen, rc, ...)                                 \
	sto_fail_at(__func__, __FILE__, __LINE__, (prio), (err), (errlen),   \
		    (rc), __VA_ARGS__)
int sto_fail_at(const char *func, const char *file, uint32_t line,
		uint8_t prio, char *err, size_t errlen, int rc,
		const char *fmt, ...) __attribute__((format(printf, 8, 9)));

/* A volume name or one part of a key: [a-z0-9][a-z0-9._-]*, no "..", @n
 * bytes of @s (not NUL-terminated). Length limits are the caller's. */
bool sto_part_valid(const char *s, size_t n);

/* strerror() without its static buffer, so worker threads may share it. */
const char *sto_errstr(int errnum);

/* mkdir -p with mode 0700 for what is created. 0 or -errno. */
int sto_mkdir_p(const char *dir);

/* Open @dir (O_DIRECTORY), creating it first if needed. fd or -errno. */
int sto_dir_open(const char *dir);

/* fsync a directory so a rename or unlink in it survives a crash. */
int sto_fsync_dir(int dirfd);

/*
 * Take the exclusive lock of the directory @dirfd (the STO_LOCK_NAME file),
 * waiting for it. Each call opens its own file description, so the lock
 * excludes other threads of this process as well as other processes, and a
 * fork() does not share it. Returns the fd to close to release, or -errno.
 */
int sto_lock_dir(int dirfd);

/* pthread_create with every signal blocked in the new thread, so signals
 * stay with the loop that handles them. 0 or -errno. */
int sto_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);

/* Remove the temp files (names containing STO_TMP_MARK) in @dirfd; the caller
 * holds the directory lock. Returns how many were removed, or -errno. */
int sto_remove_tmp(int dirfd, const char *where);

#endif
