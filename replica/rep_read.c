/*
 * rep_read: the reader of a disk's view over NBD (see rep_read.h).
 *
 * Each block status request names both contexts, and the server answers
 * one extent list per context, each ending where it chose (DESIGN.md §2).
 * So each context has its own cache of extents, walked forward; when the
 * walk reaches the end of either, one request at that offset refills both
 * (every later lookup is at or beyond it, the cursor never moves back).
 *
 * rep_reader_next() plans its chunks from the caches first, then reads
 * the data chunks with nbd_aio_pread, READ_DEPTH in flight, then trims
 * everything behind the cursor: read, zero or clean, the view never needs
 * it again, so the copy-before-write filter stops copying it for the
 * guest's writes (whole clusters only: a trim is cut down to them). Everything goes through libnbd's aio calls and one waiting
 * loop, so no wait is unbounded.
 */
#include "replica/rep_read.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <qb/qblog.h>

#include "replica/rep_wire.h"

#define CTX_ALLOC "base:allocation"
#define CTX_BITMAP_PREFIX "qemu:dirty-bitmap:"
#define TRIM_MAX (1ull << 30) /* an NBD request's length is 32 bits */
/* Reads in flight. Measured (512 MiB of random data, qsd on 2 shared
 * cores, 1 MiB reads): 1 ~0.9-1.0 GB/s, 2-4 ~1.1-1.3, 8 ~0.6-1.1, 16 ~0.3. */
#define READ_DEPTH 4u
#define STATE_DIRTY 1u	/* qemu:dirty-bitmap:*: the only flag */
/* The copy-before-write filter's unit, block-copy's minimum (its target, a
 * raw file, asks for no more): a trim only ends copying in whole ones. */
#define CBW_CLUSTER (64u << 10)

struct ext {
	uint64_t off, end;
	uint32_t flags;
};

/* One context's extents from the last request, walked forward. */
struct ctx {
	char *name;
	struct ext *e;	/* REP_READ_EXTENTS_MAX */
	size_t n, i;
	uint64_t start;	/* the request's offset: e[0].off */
	bool bad;	/* an extent list that does not start there or does not move */
};

struct rep_reader {
	struct nbd_handle *h;
	char *name;		/* the export, for messages */
	uint64_t size, pos;
	struct ctx alloc;
	struct ctx dirty;	/* name NULL: full mode */
	bool trim, trim_failed;
	int trim_err;		/* set by a trim's completion */
	uint64_t trimmed;	/* [0, trimmed) was trimmed */
	bool broken;		/* a next() failed */
	size_t cap;		/* of data[] and cookie[] */
	bool *data;		/* per planned chunk: data (true) or zeros */
	int64_t *cookie;	/* per planned chunk: its read */
};

static int fail(char *err, size_t len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t len, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && len) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

/* libnbd's last error on this thread as -errno and a line. */
static int nbd_fail(const struct rep_reader *r, char *err, size_t len, const char *what)
{
	int e = nbd_get_errno();
	const char *msg = nbd_get_error();

	return fail(err, len, -(e > 0 ? e : EIO), "export %s: %s: %s", r->name, what,
		    msg ? msg : "unknown libnbd error");
}

/* Polls until @cookie completed; -ETIMEDOUT after REP_READ_TIMEOUT_MS
 * without any progress on the connection. */
static int wait_cookie(struct rep_reader *r, int64_t cookie, char *err, size_t len,
		       const char *what)
{
	int c;

	while ((c = nbd_aio_command_completed(r->h, (uint64_t)cookie)) == 0) {
		int p = nbd_poll(r->h, REP_READ_TIMEOUT_MS);
		if (p < 0)
			return nbd_fail(r, err, len, what);
		if (p == 0)
			return fail(err, len, -ETIMEDOUT, "export %s: %s: no answer in %d ms",
				    r->name, what, REP_READ_TIMEOUT_MS);
	}
	return c < 0 ? nbd_fail(r, err, len, what) : 0;
}

/* ---- block status ---- */

static void fill(struct rep_reader *r, struct ctx *c, uint64_t off, const uint32_t *e,
		 size_t ne)
{
	c->n = c->i = 0;
	c->bad = off != c->start;
	for (size_t k = 0; k + 1 < ne && c->n < REP_READ_EXTENTS_MAX && off < r->size; k += 2) {
		uint64_t end = off + e[k] > r->size ? r->size : off + e[k];
		if (end == off) {
			c->bad = true;
			break;
		}
		c->e[c->n++] = (struct ext){ .off = off, .end = end, .flags = e[k + 1] };
		off = end;
	}
}

static int extent_cb(void *user, const char *meta, uint64_t off, uint32_t *e, size_t ne,
		     int *error)
{
	struct rep_reader *r = user;

	if (!strcmp(meta, r->alloc.name))
		fill(r, &r->alloc, off, e, ne);
	else if (r->dirty.name && !strcmp(meta, r->dirty.name))
		fill(r, &r->dirty, off, e, ne);
	return 0;
}

/* One request at @off refills both caches. */
static int refill(struct rep_reader *r, uint64_t off, char *err, size_t len)
{
	uint64_t count = r->size - off < REP_READ_WINDOW ? r->size - off : REP_READ_WINDOW;
	struct ctx *cs[2] = { &r->alloc, &r->dirty };
	int64_t ck;
	int rc;

	for (int k = 0; k < 2; k++) {
		cs[k]->n = cs[k]->i = 0;
		cs[k]->start = off;
		cs[k]->bad = false;
	}
	ck = nbd_aio_block_status(r->h, count, off,
				  (nbd_extent_callback){ .callback = extent_cb, .user_data = r },
				  NBD_NULL_COMPLETION, 0);
	if (ck < 0)
		return nbd_fail(r, err, len, "block status");
	if ((rc = wait_cookie(r, ck, err, len, "block status")))
		return rc;
	for (int k = 0; k < 2; k++)
		if (cs[k]->name && (cs[k]->bad || !cs[k]->n))
			return fail(err, len, -EPROTO,
				    "export %s: block status of %s at %" PRIu64
				    " gave no usable extents", r->name, cs[k]->name, off);
	return 0;
}

/* The flags of @c at @off (>= every earlier lookup) and where they end. */
static int lookup(struct rep_reader *r, struct ctx *c, uint64_t off, uint32_t *flags,
		  uint64_t *end, char *err, size_t len)
{
	int rc;

	if (off < c->start || !c->n || off >= c->e[c->n - 1].end) {
		if ((rc = refill(r, off, err, len)))
			return rc;
	}
	while (c->e[c->i].end <= off)
		c->i++;
	*flags = c->e[c->i].flags;
	*end = c->e[c->i].end;
	return 0;
}

/* ---- open / close ---- */

static int connect_sock(struct rep_reader *r, const char *sock, char *err, size_t len)
{
	if (nbd_aio_connect_unix(r->h, sock) < 0)
		return nbd_fail(r, err, len, "connect");
	while (nbd_aio_is_connecting(r->h)) {
		int p = nbd_poll(r->h, REP_READ_TIMEOUT_MS);
		if (p < 0)
			return nbd_fail(r, err, len, "connect");
		if (p == 0)
			return fail(err, len, -ETIMEDOUT, "export %s: no handshake in %d ms",
				    r->name, REP_READ_TIMEOUT_MS);
	}
	if (!nbd_aio_is_ready(r->h))
		return nbd_fail(r, err, len, "connect");
	return 0;
}

/* Both contexts negotiated, the size known, trim checked. */
static int check_server(struct rep_reader *r, char *err, size_t len)
{
	int64_t size = nbd_get_size(r->h);
	const struct ctx *cs[2] = { &r->alloc, &r->dirty };

	if (size < 0)
		return nbd_fail(r, err, len, "size");
	r->size = (uint64_t)size;
	for (int k = 0; k < 2; k++)
		if (cs[k]->name && nbd_can_meta_context(r->h, cs[k]->name) != 1)
			return fail(err, len, -ENOTSUP,
				    "export %s does not offer %s (is the bitmap exported?)",
				    r->name, cs[k]->name);
	if (r->trim && nbd_can_trim(r->h) != 1) {
		qb_log(LOG_WARNING, "export %s: cannot trim (read-only?): copy-before-write "
		       "goes on copying what was read", r->name);
		r->trim = false;
	}
	return 0;
}

static int setup(struct rep_reader *r, const char *sock, const char *name, const char *bitmap,
		 char *err, size_t len)
{
	int rc;

	if (!(r->name = strdup(name)) || !(r->alloc.name = strdup(CTX_ALLOC)) ||
	    !(r->alloc.e = calloc(REP_READ_EXTENTS_MAX, sizeof(struct ext))))
		return fail(err, len, -ENOMEM, "export %s: out of memory", name);
	if (bitmap && (asprintf(&r->dirty.name, CTX_BITMAP_PREFIX "%s", bitmap) < 0 ||
		       !(r->dirty.e = calloc(REP_READ_EXTENTS_MAX, sizeof(struct ext))))) {
		r->dirty.name = NULL;
		return fail(err, len, -ENOMEM, "export %s: out of memory", name);
	}
	if (!(r->h = nbd_create()))
		return nbd_fail(r, err, len, "create a handle");
	if (nbd_set_export_name(r->h, name) < 0 || nbd_add_meta_context(r->h, CTX_ALLOC) < 0 ||
	    (r->dirty.name && nbd_add_meta_context(r->h, r->dirty.name) < 0))
		return nbd_fail(r, err, len, "set up the handle");
	rc = connect_sock(r, sock, err, len);
	return rc ? rc : check_server(r, err, len);
}

struct rep_reader *rep_reader_open(const char *sock, const char *name, const char *bitmap,
				   bool trim, char *err, size_t errlen)
{
	struct rep_reader *r = NULL;
	int rc;

	if (!sock || !sock[0] || !name || !name[0] || (bitmap && !bitmap[0])) {
		fail(err, errlen, -EINVAL, "replica reader: no socket, export or bitmap name");
		errno = EINVAL;
		return NULL;
	}
	if (!(r = calloc(1, sizeof(*r)))) {
		fail(err, errlen, -ENOMEM, "export %s: out of memory", name);
		return NULL;
	}
	r->trim = trim;
	if ((rc = setup(r, sock, name, bitmap, err, errlen))) {
		rep_reader_close(r);
		errno = -rc;
		return NULL;
	}
	return r;
}

uint64_t rep_reader_size(const struct rep_reader *r)
{
	return r->size;
}

uint64_t rep_reader_pos(const struct rep_reader *r)
{
	return r->pos;
}

static void note_trim_failure(struct rep_reader *r)
{
	if (!r->trim_err || r->trim_failed)
		return;
	r->trim_failed = true;
	r->trim = false;
	qb_log(LOG_WARNING, "export %s: trim failed (%s): copy-before-write goes on copying "
	       "what was read", r->name, strerror(r->trim_err));
}

void rep_reader_close(struct rep_reader *r)
{
	if (!r)
		return;
	if (r->h) {
		/* trims still in flight: let them land, but not for ever */
		while (nbd_aio_is_ready(r->h) && nbd_aio_in_flight(r->h) > 0 &&
		       nbd_poll(r->h, REP_READ_TIMEOUT_MS) > 0)
			;
		note_trim_failure(r);
		if (nbd_aio_is_ready(r->h))
			nbd_aio_disconnect(r->h, 0);
		nbd_close(r->h);
	}
	free(r->alloc.name);
	free(r->alloc.e);
	free(r->dirty.name);
	free(r->dirty.e);
	free(r->data);
	free(r->cookie);
	free(r->name);
	free(r);
}

void rep_chunks_free(struct rep_chunk *c, size_t n)
{
	for (size_t i = 0; c && i < n; i++) {
		free(c[i].buf);
		c[i].buf = NULL;
	}
}

/* ---- next ---- */

static int grow(struct rep_reader *r, size_t nout, char *err, size_t len)
{
	bool *d;
	int64_t *c;

	if (nout <= r->cap)
		return 0;
	d = realloc(r->data, nout * sizeof(*d));
	if (d)
		r->data = d;
	c = d ? realloc(r->cookie, nout * sizeof(*c)) : NULL;
	if (!c)
		return fail(err, len, -ENOMEM, "export %s: out of memory", r->name);
	r->cookie = c;
	r->cap = nout;
	return 0;
}

/* Adds [pos, end) (zeros or data) at the cursor: to the last chunk when
 * adjacent and alike (data up to REP_EXTENT_MAX), else as a new chunk.
 * Returns the bytes taken, 0 when out[] is full. */
static uint64_t take(struct rep_reader *r, struct rep_chunk *out, size_t nout, size_t *k,
		     uint64_t end, bool data)
{
	struct rep_chunk *last = *k ? &out[*k - 1] : NULL;
	uint64_t want = end - r->pos, room;

	if (last && last->off + last->len == r->pos && r->data[*k - 1] == data) {
		room = data ? REP_EXTENT_MAX - last->len : UINT64_MAX - last->len;
		if (room) {
			want = want < room ? want : room;
			last->len += want;
			r->pos += want;
			return want;
		}
	}
	if (*k == nout)
		return 0;
	if (data && want > REP_EXTENT_MAX)
		want = REP_EXTENT_MAX;
	out[*k] = (struct rep_chunk){ .off = r->pos, .len = want };
	r->data[(*k)++] = data;
	r->pos += want;
	return want;
}

/* Plans chunks from the cursor into out[] (buffers still NULL). */
static int plan(struct rep_reader *r, size_t max_bytes, struct rep_chunk *out, size_t nout,
		size_t *k, char *err, size_t len)
{
	uint64_t data = 0, wend, aend, got;
	uint32_t fl;
	int rc;

	while (r->pos < r->size && !(data && data >= max_bytes)) {
		wend = r->size;
		if (r->dirty.name) {
			if ((rc = lookup(r, &r->dirty, r->pos, &fl, &wend, err, len)))
				return rc;
			if (!(fl & STATE_DIRTY)) { /* clean: nothing to ship */
				r->pos = wend;
				continue;
			}
		}
		if ((rc = lookup(r, &r->alloc, r->pos, &fl, &aend, err, len)))
			return rc;
		got = take(r, out, nout, k, aend < wend ? aend : wend, !(fl & LIBNBD_STATE_ZERO));
		if (!got)
			break;
		data += fl & LIBNBD_STATE_ZERO ? 0 : got;
	}
	return 0;
}

static int read_all(struct rep_reader *r, struct rep_chunk *out, size_t k, char *err,
		    size_t len)
{
	size_t oldest = 0;
	unsigned inflight = 0;
	int rc = 0;

	for (size_t i = 0; i < k && !rc; i++) {
		r->cookie[i] = -1;
		if (!r->data[i])
			continue;
		if (!(out[i].buf = malloc(out[i].len)))
			return fail(err, len, -ENOMEM, "export %s: out of memory", r->name);
		r->cookie[i] = nbd_aio_pread(r->h, out[i].buf, out[i].len, out[i].off,
					     NBD_NULL_COMPLETION, 0);
		if (r->cookie[i] < 0)
			return nbd_fail(r, err, len, "read");
		for (inflight++; inflight >= READ_DEPTH && !rc; oldest++)
			if (r->cookie[oldest] >= 0) {
				rc = wait_cookie(r, r->cookie[oldest], err, len, "read");
				inflight--;
			}
	}
	for (; oldest < k && !rc; oldest++)
		if (r->cookie[oldest] >= 0)
			rc = wait_cookie(r, r->cookie[oldest], err, len, "read");
	return rc;
}

static int trim_done(void *user, int *error)
{
	struct rep_reader *r = user;

	if (*error && !r->trim_err)
		r->trim_err = *error;
	return 1; /* retire the command: nobody waits for it */
}

/*
 * Tells the view it need not keep anything behind the cursor (every chunk
 * planned is read by now): what was read, zero ranges and clean ranges
 * alike. Trimming only what was read left each cluster that also holds a
 * clean block copied on every guest write to it until the cycle ended.
 */
static void trim_behind(struct rep_reader *r)
{
	uint64_t end = r->pos / CBW_CLUSTER * CBW_CLUSTER;

	while (r->trim && r->trimmed < end) {
		uint64_t l = end - r->trimmed < TRIM_MAX ? end - r->trimmed : TRIM_MAX;
		if (nbd_aio_trim(r->h, l, r->trimmed, (nbd_completion_callback){
					 .callback = trim_done, .user_data = r }, 0) < 0 &&
		    !r->trim_err)
			r->trim_err = nbd_get_errno() > 0 ? nbd_get_errno() : EIO;
		note_trim_failure(r);
		r->trimmed += l;
	}
}

int rep_reader_next(struct rep_reader *r, size_t max_bytes, struct rep_chunk *out, size_t nout,
		    size_t *n, char *err, size_t errlen)
{
	size_t k = 0;
	int rc;

	*n = 0;
	if (!out || !nout)
		return fail(err, errlen, -EINVAL, "export %s: no room for chunks", r->name);
	if (r->broken)
		return fail(err, errlen, -EIO, "export %s: the reader failed before", r->name);
	note_trim_failure(r);
	if ((rc = grow(r, nout, err, errlen)) || (rc = plan(r, max_bytes, out, nout, &k, err, errlen)) ||
	    (rc = read_all(r, out, k, err, errlen))) {
		/* reads may still be in flight into out[]: drop the connection
		 * (and them) before their buffers */
		nbd_close(r->h);
		r->h = NULL;
		rep_chunks_free(out, k);
		r->broken = true;
		return rc;
	}
	trim_behind(r);
	*n = k;
	return 0;
}
