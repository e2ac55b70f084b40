/*
 * rep_store_rbd.c: a replica store's disks as RBD images (rep_store_rbd.h).
 *
 * One cluster handle and io context per open store; one image handle per
 * disk, which librbd lets several threads write at once. Images are made
 * with the layering feature only, like the volumes of sto_vol_rbd, so the
 * kernel client and QEMU's rbd driver both open them. Every librados and
 * librbd round trip is bounded by the op timeouts set at connect.
 */
#include "replica/rep_store_rbd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qb/qblog.h>
#include <rados/librados.h>
#include <rbd/features.h>
#include <rbd/librbd.h>

#define OP_TIMEOUT_S "30"	/* a Ceph round trip, and connecting */
#define IMG_PREFIX "hca-replica."
#define IO_CHUNK (32u << 20)
#define ZERO_CHUNK (1u << 30)
#define COPY_BUF (4u << 20)
#define MSG_MAX 256u

struct rsr {
	rados_t cl;
	rados_ioctx_t io;
	char pool[RSR_POOL_MAX + 1];
	char vm[REP_NAME_MAX + 1];
	char node[RSR_NODE_MAX + 1];
	unsigned ndisks;
	struct rep_disk disks[REP_DISKS_MAX];
	rbd_image_t img[REP_DISKS_MAX];
};

static int fail(const char *vm, char *err, size_t len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int fail(const char *vm, char *err, size_t len, int rc, const char *fmt, ...)
{
	char msg[MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log(LOG_ERR, "replica store of %s: %s", vm, msg);
	if (err && len)
		snprintf(err, len, "%s", msg);
	return rc;
}

static const char *why(int rc)
{
	switch (rc) {
	case -ETIMEDOUT:
		return "Ceph did not answer within " OP_TIMEOUT_S " s";
	case -ENOSPC:
	case -EDQUOT:
		return "the pool is full";
	case -EBUSY:
		return "the image is open elsewhere";
	default:
		return strerror(-rc);
	}
}

static bool name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	return n && n <= max &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

bool rsr_pool_valid(const char *pool)
{
	return pool && name_ok(pool, RSR_POOL_MAX) && pool[0] != '.';
}

static void img_name(const char *node, const char *vm, const struct rep_disk *d, char *out,
		     size_t len)
{
	snprintf(out, len, IMG_PREFIX "%s.%s.%s", node, vm, d->name);
}

static void snap_name(uint64_t id, char out[32])
{
	snprintf(out, 32, "p%" PRIu64, id);
}

static int no_progress(uint64_t done, uint64_t total, void *arg)
{
	(void)done, (void)total, (void)arg;
	return 0;
}

static int ceph_connect(const struct rsr_cfg *c, rados_t *cl, rados_ioctx_t *io, char *err,
		   size_t len)
{
	static const char *const opts[] = { "rados_osd_op_timeout", "rados_mon_op_timeout",
					    "client_mount_timeout" };
	int rc;

	*cl = NULL;
	*io = NULL;
	if (!rsr_pool_valid(c->pool) || !c->node || !name_ok(c->node, RSR_NODE_MAX))
		return fail(c->vm, err, len, -EINVAL, "bad pool or node name");
	/* -ENOENT only ever means the pool (rsr_destroy() counts on it) */
	if ((rc = rados_create(cl, c->client ? c->client : "admin")) < 0) {
		*cl = NULL;
		return fail(c->vm, err, len, rc == -ENOENT ? -EIO : rc,
			    "cannot make a Ceph client: %s", why(rc));
	}
	if ((rc = rados_conf_read_file(*cl, c->conf)) < 0) {
		rc = rc == -ENOENT ? -EIO : rc;
		fail(c->vm, err, len, rc, "cannot read %s: %s", c->conf ? c->conf : "ceph.conf",
		     why(rc));
		goto out;
	}
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		rados_conf_set(*cl, opts[i], OP_TIMEOUT_S);
	if ((rc = rados_connect(*cl)) < 0) {
		rc = rc == -ENOENT ? -EIO : rc;
		fail(c->vm, err, len, rc, "cannot reach Ceph: %s", why(rc));
		goto out;
	}
	if ((rc = rados_ioctx_create(*cl, c->pool, io)) < 0) {
		*io = NULL;
		fail(c->vm, err, len, rc, "pool %s: %s", c->pool,
		     rc == -ENOENT ? "no such pool (create it, or name another with "
				     "--target-pool)" : why(rc));
	}
out:
	if (rc < 0) {
		rados_shutdown(*cl);
		*cl = NULL;
	}
	return rc;
}

/*
 * Remove the snapshots of @img: every one with @all, else those of ours
 * ("pID") whose id is not in @keep[0..@nkeep), logged for @vm's disk @disk.
 */
static int snaps_remove(rbd_image_t img, bool all, const uint64_t *keep, unsigned nkeep,
			const char *vm, unsigned disk)
{
	rbd_snap_info_t *snaps = NULL;
	int max = 16, n, rc;

	for (;;) {
		if (!(snaps = calloc((size_t)max, sizeof(*snaps))))
			return -ENOMEM;
		if ((n = rbd_snap_list(img, snaps, &max)) != -ERANGE)
			break;
		free(snaps); /* @max now says how many there are */
	}
	rc = n < 0 ? n : 0;
	for (int i = 0; i < n && !rc; i++) {
		uint64_t id;
		char end;
		bool kept = false;

		if (!all) {
			if (sscanf(snaps[i].name, "p%" SCNu64 "%c", &id, &end) != 1)
				continue; /* not one of ours: left alone */
			for (unsigned k = 0; k < nkeep; k++)
				kept |= keep[k] == id;
			if (kept)
				continue;
			qb_log(LOG_NOTICE, "replica store of %s: disk %u: snapshot %s is no point "
			       "of the index: removed", vm, disk, snaps[i].name);
		}
		rc = rbd_snap_remove2(img, snaps[i].name, RBD_SNAP_REMOVE_UNPROTECT, no_progress,
				      NULL);
	}
	if (n >= 0)
		rbd_snap_list_end(snaps);
	free(snaps);
	return rc;
}

/* Remove image @name with its snapshots; 0 if there is none. */
static int img_remove(rados_ioctx_t io, const char *name)
{
	rbd_image_t img;
	int rc = rbd_open(io, name, &img, NULL);

	if (rc == -ENOENT)
		return 0;
	if (rc < 0)
		return rc;
	rc = snaps_remove(img, true, NULL, 0, NULL, 0);
	rbd_close(img);
	if (!rc)
		rc = rbd_remove_with_progress(io, name, no_progress, NULL);
	return rc == -ENOENT ? 0 : rc;
}

int rsr_open(const struct rsr_cfg *c, bool create, struct rsr **out, char *err, size_t len)
{
	struct rsr *r = calloc(1, sizeof(*r));
	char name[RSR_NODE_MAX + REP_NAME_MAX * 2 + 32];
	int rc;

	*out = NULL;
	if (!r)
		return fail(c->vm, err, len, -ENOMEM, "out of memory");
	snprintf(r->pool, sizeof(r->pool), "%s", c->pool);
	snprintf(r->vm, sizeof(r->vm), "%s", c->vm);
	snprintf(r->node, sizeof(r->node), "%s", c->node);
	r->ndisks = c->ndisks;
	memcpy(r->disks, c->disks, sizeof(r->disks[0]) * c->ndisks);
	if ((rc = ceph_connect(c, &r->cl, &r->io, err, len)) < 0)
		goto out;
	for (unsigned i = 0; i < r->ndisks && !rc; i++) {
		int order = 0;
		uint64_t size = 0;

		img_name(r->node, r->vm, &r->disks[i], name, sizeof(name));
		if (create) {
			if ((rc = img_remove(r->io, name)) < 0) {
				fail(r->vm, err, len, rc, "cannot remove the stale image %s/%s: %s",
				     r->pool, name, why(rc));
				break;
			}
			if ((rc = rbd_create2(r->io, name, r->disks[i].size, RBD_FEATURE_LAYERING,
					      &order)) < 0) {
				fail(r->vm, err, len, rc, "cannot create the image %s/%s: %s",
				     r->pool, name, why(rc));
				break;
			}
		}
		if ((rc = rbd_open(r->io, name, &r->img[i], NULL)) < 0) {
			r->img[i] = NULL;
			fail(r->vm, err, len, rc, "cannot open the image %s/%s: %s", r->pool,
			     name, rc == -ENOENT ? "it is gone (the replica must be made again: "
						   "disable and enable replication)" : why(rc));
			break;
		}
		if ((rc = rbd_get_size(r->img[i], &size)) < 0 || size != r->disks[i].size)
			rc = fail(r->vm, err, len, rc < 0 ? rc : -EINVAL,
				  "the image %s/%s holds %" PRIu64 " bytes, the disk %" PRIu64,
				  r->pool, name, size, r->disks[i].size);
	}
out:
	if (rc < 0)
		rsr_close(r);
	else
		*out = r;
	return rc;
}

void rsr_close(struct rsr *r)
{
	if (!r)
		return;
	for (unsigned i = 0; i < r->ndisks; i++)
		if (r->img[i])
			rbd_close(r->img[i]);
	if (r->io)
		rados_ioctx_destroy(r->io);
	if (r->cl)
		rados_shutdown(r->cl);
	free(r);
}

static int range_ok(const struct rsr *r, unsigned disk, uint64_t off, uint64_t len)
{
	if (disk >= r->ndisks || off > r->disks[disk].size || len > r->disks[disk].size - off)
		return -ERANGE;
	return 0;
}

int rsr_write(struct rsr *r, unsigned disk, uint64_t off, const void *buf, size_t len)
{
	int rc = range_ok(r, disk, off, len);

	while (!rc && len) {
		size_t n = len < IO_CHUNK ? len : IO_CHUNK;
		ssize_t w = rbd_write(r->img[disk], off, n, buf);
		if (w < 0)
			rc = (int)w;
		else if ((size_t)w != n)
			rc = -EIO;
		buf = (const char *)buf + n;
		off += n;
		len -= n;
	}
	if (rc < 0 && rc != -ERANGE)
		qb_log(LOG_ERR, "replica store of %s: write to disk %u: %s", r->vm, disk, why(rc));
	return rc == -EDQUOT ? -ENOSPC : rc;
}

int rsr_zero(struct rsr *r, unsigned disk, uint64_t off, uint64_t len)
{
	int rc = range_ok(r, disk, off, len);

	while (!rc && len) {
		uint64_t n = len < ZERO_CHUNK ? len : ZERO_CHUNK;
		/* whole objects are deallocated, partial ones zeroed: sparse */
		ssize_t w = rbd_write_zeroes(r->img[disk], off, (size_t)n, 0, 0);
		if (w < 0)
			rc = (int)w;
		off += n;
		len -= n;
	}
	if (rc < 0 && rc != -ERANGE)
		qb_log(LOG_ERR, "replica store of %s: zero on disk %u: %s", r->vm, disk, why(rc));
	return rc == -EDQUOT ? -ENOSPC : rc;
}

int rsr_read(struct rsr *r, unsigned disk, uint64_t off, void *buf, size_t len)
{
	int rc = range_ok(r, disk, off, len);

	while (!rc && len) {
		size_t n = len < IO_CHUNK ? len : IO_CHUNK;
		ssize_t got = rbd_read(r->img[disk], off, n, buf);
		if (got < 0)
			rc = (int)got;
		else if ((size_t)got != n)
			rc = -EIO;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
	return rc;
}

int rsr_point(struct rsr *r, uint64_t id, char *err, size_t len)
{
	char snap[32];
	int rc = 0;

	snap_name(id, snap);
	for (unsigned i = 0; i < r->ndisks && !rc; i++)
		if ((rc = rbd_flush(r->img[i])) < 0)
			fail(r->vm, err, len, rc, "flush of disk %u: %s", i, why(rc));
	for (unsigned i = 0; i < r->ndisks && !rc; i++)
		if ((rc = rbd_snap_create(r->img[i], snap)) == -EEXIST)
			rc = 0;
		else if (rc < 0)
			fail(r->vm, err, len, rc, "snapshot %s of disk %u: %s", snap, i, why(rc));
	return rc;
}

int rsr_unpoint(struct rsr *r, uint64_t id, char *err, size_t len)
{
	char snap[32];
	int rc = 0;

	snap_name(id, snap);
	for (unsigned i = 0; i < r->ndisks && !rc; i++)
		if ((rc = rbd_snap_remove(r->img[i], snap)) == -ENOENT)
			rc = 0;
		else if (rc < 0)
			fail(r->vm, err, len, rc, "removal of snapshot %s of disk %u: %s", snap, i,
			     why(rc));
	return rc;
}

/* ---- extents ---- */

struct exts {
	uint64_t *off, *len;
	size_t n, cap;
	int rc;
};

static int ext_push(struct exts *x, uint64_t off, uint64_t len)
{
	if (x->n && x->off[x->n - 1] + x->len[x->n - 1] == off) {
		x->len[x->n - 1] += len; /* one extent where librbd gives two */
		return 0;
	}
	if (x->n == x->cap) {
		size_t c = x->cap ? x->cap * 2 : 256;
		uint64_t *o = realloc(x->off, c * sizeof(*o)), *l;
		if (!o)
			return -ENOMEM;
		x->off = o;
		if (!(l = realloc(x->len, c * sizeof(*l))))
			return -ENOMEM;
		x->len = l;
		x->cap = c;
	}
	x->off[x->n] = off;
	x->len[x->n++] = len;
	return 0;
}

/* every extent librbd reports: changed since the snapshot, or allocated */
static int diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct exts *x = arg;

	(void)exists;
	return (x->rc = ext_push(x, off, len));
}

static void exts_free(struct exts *x)
{
	free(x->off);
	free(x->len);
	memset(x, 0, sizeof(*x));
}

struct walk {
	int (*fn)(uint64_t off, uint64_t len, void *arg);
	void *arg;
	int rc; /* fn's first nonzero result */
};

/* hands each extent on as librbd finds it (in order); a nonzero result of
 * fn ends the walk, so a caller that wants a few does not pay for all */
static int walk_cb(uint64_t off, size_t len, int exists, void *arg)
{
	struct walk *w = arg;

	(void)exists;
	if ((w->rc = w->fn(off, len, w->arg)))
		return -ECANCELED;
	return 0;
}

int rsr_extents(struct rsr *r, unsigned disk, uint64_t off, uint64_t len,
		int (*fn)(uint64_t off, uint64_t len, void *arg), void *arg)
{
	struct walk w = { fn, arg, 0 };
	int rc = range_ok(r, disk, off, len);

	if (!rc && len)
		rc = rbd_diff_iterate2(r->img[disk], NULL, off, len, 0, 0, walk_cb, &w);
	return w.rc ? w.rc : rc;
}

static bool all_zero(const char *b, size_t n)
{
	return n == 0 || (b[0] == 0 && !memcmp(b, b + 1, n - 1));
}

/* Disk @disk's head back to snapshot @snap (NULL: to an empty image). */
static int revert_disk(struct rsr *r, unsigned disk, const char *snap, uint64_t *moved)
{
	struct exts x = { 0 };
	rbd_image_t at = NULL;
	char name[RSR_NODE_MAX + REP_NAME_MAX * 2 + 32], *buf = NULL;
	int rc;

	rc = rbd_diff_iterate2(r->img[disk], snap, 0, r->disks[disk].size, 0, 0, diff_cb, &x);
	if (!rc && x.rc)
		rc = x.rc;
	if (!rc && x.n && snap) {
		img_name(r->node, r->vm, &r->disks[disk], name, sizeof(name));
		if ((rc = rbd_open_read_only(r->io, name, &at, snap)) == 0 &&
		    !(buf = malloc(COPY_BUF)))
			rc = -ENOMEM;
	}
	for (size_t i = 0; !rc && i < x.n; i++) {
		uint64_t o = x.off[i], end = o + x.len[i];
		*moved += x.len[i];
		if (!snap) {
			ssize_t w = rbd_write_zeroes(r->img[disk], o, (size_t)x.len[i], 0, 0);
			rc = w < 0 ? (int)w : 0;
			continue;
		}
		while (!rc && o < end) {
			size_t n = end - o < COPY_BUF ? (size_t)(end - o) : COPY_BUF;
			ssize_t got = rbd_read(at, o, n, buf), w = got;
			if (got == (ssize_t)n && !all_zero(buf, n))
				w = rbd_write(r->img[disk], o, n, buf);
			else if (got == (ssize_t)n && (w = rbd_write_zeroes(r->img[disk], o, n, 0,
									 0)) >= 0)
				w = got; /* librbd gives n or 0: done either way */
			rc = w < 0 ? (int)w : w != (ssize_t)n ? -EIO : 0;
			o += n;
		}
	}
	if (!rc)
		rc = rbd_flush(r->img[disk]);
	if (at)
		rbd_close(at);
	free(buf);
	exts_free(&x);
	return rc;
}

int rsr_revert(struct rsr *r, uint64_t id, const uint64_t *keep, unsigned n, char *err,
	       size_t len)
{
	char snap[32];
	uint64_t moved = 0;
	int rc = 0;

	snap_name(id, snap);
	for (unsigned i = 0; i < r->ndisks && !rc; i++)
		if ((rc = revert_disk(r, i, id ? snap : NULL, &moved)) < 0)
			fail(r->vm, err, len, rc, "disk %u: cannot put back point %" PRIu64 ": %s",
			     i, id, rc == -ENOENT ? "its snapshot is gone" : why(rc));
	for (unsigned i = 0; i < r->ndisks && !rc; i++)
		if ((rc = snaps_remove(r->img[i], false, keep, n, r->vm, i)) < 0)
			fail(r->vm, err, len, rc, "disk %u: cannot remove a stray snapshot: %s", i,
			     why(rc));
	if (!rc && moved)
		qb_log(LOG_NOTICE, "replica store of %s: %" PRIu64 " bytes a cycle left behind put "
		       "back to point %" PRIu64, r->vm, moved, id);
	return rc;
}

int rsr_point_spec(const struct rsr_cfg *c, unsigned disk, uint64_t id, char *out, size_t len)
{
	char name[RSR_NODE_MAX + REP_NAME_MAX * 2 + 32], conf[RSR_CONF_MAX + 32] = "";
	int n;

	if (c->conf && (strlen(c->conf) > RSR_CONF_MAX || strpbrk(c->conf, "\"\\")))
		return -EINVAL;
	if (c->conf)
		snprintf(conf, sizeof(conf), ",\"conf\":\"%s\"", c->conf);
	img_name(c->node, c->vm, &c->disks[disk], name, sizeof(name));
	n = snprintf(out, len,
		     "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"rbd\",\"pool\":\"%s\","
		     "\"image\":\"%s\",\"snapshot\":\"p%" PRIu64 "\",\"user\":\"%s\"%s}}",
		     c->pool, name, id, c->client ? c->client : "admin", conf);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int rsr_destroy(const struct rsr_cfg *c, char *err, size_t len)
{
	char name[RSR_NODE_MAX + REP_NAME_MAX * 2 + 32];
	rados_t cl;
	rados_ioctx_t io;
	int rc = ceph_connect(c, &cl, &io, err, len);

	if (rc == -ENOENT) /* the pool is gone, and the images with it */
		return 0;
	for (unsigned i = 0; i < c->ndisks && !rc; i++) {
		img_name(c->node, c->vm, &c->disks[i], name, sizeof(name));
		if ((rc = img_remove(io, name)) < 0)
			fail(c->vm, err, len, rc, "cannot remove the image %s/%s: %s", c->pool,
			     name, why(rc));
	}
	if (io)
		rados_ioctx_destroy(io);
	if (cl)
		rados_shutdown(cl);
	return rc;
}
