/*
 * sto_store_rados: the state store in Ceph RADOS, shared by every node.
 * Key "vm/web1" is the object "web1" in RADOS namespace "vm" (after the
 * store's namespace prefix, empty outside tests) of the pool. This file
 * keeps the records, listing, leases, the probe and the store's handle;
 * watches and the notify after each write are in sto_store_rados_watch.c,
 * what the two share in sto_rados_priv.h.
 *
 * The object's data is the record in the format of sto_priv.h, so a
 * corrupt one is -EBADMSG as in the dir backend; its xattr "hca.version"
 * holds the version as decimal text and is the authority for
 * compare-and-swap. Every put and del is ONE rados write op: compare the
 * xattr (a mismatch fails the whole op with -ECANCELED) or create the object
 * exclusively (-EEXIST), then write (or remove) and set the new version, so
 * two nodes can never both win.
 *
 * Beside the records live helper objects whose names start with '.', which
 * no key can: ".watch" in each namespace, watched by sto_watch and notified
 * with the key after every put and del (sto_store_rados_watch.c);
 * ".lease.NAME", carrying the lease on key NAME as the cls_lock exclusive
 * lock "hca.lease" with an expiry, so a lease never touches the record.
 * Lease objects stay after unlock (a few bytes each); ".probe" is never
 * written: the health probe stats it (an absent object is an answer).
 * Listing scans the pool, so keep the store in a pool of its own rather
 * than beside the RBD images.
 *
 * A cluster handle is thread-safe but an io context's namespace is not, so
 * every call makes its own io context (no round trip). Every librados
 * result becomes a store error in sto_rados_fail().
 *
 * No call waits for Ceph for ever: the op timeouts (sto.h) bound every OSD
 * and monitor round trip, watch registration and unwatch included; the
 * notify that follows a write, which librados would wait for without limit
 * once the OSD has taken it, is waited for with one, and a watch whose OSD
 * stops answering is re-watched (both in sto_store_rados_watch.c).
 */
#include "storage/sto_rados_priv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define VERSION_XATTR "hca.version"
#define LEASE_PREFIX ".lease."
#define LEASE_LOCK "hca.lease"
#define PROBE_OBJ ".probe"
#define PROBE_MON_CMD "{\"prefix\": \"mon stat\"}"

/* Where a key (or its lease) lives: object @obj in namespace @ns. */
struct loc {
	const char *key;
	char subject[STO_KEY_MAX + 8]; /* "key vm/web1", for messages */
	unsigned op_timeout_s;         /* the store's, for messages */
	char ns[STO_RADOS_NS_PREFIX_MAX + STO_KEY_MAX + 1];
	char obj[sizeof(LEASE_PREFIX) + STO_KEY_MAX];
};

/* Who holds a lease, as cls_lock reports it. */
struct holder {
	char tag[256];
	char client[256];
	char cookie[256];
	char addr[256];
};

/* ---- the one translation of librados results ---- */

static const char *reason(int rc, unsigned op_timeout_s, char *buf,
			  size_t len)
{
	switch (rc) {
	case -ENOENT:
		return "it does not exist";
	case -EEXIST:
		return "it already exists";
	case -EBUSY:
		return "someone else holds it";
	case -ECANCELED:
		return "its version changed (someone else wrote it: re-read and decide again)";
	default:
		return sto_ceph_reason(rc, op_timeout_s, buf, len);
	}
}

const char *sto_ceph_reason(int rc, unsigned op_timeout_s, char *buf,
			    size_t len)
{
	switch (rc) {
	case -EACCES:
	case -EPERM:
		return "permission denied (check the client's cephx key and caps)";
	case -ESHUTDOWN: /* Ceph's EBLOCKLISTED */
		return "this client is blocklisted by the cluster (fenced)";
	case -ETIMEDOUT:
		snprintf(buf, len, "Ceph did not answer within %u s (op timeout)",
			 op_timeout_s);
		return buf;
	case -ENOSPC:
	case -EDQUOT:
		return "the pool is full";
	default:
		return sto_errstr(-rc);
	}
}

/* Outcomes callers expect and handle are logged at debug only. */
static uint8_t key_prio(int rc)
{
	return rc == -ENOENT || rc == -EEXIST || rc == -ECANCELED ||
			       rc == -EBUSY ? LOG_DEBUG : LOG_ERR;
}

int sto_rados_fail(unsigned op_timeout_s, uint8_t prio, const char *subject,
		   const char *what, int rc, char *err, size_t errlen)
{
	char buf[64];

	return STO_FAIL(prio, err, errlen, rc, "%s: cannot %s: %s", subject,
			what, reason(rc, op_timeout_s, buf, sizeof(buf)));
}

/* ---- connecting, shared with the rbd volumes ---- */

/* The op timeouts, after the conf file so that it cannot turn them off:
 * every OSD and monitor round trip, and the wait for a monitor when
 * connecting (Ceph's default: 300 s). */
static int set_timeouts(rados_t c, unsigned op_timeout_s)
{
	static const char *const opts[] = { "rados_osd_op_timeout",
					    "rados_mon_op_timeout",
					    "client_mount_timeout" };
	char val[16];
	int rc = 0;

	snprintf(val, sizeof(val), "%u", op_timeout_s);
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]) && rc == 0; i++)
		rc = rados_conf_set(c, opts[i], val);
	return rc;
}

static int connect_steps(rados_t c, const char *ceph_conf, const char *pool,
			 unsigned op_timeout_s, int64_t *pool_id,
			 const char **step)
{
	int rc;

	*step = "read the Ceph configuration";
	rc = rados_conf_read_file(c, ceph_conf);
	if (rc == 0) {
		*step = "set the op timeouts";
		rc = set_timeouts(c, op_timeout_s);
	}
	if (rc == 0) {
		*step = "connect to the Ceph cluster";
		rc = rados_connect(c);
	}
	if (rc == 0) {
		*step = "find the pool";
		*pool_id = rados_pool_lookup(c, pool);
		rc = *pool_id < 0 ? (int)*pool_id : 0;
	}
	return rc;
}

int sto_rados_connect(const char *ceph_conf, const char *client_id,
		      const char *pool, unsigned op_timeout_s,
		      const char *what, rados_t *cluster, int64_t *pool_id,
		      char *err, size_t errlen)
{
	char subject[512];
	const char *step = "create a Ceph client";
	rados_t c = NULL;
	int rc;

	snprintf(subject, sizeof(subject), "%s in pool %.100s (client.%.100s, conf %.200s)",
		 what, pool, client_id, ceph_conf ? ceph_conf : "default");
	if (op_timeout_s < STO_CEPH_TIMEOUT_MIN ||
	    op_timeout_s > STO_CEPH_TIMEOUT_MAX)
		return STO_FAIL(LOG_ERR, err, errlen, -EINVAL,
				"%s: op timeout %u s is out of range (%u to %u)",
				subject, op_timeout_s, STO_CEPH_TIMEOUT_MIN,
				STO_CEPH_TIMEOUT_MAX);
	rc = rados_create(&c, client_id);
	if (rc == 0)
		rc = connect_steps(c, ceph_conf, pool, op_timeout_s, pool_id,
				   &step);
	if (rc < 0) {
		if (c)
			rados_shutdown(c);
		return sto_rados_fail(op_timeout_s, LOG_ERR, subject, step, rc,
				      err, errlen);
	}
	*cluster = c;
	return 0;
}

/* ---- keys, objects, io contexts ---- */

/* @key is valid (checked by the front end). @obj_prefix: "" for the
 * record, LEASE_PREFIX for its lease object. */
static void loc_init(const struct store_rados *r, struct loc *l,
		     const char *key, const char *obj_prefix)
{
	const char *slash = strchr(key, '/');

	l->key = key;
	l->op_timeout_s = r->op_timeout_s;
	snprintf(l->subject, sizeof(l->subject), "key %s", key);
	snprintf(l->ns, sizeof(l->ns), "%s%.*s", r->prefix, (int)(slash - key),
		 key);
	snprintf(l->obj, sizeof(l->obj), "%s%s", obj_prefix, slash + 1);
}

int sto_rados_io_open(struct store_rados *r, const char *subject,
		      const char *ns, rados_ioctx_t *io, char *err,
		      size_t errlen)
{
	int rc = rados_ioctx_create2(r->cluster, r->pool_id, io);

	if (rc < 0) {
		*io = NULL;
		return sto_rados_fail(r->op_timeout_s, LOG_ERR, subject,
				      "open the pool", rc, err, errlen);
	}
	rados_ioctx_set_namespace(*io, ns);
	return 0;
}

void sto_rados_io_close(rados_ioctx_t io)
{
	if (io)
		rados_ioctx_destroy(io);
}

/* ---- get ---- */

/* The whole object: one read of the largest record plus one byte, so a
 * record and the length check come from one consistent read. */
static int obj_read(rados_ioctx_t io, const struct loc *l, uint8_t **rec,
		    size_t *n, char *err, size_t errlen)
{
	size_t cap = STO_REC_HDR_LEN + STO_REC_MAX + 1;
	uint8_t *buf = malloc(cap);
	int rc = buf ? rados_read(io, l->obj, (char *)buf, cap, 0) : -ENOMEM;

	if (rc < 0) {
		free(buf);
		return sto_rados_fail(l->op_timeout_s, key_prio(rc), l->subject,
				      "read", rc, err, errlen);
	}
	*rec = buf;
	*n = (size_t)rc;
	return 0;
}

/* Check @rec and move its payload to the front, shrinking the buffer. */
static int rec_unwrap(const struct store_rados *r, const struct loc *l,
		      uint8_t *rec, size_t n, uint8_t **buf, size_t *len,
		      uint64_t *version, char *err, size_t errlen)
{
	struct sto_rec_hdr h;
	char why[128];
	uint8_t *p;

	if (sto_rec_check(rec, n, &h, why, sizeof(why)) < 0)
		return STO_FAIL(LOG_ERR, err, errlen, -EBADMSG,
				"key %s: record (object %s, namespace '%s', pool %s) is corrupt: %s",
				l->key, l->obj, l->ns, r->pool, why);
	memmove(rec, rec + STO_REC_HDR_LEN, h.len);
	p = realloc(rec, h.len ? h.len : 1);
	*buf = p ? p : rec;
	*len = h.len;
	*version = h.version;
	return 0;
}

static int rados_get_key(struct sto_store *st, const char *key, uint8_t **buf,
			 size_t *len, uint64_t *version, char *err,
			 size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	uint8_t *rec = NULL;
	size_t n = 0;
	struct loc l;
	int rc;

	loc_init(r, &l, key, "");
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc == 0)
		rc = obj_read(io, &l, &rec, &n, err, errlen);
	if (rc == 0)
		rc = rec_unwrap(r, &l, rec, n, buf, len, version, err, errlen);
	if (rc < 0)
		free(rec);
	sto_rados_io_close(io);
	return rc;
}

/* ---- put and del ---- */

/* The compare of compare-and-swap, or the exclusive create for 0. */
static void op_expect(rados_write_op_t op, uint64_t expect, char *cur,
		      size_t curlen)
{
	snprintf(cur, curlen, "%" PRIu64, expect);
	if (expect == 0)
		rados_write_op_create(op, LIBRADOS_CREATE_EXCLUSIVE, NULL);
	else
		rados_write_op_cmpxattr(op, VERSION_XATTR,
					LIBRADOS_CMPXATTR_OP_EQ, cur,
					strlen(cur));
}

static int put_op(rados_ioctx_t io, const struct loc *l, const void *buf,
		  size_t len, uint64_t expect)
{
	rados_write_op_t op = rados_create_write_op();
	uint8_t *rec = malloc(STO_REC_HDR_LEN + len);
	char cur[24], next[24];
	int rc = op && rec ? 0 : -ENOMEM;

	if (rc == 0) {
		sto_rec_hdr_encode(rec, expect + 1, buf, (uint32_t)len);
		memcpy(rec + STO_REC_HDR_LEN, buf, len);
		snprintf(next, sizeof(next), "%" PRIu64, expect + 1);
		op_expect(op, expect, cur, sizeof(cur));
		rados_write_op_write_full(op, (char *)rec, STO_REC_HDR_LEN + len);
		rados_write_op_setxattr(op, VERSION_XATTR, next, strlen(next));
		rc = rados_write_op_operate(op, io, l->obj, NULL, 0);
	}
	if (op)
		rados_release_write_op(op);
	free(rec);
	return rc;
}

static int rados_put_key(struct sto_store *st, const char *key,
			 const void *buf, size_t len, uint64_t expect,
			 uint64_t *new_version, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	char what[64];
	struct loc l;
	int rc;

	loc_init(r, &l, key, "");
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc < 0)
		return rc;
	rc = put_op(io, &l, buf, len, expect);
	if (rc < 0) {
		if (expect)
			snprintf(what, sizeof(what), "update version %" PRIu64,
				 expect);
		else
			snprintf(what, sizeof(what), "create it");
		sto_rados_fail(r->op_timeout_s, key_prio(rc), l.subject, what,
			       rc, err, errlen);
	} else {
		*new_version = expect + 1;
		sto_rados_notify(io, l.key, l.subject, l.op_timeout_s);
	}
	sto_rados_io_close(io);
	return rc;
}

static int del_op(rados_ioctx_t io, const struct loc *l, uint64_t expect)
{
	rados_write_op_t op = rados_create_write_op();
	char cur[24];
	int rc = op ? 0 : -ENOMEM;

	if (rc == 0) {
		op_expect(op, expect, cur, sizeof(cur));
		rados_write_op_remove(op);
		rc = rados_write_op_operate(op, io, l->obj, NULL, 0);
		rados_release_write_op(op);
	}
	return rc;
}

static int rados_del_key(struct sto_store *st, const char *key,
			 uint64_t expect, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	char what[64];
	struct loc l;
	int rc;

	loc_init(r, &l, key, "");
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc < 0)
		return rc;
	rc = del_op(io, &l, expect);
	if (rc < 0) {
		snprintf(what, sizeof(what), "delete version %" PRIu64, expect);
		sto_rados_fail(r->op_timeout_s, key_prio(rc), l.subject, what,
			       rc, err, errlen);
	} else {
		sto_rados_notify(io, l.key, l.subject, l.op_timeout_s);
	}
	sto_rados_io_close(io);
	return rc;
}

/* ---- listing ---- */

struct keyvec {
	char **v;
	size_t n, cap;
};

static int kv_add(struct keyvec *kv, const char *ns, size_t ns_len,
		  const char *name, size_t name_len)
{
	char *key = NULL;

	if (kv->n == kv->cap) {
		size_t cap = kv->cap ? kv->cap * 2 : 16;
		char **v = realloc(kv->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		kv->v = v;
		kv->cap = cap;
	}
	if (asprintf(&key, "%.*s/%.*s", (int)ns_len, ns, (int)name_len,
		     name) < 0)
		return -ENOMEM;
	kv->v[kv->n++] = key;
	return 0;
}

/* What a listing keeps: namespaces of this store starting with @ns_start,
 * names starting with @name_start; or the whole namespace @ns_exact. */
struct filter {
	const char *prefix; /* the store's */
	const char *ns_start;
	const char *ns_exact; /* NULL: any namespace matching ns_start */
	const char *name_start;
};

/* One listed object: added as a key if it is a record of this store.
 * Helper objects ('.'), other stores' and foreign objects are skipped. */
static int list_one(const struct filter *f, struct keyvec *kv,
		    const char *name, size_t name_len, const char *ns,
		    size_t ns_len)
{
	size_t plen = strlen(f->prefix);

	if (ns_len <= plen || memcmp(ns, f->prefix, plen))
		return 0;
	ns += plen;
	ns_len -= plen;
	if (!sto_part_valid(ns, ns_len) || !sto_part_valid(name, name_len) ||
	    ns_len + 1 + name_len > STO_KEY_MAX ||
	    ns_len < strlen(f->ns_start) ||
	    memcmp(ns, f->ns_start, strlen(f->ns_start)) ||
	    (f->ns_exact && (ns_len != strlen(f->ns_exact) ||
			     memcmp(ns, f->ns_exact, ns_len))) ||
	    name_len < strlen(f->name_start) ||
	    memcmp(name, f->name_start, strlen(f->name_start)))
		return 0;
	return kv_add(kv, ns, ns_len, name, name_len);
}

static int list_scan(rados_ioctx_t io, const struct filter *f,
		     struct keyvec *kv)
{
	const char *name, *loc_key, *ns;
	size_t name_len, key_len, ns_len;
	rados_list_ctx_t ctx = NULL;
	int rc = rados_nobjects_list_open(io, &ctx);

	while (rc == 0) {
		rc = rados_nobjects_list_next2(ctx, &name, &loc_key, &ns,
					       &name_len, &key_len, &ns_len);
		if (rc == 0)
			rc = list_one(f, kv, name, name_len, ns ? ns : "",
				      ns ? ns_len : 0);
	}
	if (ctx)
		rados_nobjects_list_close(ctx);
	return rc == -ENOENT ? 0 : rc; /* -ENOENT: the end */
}

static int rados_list_keys(struct sto_store *st, const char *prefix,
			   char ***keys, size_t *n, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	const char *slash = strchr(prefix, '/');
	char ns[STO_RADOS_NS_PREFIX_MAX + STO_KEY_MAX + 1];
	char exact[STO_KEY_MAX + 1];
	struct filter f = { r->prefix, prefix, NULL, "" };
	char subject[STO_KEY_MAX + 16];
	struct keyvec kv = { 0 };
	rados_ioctx_t io = NULL;
	int rc;

	snprintf(subject, sizeof(subject), "keys %s*", prefix);
	snprintf(ns, sizeof(ns), "%s", LIBRADOS_ALL_NSPACES);
	if (slash) { /* one namespace: the OSDs filter it */
		snprintf(exact, sizeof(exact), "%.*s", (int)(slash - prefix),
			 prefix);
		snprintf(ns, sizeof(ns), "%s%s", r->prefix, exact);
		f = (struct filter){ r->prefix, exact, exact, slash + 1 };
	}
	rc = sto_rados_io_open(r, subject, ns, &io, err, errlen);
	if (rc == 0 && (rc = list_scan(io, &f, &kv)) < 0)
		sto_rados_fail(r->op_timeout_s, LOG_ERR, subject,
			       "list the pool", rc, err, errlen);
	sto_rados_io_close(io);
	if (rc < 0) {
		sto_keys_free(kv.v, kv.n);
		return rc;
	}
	*keys = kv.v;
	*n = kv.n;
	return 0;
}

/* ---- leases ---- */

static int lease_take(rados_ioctx_t io, const struct loc *l,
		      const char *cookie, unsigned duration_s)
{
	struct timeval tv = { .tv_sec = duration_s };

	return rados_lock_exclusive(io, l->obj, LEASE_LOCK, cookie, "hca lease",
				    &tv, LIBRADOS_LOCK_FLAG_MAY_RENEW);
}

/* The unexpired holder (cls_lock drops expired ones): 0, or -ENOENT if
 * there is none; other librados errors as they come. */
static int lease_holder(rados_ioctx_t io, const struct loc *l,
			struct holder *h)
{
	size_t tag_len = sizeof(h->tag), client_len = sizeof(h->client);
	size_t cookie_len = sizeof(h->cookie), addr_len = sizeof(h->addr);
	int exclusive = 0;
	ssize_t n = rados_list_lockers(io, l->obj, LEASE_LOCK, &exclusive,
				       h->tag, &tag_len, h->client, &client_len,
				       h->cookie, &cookie_len, h->addr,
				       &addr_len);

	return n < 0 ? (int)n : n == 0 ? -ENOENT : 0;
}

/*
 * cls_lock names a holder by (client instance, cookie); the contract by the
 * cookie alone. So a lease held under our cookie by another client
 * instance (this holder before a restart, another handle) is ours: break
 * that entry and take it. A different cookie keeps it: -EBUSY.
 */
static int lease_take_over(rados_ioctx_t io, const struct loc *l,
			   const char *cookie, unsigned duration_s,
			   struct holder *h)
{
	int rc = lease_holder(io, l, h);

	if (rc == 0 && strcmp(h->cookie, cookie))
		return -EBUSY;
	if (rc == 0)
		rc = rados_break_lock(io, l->obj, LEASE_LOCK, h->client,
				      h->cookie);
	if (rc == 0 || rc == -ENOENT) /* broken, or gone meanwhile */
		rc = lease_take(io, l, cookie, duration_s);
	return rc;
}

static int rados_lock_key(struct sto_store *st, const char *key,
			  const char *cookie, unsigned duration_s, char *err,
			  size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	struct holder h = { 0 };
	struct loc l;
	int rc;

	loc_init(r, &l, key, LEASE_PREFIX);
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc < 0)
		return rc;
	rc = lease_take(io, &l, cookie, duration_s);
	if (rc == -EBUSY)
		rc = lease_take_over(io, &l, cookie, duration_s, &h);
	if (rc == -EBUSY && h.cookie[0] && strcmp(h.cookie, cookie))
		rc = STO_FAIL(LOG_DEBUG, err, errlen, -EBUSY,
			      "key %s: leased by %.64s", key, h.cookie);
	else if (rc < 0)
		rc = sto_rados_fail(r->op_timeout_s, key_prio(rc), l.subject,
				    "take its lease", rc, err, errlen);
	sto_rados_io_close(io);
	return rc;
}

/* Release our entry, or our cookie's under another client instance. */
static int lease_release(rados_ioctx_t io, const struct loc *l,
			 const char *cookie)
{
	struct holder h;
	int rc = rados_unlock(io, l->obj, LEASE_LOCK, cookie);

	if (rc != -ENOENT)
		return rc;
	rc = lease_holder(io, l, &h);
	if (rc == 0 && strcmp(h.cookie, cookie))
		rc = -ENOENT;
	if (rc == 0)
		rc = rados_break_lock(io, l->obj, LEASE_LOCK, h.client,
				      h.cookie);
	return rc;
}

static int rados_unlock_key(struct sto_store *st, const char *key,
			    const char *cookie, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	struct loc l;
	int rc;

	loc_init(r, &l, key, LEASE_PREFIX);
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc < 0)
		return rc;
	rc = lease_release(io, &l, cookie);
	if (rc == -ENOENT)
		STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
			 "key %s: %s holds no lease on it", key, cookie);
	else if (rc < 0)
		sto_rados_fail(r->op_timeout_s, LOG_ERR, l.subject,
			       "release its lease", rc, err, errlen);
	sto_rados_io_close(io);
	return rc;
}

static int rados_lock_owner(struct sto_store *st, const char *key, char *out,
			    size_t len, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	rados_ioctx_t io = NULL;
	struct holder h;
	struct loc l;
	int rc;

	loc_init(r, &l, key, LEASE_PREFIX);
	rc = sto_rados_io_open(r, l.subject, l.ns, &io, err, errlen);
	if (rc < 0)
		return rc;
	rc = lease_holder(io, &l, &h);
	if (rc == -ENOENT)
		STO_FAIL(LOG_DEBUG, err, errlen, -ENOENT,
			 "key %s: nobody holds a lease on it", key);
	else if (rc < 0)
		sto_rados_fail(r->op_timeout_s, LOG_ERR, l.subject,
			       "read its lease", rc, err, errlen);
	else
		snprintf(out, len, "%s", h.cookie);
	sto_rados_io_close(io);
	return rc;
}

/* ---- probe ---- */

/* A monitor first, then the OSD of PROBE_OBJ in the store's own namespace:
 * two small round trips, each bounded by the op timeout, because either
 * side can hang while the other answers. The object need not exist. */
static int rados_probe(struct sto_store *st, char *err, size_t errlen)
{
	struct store_rados *r = to_rados(st);
	const char *cmd[] = { PROBE_MON_CMD };
	const char *what = "get an answer from a monitor (mon stat)";
	char *out = NULL, *outs = NULL, subject[128];
	size_t out_len = 0, outs_len = 0;
	rados_ioctx_t io = NULL;
	uint64_t size;
	time_t mtime;
	int rc = rados_mon_command(r->cluster, cmd, 1, NULL, 0, &out, &out_len,
				   &outs, &outs_len);

	if (out)
		rados_buffer_free(out);
	if (outs)
		rados_buffer_free(outs);
	if (rc == 0) {
		what = "get an answer from an OSD (stat of " PROBE_OBJ ")";
		rc = rados_ioctx_create2(r->cluster, r->pool_id, &io);
	}
	if (rc == 0) {
		rados_ioctx_set_namespace(io, r->prefix);
		rc = rados_stat(io, PROBE_OBJ, &size, &mtime);
		rc = rc == -ENOENT ? 0 : rc; /* absent: an answer all the same */
	}
	sto_rados_io_close(io);
	if (rc == 0)
		return 0;
	snprintf(subject, sizeof(subject), "store in pool %.64s", r->pool);
	return sto_rados_fail(r->op_timeout_s, LOG_DEBUG, subject, what, rc,
			      err, errlen);
}

/* ---- open and close ---- */

static void rados_close(struct sto_store *st)
{
	struct store_rados *r = to_rados(st);

	if (r->cluster)
		rados_shutdown(r->cluster);
	free(r->pool);
	free(r->prefix);
	free(r);
}

static const struct sto_store_ops rados_ops = {
	.name = "rados",
	.get = rados_get_key,
	.put = rados_put_key,
	.del = rados_del_key,
	.list = rados_list_keys,
	.lock = rados_lock_key,
	.unlock = rados_unlock_key,
	.lock_owner = rados_lock_owner,
	.watch_new = sto_rados_watch_new,
	.watch_free = sto_rados_watch_free,
	.probe = rados_probe,
	.close = rados_close,
};

struct sto_store *sto_store_open_rados_prefixed(const char *ceph_conf,
						const char *client_id,
						const char *pool,
						const char *ns_prefix,
						unsigned op_timeout_s,
						char *err, size_t errlen)
{
	struct store_rados *r = calloc(1, sizeof(*r));
	const char *id = client_id ? client_id : "admin";
	int rc = r ? 0 : -ENOMEM;

	if (!ns_prefix)
		ns_prefix = "";
	if (rc == 0) {
		r->base.ops = &rados_ops;
		r->op_timeout_s = op_timeout_s;
		r->pool = pool ? strdup(pool) : NULL;
		r->prefix = strdup(ns_prefix);
		rc = r->pool && r->prefix ? 0 : -ENOMEM;
	}
	if (rc == 0 && (!pool || strlen(ns_prefix) > STO_RADOS_NS_PREFIX_MAX))
		rc = -EINVAL;
	if (rc < 0)
		STO_FAIL(LOG_ERR, err, errlen, rc,
			 "store in pool %s: cannot open: %s", pool ? pool : "(none)",
			 rc == -EINVAL ? "no pool, or a namespace prefix over 32 characters" :
					 sto_errstr(-rc));
	else
		rc = sto_rados_connect(ceph_conf, id, pool, op_timeout_s,
				       "store", &r->cluster, &r->pool_id, err,
				       errlen);
	if (rc < 0 && r)
		rados_close(&r->base);
	return rc < 0 ? NULL : &r->base;
}

struct sto_store *sto_store_open_rados(const char *ceph_conf,
				       const char *client_id, const char *pool,
				       unsigned op_timeout_s, char *err,
				       size_t errlen)
{
	return sto_store_open_rados_prefixed(ceph_conf, client_id, pool, NULL,
					     op_timeout_s, err, errlen);
}
