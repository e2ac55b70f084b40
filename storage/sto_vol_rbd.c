/*
 * sto_vol_rbd: volumes as RBD images in one Ceph pool (its default
 * namespace), disks every node can open, which live migration needs.
 *
 * Images are raw by nature (a qcow2 request is refused) and are created
 * with the layering feature only, which QEMU's rbd driver (librbd) and the
 * kernel client both support. librbd makes each step atomic enough for the
 * contract: create claims the name exclusively (-EEXIST) and undoes itself
 * on failure; resize is told never to shrink; remove first purges the
 * image's snapshots, so a volume goes whole. What QEMU opens is
 * "rbd:POOL/IMAGE". The io context never changes namespace, so all threads
 * share it. Every librbd and librados result becomes a volume error in
 * rbd_fail(). librbd's round trips go through the cluster handle's
 * Objecter, so the op timeouts set at connect (sto.h) bound each of them.
 */
#include "storage/sto_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rbd/features.h>
#include <rbd/librbd.h>

struct vols_rbd {
	struct sto_vols base; /* first: the front end's handle */
	rados_t cluster;
	rados_ioctx_t io;
	char *pool;
	unsigned op_timeout_s;
};

static struct vols_rbd *to_rbd(struct sto_vols *s)
{
	return (struct vols_rbd *)s;
}

/* ---- the one translation of librbd results ---- */

static const char *reason(int rc, unsigned op_timeout_s, char *buf,
			  size_t len)
{
	switch (rc) {
	case -ENOENT:
		return "it does not exist";
	case -EEXIST:
		return "it already exists";
	case -EBUSY:
		return "it is in use (open by a client such as a running VM, or a snapshot has clones)";
	case -ENOTEMPTY:
		return "it still has snapshots or clones";
	default:
		return sto_ceph_reason(rc, op_timeout_s, buf, len);
	}
}

/*
 * The one place a librbd (or librados) result becomes a volume error: the
 * errno is the contract's already (both speak -errno), the line for people
 * names the volume (NULL: the pool), its image and what was being done
 * (a timeout: after how long); logged once.
 */
static int rbd_fail(const struct vols_rbd *v, const char *vol,
		    const char *what, int rc, char *err, size_t errlen)
{
	char buf[64];
	const char *why = reason(rc, v->op_timeout_s, buf, sizeof(buf));

	if (!vol) /* the pool itself */
		return STO_FAIL(LOG_ERR, err, errlen, rc,
				"rbd volumes in pool %s: cannot %s: %s", v->pool,
				what, why);
	return STO_FAIL(LOG_ERR, err, errlen, rc,
			"volume %s: cannot %s (rbd image %s/%s): %s", vol, what,
			v->pool, vol, why);
}

/* librbd calls progress callbacks unconditionally: it must not be NULL. */
static int no_progress(uint64_t done, uint64_t total, void *arg)
{
	return 0;
}

/* ---- the ops ---- */

static int rbd_vol_create(struct sto_vols *s, const char *vol, uint64_t size,
			  enum sto_fmt fmt, char *err, size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	int order = 0; /* librbd's default object size */
	int rc;

	if (fmt != STO_FMT_RAW)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"volume %s: rbd volumes are raw, not %s", vol,
				sto_fmt_name(fmt));
	rc = rbd_create2(v->io, vol, size, RBD_FEATURE_LAYERING, &order);
	return rc < 0 ? rbd_fail(v, vol, "create it", rc, err, errlen) : 0;
}

/* Remove every snapshot of the open @img, unprotecting as needed. */
static int purge_snaps(rbd_image_t img)
{
	rbd_snap_info_t *snaps = NULL;
	int max = 16, n, rc = 0;

	for (;;) {
		snaps = calloc((size_t)max, sizeof(*snaps));
		if (!snaps)
			return -ENOMEM;
		n = rbd_snap_list(img, snaps, &max);
		if (n != -ERANGE)
			break;
		free(snaps); /* @max now says how many there are */
	}
	rc = n < 0 ? n : 0;
	for (int i = 0; i < n && rc == 0; i++)
		rc = rbd_snap_remove2(img, snaps[i].name,
				      RBD_SNAP_REMOVE_UNPROTECT, no_progress,
				      NULL);
	if (n >= 0)
		rbd_snap_list_end(snaps);
	free(snaps);
	return rc;
}

static int rbd_vol_remove(struct sto_vols *s, const char *vol, char *err,
			  size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	const char *what = "open it to remove its snapshots";
	rbd_image_t img = NULL;
	int rc = rbd_open(v->io, vol, &img, NULL);

	if (rc == 0) {
		what = "remove its snapshots";
		rc = purge_snaps(img);
		rbd_close(img);
	}
	if (rc == 0 || rc == -ENOENT) {
		what = "remove it";
		rc = rbd_remove(v->io, vol);
	}
	if (rc == -ENOENT) /* never existed, or an earlier remove finished */
		return 0;
	return rc < 0 ? rbd_fail(v, vol, what, rc, err, errlen) : 0;
}

static int rbd_vol_resize(struct sto_vols *s, const char *vol, uint64_t size,
			  char *err, size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	const char *what = "open it";
	rbd_image_t img = NULL;
	uint64_t cur = 0;
	int rc = rbd_open(v->io, vol, &img, NULL);

	if (rc == 0) {
		what = "read its size";
		rc = rbd_get_size(img, &cur);
	}
	if (rc == 0 && size < cur) {
		rc = STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			      "volume %s: shrinking from %" PRIu64 " to %" PRIu64 " bytes is refused (it would cut off guest data)",
			      vol, cur, size);
		goto out;
	}
	if (rc == 0 && size > cur) {
		/* allow_shrink false: librbd itself refuses a shrink, even if
		 * the image grew since we read its size. */
		what = "grow it";
		rc = rbd_resize2(img, size, false, no_progress, NULL);
	}
	if (rc < 0)
		rbd_fail(v, vol, what, rc, err, errlen);
out:
	if (img)
		rbd_close(img);
	return rc;
}

/* Whether @vol exists and its size: 0 (also when absent) or -errno. */
static int rbd_vol_info(struct sto_vols *s, const char *vol,
			struct sto_vol_info *out, char *err, size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	const char *what = "open it";
	rbd_image_t img = NULL;
	int rc = rbd_open_read_only(v->io, vol, &img, NULL);

	if (rc == -ENOENT)
		return 0;
	if (rc == 0) {
		what = "read its size";
		rc = rbd_get_size(img, &out->size);
		rbd_close(img);
	}
	if (rc < 0)
		return rbd_fail(v, vol, what, rc, err, errlen);
	out->exists = true;
	out->fmt = STO_FMT_RAW;
	return 0;
}

static int rbd_vol_path(struct sto_vols *s, const char *vol, char *buf,
			size_t len, char *err, size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	struct sto_vol_info info = { 0 };
	int rc = rbd_vol_info(s, vol, &info, err, errlen);
	int n;

	if (rc < 0)
		return rc;
	if (!info.exists)
		return rbd_fail(v, vol, "name it for QEMU", -ENOENT, err, errlen);
	n = snprintf(buf, len, "rbd:%s/%s", v->pool, vol);
	if (n < 0 || (size_t)n >= len) {
		if (len)
			buf[0] = '\0';
		return STO_FAIL(LOG_ERR, err, errlen, -ERANGE,
				"volume %s: path buffer of %zu bytes is too small",
				vol, len);
	}
	return 0;
}

static int rbd_vol_snapshot(struct sto_vols *s, const char *vol,
			    const char *snap, char *err, size_t errlen)
{
	struct vols_rbd *v = to_rbd(s);
	char what[160];
	rbd_image_t img = NULL;
	int rc = rbd_open(v->io, vol, &img, NULL);

	snprintf(what, sizeof(what), "open it to snapshot it as %s", snap);
	if (rc == 0) {
		snprintf(what, sizeof(what), "create snapshot %s", snap);
		rc = rbd_snap_create(img, snap);
		rbd_close(img);
	}
	return rc < 0 ? rbd_fail(v, vol, what, rc, err, errlen) : 0;
}

static void rbd_vols_close(struct sto_vols *s)
{
	struct vols_rbd *v = to_rbd(s);

	if (v->io)
		rados_ioctx_destroy(v->io);
	if (v->cluster)
		rados_shutdown(v->cluster);
	free(v->pool);
	free(v);
}

static const struct sto_vol_ops rbd_ops = {
	.name = "rbd",
	.create = rbd_vol_create,
	.remove = rbd_vol_remove,
	.resize = rbd_vol_resize,
	.info = rbd_vol_info,
	.path = rbd_vol_path,
	.snapshot = rbd_vol_snapshot,
	.close = rbd_vols_close,
};

/* QEMU splits "rbd:POOL/IMAGE" at '/', '@' and ':', so the pool name must
 * hold none of them. */
static bool pool_name_ok(const char *pool)
{
	size_t n = pool ? strlen(pool) : 0;

	return n > 0 && n <= 100 &&
	       strspn(pool, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

struct sto_vols *sto_vols_open_rbd(const char *ceph_conf,
				   const char *client_id, const char *pool,
				   unsigned op_timeout_s, char *err,
				   size_t errlen)
{
	struct vols_rbd *v = NULL;
	int64_t pool_id = -1;
	int rc = 0;

	if (!pool_name_ok(pool)) {
		STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
			 "rbd volumes: pool name '%.100s' is invalid: want 1-100 of [A-Za-z0-9._-]",
			 pool ? pool : "(null)");
		return NULL;
	}
	v = calloc(1, sizeof(*v));
	if (!v || !(v->pool = strdup(pool))) {
		STO_FAIL(LOG_ERR, err, errlen, -ENOMEM,
			 "rbd volumes in pool %s: out of memory", pool);
		goto out;
	}
	v->base.ops = &rbd_ops;
	v->op_timeout_s = op_timeout_s;
	rc = sto_rados_connect(ceph_conf, client_id ? client_id : "admin", pool,
			       op_timeout_s, "rbd volumes", &v->cluster,
			       &pool_id, err, errlen);
	if (rc == 0 && (rc = rados_ioctx_create2(v->cluster, pool_id, &v->io)) < 0)
		rbd_fail(v, NULL, "open the pool", rc, err, errlen);
	if (rc == 0)
		return &v->base;
out:
	if (v)
		rbd_vols_close(&v->base);
	return NULL;
}
