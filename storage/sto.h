/*
 * storage: the volumes VMs boot from and the state store that says what
 * exists where.
 *
 * Both are opaque handles over a backend chosen at open: local files and a
 * directory of records for a standalone node, RBD images and RADOS objects
 * for a cluster. Callers see the same contract either way, and one
 * contract test runs against every backend.
 *
 * Every call that touches storage blocks; run it on a worker thread. All
 * calls are thread-safe on one handle.
 *
 * Errors: functions return 0 or a negative errno. On failure the cause is
 * logged once (libqb, where it was found) and written to @err (@errlen
 * bytes, may be NULL/0) as one line naming the volume or key, for people.
 *
 * Strings and buffers passed in are only read during the call; nothing keeps
 * a pointer to them.
 */
#ifndef HCA_STO_H
#define HCA_STO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- volumes ---- */

#define STO_VOL_NAME_MAX 95u
#define STO_VOL_SIZE_MIN (1ull << 20)  /* 1 MiB */
#define STO_VOL_SIZE_MAX (64ull << 40) /* 64 TiB */
#define STO_VOL_SIZE_ALIGN 512u

enum sto_fmt { STO_FMT_QCOW2, STO_FMT_RAW };

/* "qcow2" / "raw", the names QEMU's block drivers use; "unknown" otherwise. */
const char *sto_fmt_name(enum sto_fmt fmt);

struct sto_vols;

struct sto_vol_info {
	bool exists;
	uint64_t size; /* virtual size in bytes, as the guest sees it */
	enum sto_fmt fmt;
	uint64_t allocated; /* bytes it takes on its storage; 0: unknown */
};

/*
 * Open the local-file volume backend: volume NAME lives at DIR/NAME.qcow2 or
 * DIR/NAME.raw. @dir is created (0700, with missing parents) if absent.
 * @qemu_img is the qemu-img binary (NULL: "qemu-img" from PATH); the strings
 * are copied. Stale temp files of a crashed create are removed.
 * Returns the handle (free with sto_vols_close) or NULL, with @err set.
 */
struct sto_vols *sto_vols_open_file(const char *dir, const char *qemu_img,
				    char *err, size_t errlen);

/*
 * The longest one Ceph call may wait for the monitors or an OSD, in seconds.
 * librados waits for ever by default; both Ceph backends set this as
 * rados_osd_op_timeout, rados_mon_op_timeout and client_mount_timeout
 * (overriding the conf file), so a hung cluster fails a call with
 * -ETIMEDOUT and "Ceph did not answer within N s (op timeout)" in @err.
 * A call that takes several round trips (most librbd calls) fails at the
 * first one that times out, and what it changed may or may not have taken
 * effect: a volume create that timed out can leave an image behind, which
 * sto_vol_remove() cleans up. Keep the timeout above the time Ceph needs
 * to notice a dead OSD (osd_heartbeat_grace + osd_heartbeat_interval) if
 * calls should ride out a failover rather than fail.
 */
#define STO_CEPH_TIMEOUT_MIN 1u
#define STO_CEPH_TIMEOUT_MAX 120u

/*
 * Open the RBD volume backend: volume NAME is the RBD image NAME in @pool
 * (the pool's default namespace), always raw, created with the layering
 * feature only so both QEMU's rbd driver and the kernel client open it.
 * @ceph_conf: the ceph.conf to read (NULL: Ceph's default search), which
 * names the monitors and the keyring; @client_id: the cephx user without
 * "client." ("admin"). The strings are copied. @op_timeout_s
 * (STO_CEPH_TIMEOUT_MIN..MAX): the op timeout above; connecting waits as
 * long for a monitor. Connects before returning.
 * Returns the handle (free with sto_vols_close) or NULL, with @err set
 * (-EINVAL for a bad pool name or timeout).
 */
struct sto_vols *sto_vols_open_rbd(const char *ceph_conf,
				   const char *client_id, const char *pool,
				   unsigned op_timeout_s, char *err,
				   size_t errlen);

/* Release @s. NULL is a no-op. Volumes are left as they are. */
void sto_vols_close(struct sto_vols *s);

/* Backend name: "file" or "rbd". Owned by the backend, static. */
const char *sto_vols_backend(const struct sto_vols *s);

/* [a-z0-9][a-z0-9._-]{0,94}, without "..". */
bool sto_vol_name_valid(const char *vol);

/*
 * Create volume @vol of @size bytes, never overwriting anything.
 * @size: STO_VOL_SIZE_MIN..STO_VOL_SIZE_MAX, a multiple of 512.
 * Returns 0; -EINVAL for a bad name or size, or a format the backend cannot
 * store ("rbd" volumes are raw only); -EEXIST if @vol exists in any
 * format (it is left untouched); -EIO if the backend tool failed (its first
 * stderr line in @err); other -errno from the system. On failure nothing of
 * the new volume is left behind.
 */
int sto_vol_create(struct sto_vols *s, const char *vol, uint64_t size,
		   enum sto_fmt fmt, char *err, size_t errlen);

/*
 * Delete @vol and its data. A volume that does not exist is not an error
 * (returns 0), so an interrupted undefine can simply be retried.
 * The caller makes sure no VM has it open.
 */
int sto_vol_remove(struct sto_vols *s, const char *vol, char *err,
		   size_t errlen);

/*
 * Grow @vol to @size bytes (same limits as create). The same size is a no-op.
 * Returns 0; -ENOENT; -EINVAL for a smaller size (shrinking would cut off
 * guest data) or a bad size; -EIO if the backend tool failed. Offline only: a
 * running VM's disk is grown through QMP block_resize instead.
 */
int sto_vol_resize(struct sto_vols *s, const char *vol, uint64_t size,
		   char *err, size_t errlen);

/*
 * Fill @out (caller-owned). A missing volume is an answer, not an error:
 * returns 0 with out->exists false. -EBADMSG if the stored image is not what
 * its name says (e.g. a .qcow2 without the qcow2 magic); -EUCLEAN if @vol
 * exists in two formats at once (someone made one by hand).
 */
int sto_vol_info(struct sto_vols *s, const char *vol, struct sto_vol_info *out,
		 char *err, size_t errlen);

/*
 * Bytes of room left for volumes in @s (the "file" backend: free space of
 * its directory's file system, as an unprivileged writer sees it).
 * Returns 0; -EOPNOTSUPP where the backend cannot say ("rbd": Ceph
 * decides), or -errno with @err.
 */
int sto_vols_room(struct sto_vols *s, uint64_t *avail, char *err, size_t errlen);

/*
 * What QEMU opens for @vol, written to @buf (@len bytes, caller-owned,
 * NUL-terminated): a file path for "file"; "rbd:POOL/IMAGE" for "rbd", from
 * which hv builds QEMU's rbd blockdev ({"driver": "rbd", "pool": POOL,
 * "image": IMAGE, "conf": the ceph conf, "user": the client id}, the same
 * two the backend was opened with). The format for the block driver comes
 * from sto_vol_info().
 * Returns 0; -ENOENT if @vol does not exist; -ERANGE if @len is too small.
 */
int sto_vol_path(struct sto_vols *s, const char *vol, char *buf, size_t len,
		 char *err, size_t errlen);

/*
 * Make @vol, in format @fmt, a copy of the disk image at @src (any format
 * qemu-img reads, a backing chain included; opened with -U, since the
 * process that wrote it may still hold it), replacing what @vol held: a
 * failover brings a replica's point over a stale copy. Sparse: only what
 * @src holds is written. The new image is complete and synced before it
 * replaces the old one, so a failure leaves @vol as it was.
 * Returns 0; -EINVAL (bad name or format); -EIO (qemu-img failed, its first
 * line in @err); -EOPNOTSUPP (a backend without it: rbd); other -errno.
 */
int sto_vol_import(struct sto_vols *s, const char *vol, const char *src, enum sto_fmt fmt,
		   char *err, size_t errlen);

/*
 * Take a point-in-time snapshot @snap (same naming rule as volumes) of @vol.
 * Crash-consistent only: the caller quiesces or pauses a running guest.
 * Returns 0; -ENOENT if @vol does not exist; -EEXIST if @snap does;
 * -EOPNOTSUPP for the "file" backend, which has no snapshots. A volume with
 * snapshots is still removed whole by sto_vol_remove().
 */
int sto_vol_snapshot(struct sto_vols *s, const char *vol, const char *snap,
		     char *err, size_t errlen);

/* ---- the state store: small records with compare-and-swap ---- */

#define STO_KEY_MAX 200u
#define STO_REC_MAX (4u << 20) /* largest payload, 4 MiB */

struct sto_store;

/*
 * Open the directory backend, the embedded store of a standalone node: key
 * "vm/web1" is the file DIR/vm/web1.rec. @dir is created (0700) if absent and
 * temp files left by a crash are removed. Several processes may open the
 * same @dir; compare-and-swap holds across all of them.
 * Returns the handle (free with sto_store_close) or NULL, with @err set.
 */
struct sto_store *sto_store_open_dir(const char *dir, char *err,
				     size_t errlen);

/*
 * Open the RADOS backend, the store a cluster shares: key "vm/web1" is the
 * object "web1" in RADOS namespace "vm" of @pool. @ceph_conf, @client_id
 * and @op_timeout_s as for sto_vols_open_rbd(); the strings are copied.
 * Connects before returning. Objects whose names start with '.' are the
 * store's own helpers (watch, lease and probe objects), never keys.
 * Every call below on this store may fail with -ETIMEDOUT (see
 * STO_CEPH_TIMEOUT_MIN); a put or del that timed out may or may not have
 * taken effect.
 * Returns the handle (free with sto_store_close) or NULL, with @err set.
 */
struct sto_store *sto_store_open_rados(const char *ceph_conf,
				       const char *client_id, const char *pool,
				       unsigned op_timeout_s, char *err,
				       size_t errlen);

/* Release @st, after every sto_watch on it is freed. NULL is a no-op. */
void sto_store_close(struct sto_store *st);

/* Backend name: "dir" or "rados". Static. */
const char *sto_store_backend(const struct sto_store *st);

/*
 * Whether the store answers, cheaply enough to ask every few seconds: dir
 * stats its directory; rados asks a monitor ("mon stat") and then the OSD
 * of one small helper object (a stat: an absent object is an answer too),
 * each bounded by the op timeout, so it returns within twice that.
 * Returns 0 if the store answered; else -errno with why in @err
 * (-ETIMEDOUT: Ceph did not answer within the op timeout). Unlike every
 * other call a failure is logged at debug level only: the caller polls,
 * and reports when health changes.
 */
int sto_store_probe(struct sto_store *st, char *err, size_t errlen);

/*
 * "ns/name": exactly two parts, each starting with [a-z0-9] and made of
 * [a-z0-9._-], no "..", at most STO_KEY_MAX characters in all.
 */
bool sto_key_valid(const char *key);

/*
 * Read @key. On success *buf is a malloc'd copy of the payload (caller frees;
 * never NULL, even for an empty payload), *len its length and *version the
 * record's version (>= 1).
 * Returns 0; -EINVAL for a bad key; -ENOENT if absent; -EBADMSG if the stored
 * record is corrupt (@err names the key and what is wrong).
 */
int sto_get(struct sto_store *st, const char *key, uint8_t **buf, size_t *len,
	    uint64_t *version, char *err, size_t errlen);

/*
 * Write @key iff its current version is @expect (0: it must not exist).
 * @buf/@len: the payload, copied, at most STO_REC_MAX bytes.
 * On success *new_version (may be NULL) is @expect + 1: a record deleted and
 * created again starts over at 1, so a record that must never be mistaken
 * for an older self (the owner record) is updated, never deleted.
 * Returns 0; -ECANCELED if the version is not @expect (someone else changed
 * it: re-read and decide again); -EEXIST if @expect is 0 and @key exists;
 * -ENOENT if @expect > 0 and @key does not exist; -EMSGSIZE if @len is too
 * large; -EINVAL for a bad key; -EBADMSG (dir) if the stored record's header
 * is corrupt (a record whose payload alone is corrupt can still be replaced
 * by version; rados keeps the version beside the data, so there any corrupt
 * record can). Any other -errno (I/O, a Ceph timeout): the write may or may
 * not have taken effect; re-read before deciding.
 */
int sto_put(struct sto_store *st, const char *key, const void *buf, size_t len,
	    uint64_t expect, uint64_t *new_version, char *err, size_t errlen);

/*
 * Delete @key iff its version is @expect (>= 1).
 * Returns 0; -ENOENT if absent; -ECANCELED on a version mismatch; -EINVAL for
 * a bad key or @expect 0; -EBADMSG (dir) if the stored record is corrupt.
 */
int sto_del(struct sto_store *st, const char *key, uint64_t expect, char *err,
	    size_t errlen);

/*
 * The keys starting with @prefix ("" for all, "vm/" for one namespace, or any
 * leading part of a key), sorted by strcmp. *keys is a malloc'd array of *n
 * malloc'd strings (caller frees with sto_keys_free; NULL when *n is 0).
 * Returns 0; -EINVAL for a prefix no key could start with.
 */
int sto_list(struct sto_store *st, const char *prefix, char ***keys, size_t *n,
	     char *err, size_t errlen);

/* Free what sto_list returned. NULL is a no-op. */
void sto_keys_free(char **keys, size_t n);

/* ---- leases: exclusive locks that expire ---- */

#define STO_COOKIE_MAX 64u

/* 1-64 of [A-Za-z0-9._:@-]. */
bool sto_cookie_valid(const char *cookie);

/*
 * Take, or renew, the lease on @key as holder @cookie for @duration_s
 * seconds (>= 1) from now. The cookie names the holder (the node, say): the
 * same cookie from any handle, process or node is the same holder and
 * renews or releases the lease, so two holders must never share one. @key
 * need not hold a record; leases live beside records and do not change
 * them. Expiry is judged by the store's clock (CLOCK_REALTIME seconds for
 * dir, the OSD's for rados), so renew well before it and do not trust a
 * lease to the last second.
 * Returns 0; -EBUSY if another cookie holds an unexpired lease (@err names
 * it); -EINVAL for a bad key, cookie or duration.
 */
int sto_lock(struct sto_store *st, const char *key, const char *cookie,
	     unsigned duration_s, char *err, size_t errlen);

/*
 * Release @cookie's lease on @key.
 * Returns 0; -ENOENT if @cookie holds no unexpired lease on @key (it expired,
 * was never taken, or is someone else's, which is left alone).
 */
int sto_unlock(struct sto_store *st, const char *key, const char *cookie,
	       char *err, size_t errlen);

/*
 * Who holds the lease on @key: the holder's cookie is copied to @cookie_out
 * (@len bytes, caller-owned; STO_COOKIE_MAX + 1 always suffice).
 * Returns 0; -ENOENT if nobody holds an unexpired lease; -ERANGE if @len is
 * too small.
 */
int sto_lock_owner(struct sto_store *st, const char *key, char *cookie_out,
		   size_t len, char *err, size_t errlen);

/* ---- watches: learn that keys changed ---- */

struct sto_watch;

/*
 * Called after a put or del of a key in the watched namespace by any
 * handle, process or node (this one included), with that key (valid only
 * during the call). @key is NULL when changes may have been missed (the
 * watch was re-established, an event queue overflowed): re-read the whole
 * namespace. Changes in quick succession may be reported once or in any
 * order: the callback says "look again", the store says what is true.
 * It runs on a thread of the backend: do only thread-safe, non-blocking
 * work there (post to the loop), and never free the watch from inside it.
 */
typedef void (*sto_watch_fn)(const char *key, void *opaque);

/*
 * Watch namespace @ns (a valid key part, "vm") of @st: @fn(key, @opaque) as
 * above until sto_watch_free(). @opaque is the caller's, passed through.
 * Returns the watch or NULL, with @err set (-EINVAL for a bad @ns or @fn).
 */
struct sto_watch *sto_watch_new(struct sto_store *st, const char *ns,
				sto_watch_fn fn, void *opaque, char *err,
				size_t errlen);

/* Stop @w: when this returns, its callback is not running and never will
 * again. NULL is a no-op. Not from inside the callback. */
void sto_watch_free(struct sto_watch *w);

#endif
