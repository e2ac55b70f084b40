/*
 * rep_wire.c: the replica stream's codec (see rep_wire.h): the cycle
 * header, frames out, frames in step by step, and the decoder that chains
 * the steps for whoever reads a stream on one thread.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "replica/rep_wire.h"

#define DATA_FIELD 15u /* RepFrame.data */

_Static_assert((int)REP_CODEC_ZSTD == (int)HCA__REP_CODEC__REP_CODEC_ZSTD, "codec values");

static int fail(struct rep_err *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct rep_err *e, int err, const char *fmt, ...)
{
	va_list ap;

	if (e) {
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* ---- the cycle ---- */

/* Printable ASCII without spaces, 1 to REP_NAME_MAX bytes: it goes to logs. */
static bool name_valid(const char *s)
{
	size_t n = strnlen(s, REP_NAME_MAX + 1);

	if (n == 0 || n > REP_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

int rep_cycle_check(const struct rep_cycle *c, struct rep_err *e)
{
	if (!name_valid(c->vm))
		return fail(e, -EINVAL, "cycle header: bad VM name");
	if (!c->cycle)
		return fail(e, -EINVAL, "cycle header of %s: cycle number 0", c->vm);
	if (c->full && c->base)
		return fail(e, -EINVAL, "cycle %llu of %s: a full copy names base point %llu",
			    (unsigned long long)c->cycle, c->vm, (unsigned long long)c->base);
	if (c->resync && (c->full || !c->base))
		return fail(e, -EINVAL, "cycle %llu of %s: a resync names no base point",
			    (unsigned long long)c->cycle, c->vm);
	if (!c->ndisks || c->ndisks > REP_DISKS_MAX)
		return fail(e, -EINVAL, "cycle %llu of %s: %u disks (1 to %u)",
			    (unsigned long long)c->cycle, c->vm, c->ndisks, REP_DISKS_MAX);
	for (unsigned i = 0; i < c->ndisks; i++) {
		if (!name_valid(c->disks[i].name) || !c->disks[i].size)
			return fail(e, -EINVAL, "cycle %llu of %s: disk %u: bad name or size 0",
				    (unsigned long long)c->cycle, c->vm, i);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(c->disks[i].name, c->disks[j].name))
				return fail(e, -EINVAL, "cycle %llu of %s: disk %s twice",
					    (unsigned long long)c->cycle, c->vm, c->disks[i].name);
	}
	return 0;
}

int rep_cycle_encode(const struct rep_cycle *c, uint8_t **out, size_t *len, struct rep_err *e)
{
	Hca__RepCycleHeader h = HCA__REP_CYCLE_HEADER__INIT;
	Hca__RepDisk d[REP_DISKS_MAX], *dp[REP_DISKS_MAX];
	int rc = rep_cycle_check(c, e);

	*out = NULL;
	*len = 0;
	if (rc < 0)
		return rc;
	h.format = REP_FORMAT;
	h.vm = (char *)c->vm;
	h.relation = c->relation;
	h.incarnation = c->incarnation;
	h.cycle = c->cycle;
	h.base_point = c->base;
	h.full = c->full;
	h.cut_ms = c->cut_ms;
	h.app_consistent = c->app_consistent;
	h.resync = c->resync;
	for (unsigned i = 0; i < c->ndisks; i++) {
		hca__rep_disk__init(&d[i]);
		d[i].name = (char *)c->disks[i].name;
		d[i].size = c->disks[i].size;
		dp[i] = &d[i];
	}
	h.n_disks = c->ndisks;
	h.disks = dp;
	*len = hca__rep_cycle_header__get_packed_size(&h);
	*out = malloc(*len);
	if (!*out)
		return fail(e, -ENOMEM, "no memory for a cycle header");
	hca__rep_cycle_header__pack(&h, *out);
	return 0;
}

static int header_copy(const Hca__RepCycleHeader *h, struct rep_cycle *c, struct rep_err *e)
{
	if (h->format == 0)
		return fail(e, -EPROTO, "cycle header without a format");
	if (h->format > REP_FORMAT)
		return fail(e, -EPROTONOSUPPORT,
			    "cycle header of format %u: this node reads up to format %u", h->format,
			    REP_FORMAT);
	if (h->n_disks > REP_DISKS_MAX)
		return fail(e, -EPROTO, "cycle header with %zu disks: the most is %u", h->n_disks,
			    REP_DISKS_MAX);
	if (strlen(h->vm) > REP_NAME_MAX)
		return fail(e, -EINVAL, "cycle header: VM name over %u bytes", REP_NAME_MAX);
	memcpy(c->vm, h->vm, strlen(h->vm) + 1);
	c->relation = h->relation;
	c->incarnation = h->incarnation;
	c->cycle = h->cycle;
	c->base = h->base_point;
	c->full = h->full;
	c->cut_ms = h->cut_ms;
	c->app_consistent = h->app_consistent;
	c->resync = h->resync;
	c->ndisks = (unsigned)h->n_disks;
	for (size_t i = 0; i < h->n_disks; i++) {
		if (strlen(h->disks[i]->name) > REP_NAME_MAX)
			return fail(e, -EINVAL, "cycle header: disk %zu's name over %u bytes", i,
				    REP_NAME_MAX);
		memcpy(c->disks[i].name, h->disks[i]->name, strlen(h->disks[i]->name) + 1);
		c->disks[i].size = h->disks[i]->size;
	}
	return rep_cycle_check(c, e);
}

int rep_cycle_decode(const uint8_t *buf, size_t len, struct rep_cycle *c, struct rep_err *e)
{
	Hca__RepCycleHeader *h;
	int rc;

	memset(c, 0, sizeof(*c));
	if (len > REP_HDR_MAX)
		return fail(e, -EMSGSIZE, "cycle header of %zu bytes: the most is %u", len,
			    REP_HDR_MAX);
	h = hca__rep_cycle_header__unpack(NULL, len, buf);
	if (!h)
		return fail(e, -EPROTO, "undecodable cycle header");
	rc = header_copy(h, c, e);
	hca__rep_cycle_header__free_unpacked(h, NULL);
	return rc;
}

int rep_cycle_range(const struct rep_cycle *c, uint32_t disk, uint64_t off, uint64_t len,
		    struct rep_err *e)
{
	if (disk >= c->ndisks)
		return fail(e, -ERANGE, "disk index %u: cycle %llu of %s has %u disks", disk,
			    (unsigned long long)c->cycle, c->vm, c->ndisks);
	if (off > c->disks[disk].size || len > c->disks[disk].size - off)
		return fail(e, -ERANGE, "%llu bytes at %llu: past the end of disk %s (%llu bytes)",
			    (unsigned long long)len, (unsigned long long)off, c->disks[disk].name,
			    (unsigned long long)c->disks[disk].size);
	return 0;
}

/* ---- the tally and its digest ---- */

static void put32le(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64le(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void rep_tally_init(struct rep_tally *t, const uint8_t *hdr, size_t len)
{
	memset(t, 0, sizeof(*t));
	t->next_seq = 1;
	t->sum.digest = chan_crc32c(hdr, len);
}

uint32_t rep_digest_next(uint32_t d, const struct rep_frame *f)
{
	uint8_t b[37];

	put32le(b, d);
	put64le(b + 4, f->seq);
	b[12] = (uint8_t)f->kind;
	put32le(b + 13, f->disk);
	put64le(b + 17, f->offset);
	put64le(b + 25, f->length);
	put32le(b + 33, f->kind == REP_KIND_EXTENT ? f->crc : 0);
	return chan_crc32c(b, sizeof(b));
}

static int end_check(const struct rep_tally *t, const struct rep_end *x, struct rep_err *e)
{
	const struct rep_end *s = &t->sum;

	if (x->extents != s->extents || x->zeros != s->zeros || x->raw_bytes != s->raw_bytes ||
	    x->zero_bytes != s->zero_bytes)
		return fail(e, -EILSEQ,
			    "cycle totals differ: sent %llu extents (%llu bytes) and %llu zero "
			    "ranges (%llu bytes), received %llu (%llu) and %llu (%llu)",
			    (unsigned long long)x->extents, (unsigned long long)x->raw_bytes,
			    (unsigned long long)x->zeros, (unsigned long long)x->zero_bytes,
			    (unsigned long long)s->extents, (unsigned long long)s->raw_bytes,
			    (unsigned long long)s->zeros, (unsigned long long)s->zero_bytes);
	if (x->digest != s->digest)
		return fail(e, -EILSEQ, "digest mismatch: sent %08x, received %08x", x->digest,
			    s->digest);
	return 0;
}

int rep_tally_add(struct rep_tally *t, const struct rep_frame *f, struct rep_err *e)
{
	int rc;

	if (t->ended)
		return fail(e, -EPROTO, "frame %llu after the cycle's end",
			    (unsigned long long)f->seq);
	if (f->seq != t->next_seq)
		return fail(e, -EILSEQ, "frame %llu where %llu was due: reordered or lost",
			    (unsigned long long)f->seq, (unsigned long long)t->next_seq);
	if (f->kind == REP_KIND_END) {
		rc = end_check(t, &f->end, e);
		if (rc < 0)
			return rc;
		t->ended = true;
	} else if (f->kind == REP_KIND_EXTENT) {
		t->sum.extents++;
		t->sum.raw_bytes += f->length;
	} else {
		t->sum.zeros++;
		t->sum.zero_bytes += f->length;
	}
	if (f->kind != REP_KIND_END)
		t->sum.digest = rep_digest_next(t->sum.digest, f);
	t->next_seq++;
	return 0;
}

/* ---- encoding ---- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

static void put32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * The prefix, the metadata by protobuf-c, then the data field's key and
 * length by hand: the same bytes protobuf-c would write with the data in
 * the message (it writes fields in number order, and data is the highest),
 * without copying the data.
 */
static void enc_put(struct rep_enc *en)
{
	Hca__RepFrame m = HCA__REP_FRAME__INIT;
	Hca__RepExtent x = HCA__REP_EXTENT__INIT;
	Hca__RepZero z = HCA__REP_ZERO__INIT;
	Hca__RepEnd d = HCA__REP_END__INIT;
	const struct rep_frame *f = &en->f;
	uint8_t *p = en->hdr + REP_PREFIX_LEN;
	size_t mlen;

	m.seq = f->seq;
	if (f->kind == REP_KIND_EXTENT) {
		x.disk = f->disk;
		x.offset = f->offset;
		x.length = (uint32_t)f->length;
		x.codec = (Hca__RepCodec)f->codec;
		x.crc = f->crc;
		m.kind_case = HCA__REP_FRAME__KIND_EXTENT;
		m.extent = &x;
	} else if (f->kind == REP_KIND_ZERO) {
		z.disk = f->disk;
		z.offset = f->offset;
		z.length = f->length;
		m.kind_case = HCA__REP_FRAME__KIND_ZERO;
		m.zero = &z;
	} else {
		d.extents = f->end.extents;
		d.zeros = f->end.zeros;
		d.raw_bytes = f->end.raw_bytes;
		d.zero_bytes = f->end.zero_bytes;
		d.digest = f->end.digest;
		m.kind_case = HCA__REP_FRAME__KIND_END;
		m.end = &d;
	}
	mlen = hca__rep_frame__pack(&m, p);
	p += mlen;
	if (en->dlen) {
		*p++ = (uint8_t)(DATA_FIELD << 3 | 2);
		p += put_varint(p, en->dlen);
	}
	en->hlen = (size_t)(p - en->hdr);
	put32be(en->hdr, (uint32_t)(en->hlen - REP_PREFIX_LEN + en->dlen));
}

/* Cheap on data: the first non-zero word ends it. */
static bool all_zero(const uint8_t *p, size_t n)
{
	uint64_t acc = 0, w;
	size_t i = 0;

	for (; i + 64 <= n; i += 64) {
		for (size_t k = 0; k < 64; k += 8) {
			memcpy(&w, p + i + k, sizeof(w));
			acc |= w;
		}
		if (acc)
			return false;
	}
	for (; i < n; i++)
		acc |= p[i];
	return acc == 0;
}

void rep_enc_zero(struct rep_enc *en, uint64_t seq, uint32_t disk, uint64_t off, uint64_t len)
{
	memset(&en->f, 0, sizeof(en->f));
	en->f.seq = seq;
	en->f.kind = REP_KIND_ZERO;
	en->f.disk = disk;
	en->f.offset = off;
	en->f.length = len;
	en->data = NULL;
	en->dlen = 0;
	enc_put(en);
}

/* zstd into @out, bounded at @cap so output that would not be kept stops it
 * early; 0 when it did not fit. */
static size_t zstd_try(ZSTD_CCtx *cc, uint8_t *out, size_t cap, const void *buf, size_t len)
{
	size_t n;

	ZSTD_CCtx_reset(cc, ZSTD_reset_session_only);
	if (ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, REP_ZSTD_LEVEL)))
		return 0;
	n = ZSTD_compress2(cc, out, cap, buf, len);
	return ZSTD_isError(n) ? 0 : n;
}

/* Slices spread over the extent: do they shrink by a sixteenth? */
static bool probe(ZSTD_CCtx *cc, const uint8_t *buf, size_t len)
{
	uint8_t sample[REP_PROBE_SLICES * REP_PROBE_SLICE], out[sizeof(sample)];
	size_t step = len / REP_PROBE_SLICES;

	for (unsigned i = 0; i < REP_PROBE_SLICES; i++)
		memcpy(sample + i * REP_PROBE_SLICE, buf + i * step, REP_PROBE_SLICE);
	return zstd_try(cc, out, sizeof(sample) - sizeof(sample) / 16, sample, sizeof(sample)) > 0;
}

enum rep_plan rep_enc_plan(ZSTD_CCtx *cc, const void *buf, size_t len)
{
	if (all_zero(buf, len))
		return REP_PLAN_ZERO;
	if (!cc || (len >= REP_PROBE_MIN && !probe(cc, buf, len)))
		return REP_PLAN_RAW;
	return REP_PLAN_ZSTD;
}

int rep_enc_extent(struct rep_enc *en, enum rep_plan plan, ZSTD_CCtx *cc, uint8_t *scratch,
		   uint64_t seq, uint32_t disk, uint64_t off, const void *buf, size_t len)
{
	size_t z = 0;

	if (!len || len > REP_EXTENT_MAX || !buf || (plan == REP_PLAN_ZSTD && (!cc || !scratch)))
		return -EINVAL;
	if (plan == REP_PLAN_ZERO) {
		rep_enc_zero(en, seq, disk, off, len);
		return 0;
	}
	memset(&en->f, 0, sizeof(en->f));
	en->f.seq = seq;
	en->f.kind = REP_KIND_EXTENT;
	en->f.disk = disk;
	en->f.offset = off;
	en->f.length = len;
	en->f.crc = chan_crc32c(buf, len);
	en->f.codec = REP_CODEC_NONE;
	en->data = buf;
	en->dlen = len;
	if (plan == REP_PLAN_ZSTD)
		z = zstd_try(cc, scratch, REP_ZSTD_KEEP(len), buf, len);
	if (z) {
		en->f.codec = REP_CODEC_ZSTD;
		en->data = scratch;
		en->dlen = z;
	}
	en->f.data = en->data;
	en->f.dlen = en->dlen;
	enc_put(en);
	return 0;
}

void rep_enc_end(struct rep_enc *en, const struct rep_tally *t)
{
	memset(&en->f, 0, sizeof(en->f));
	en->f.seq = t->next_seq;
	en->f.kind = REP_KIND_END;
	en->f.end = t->sum;
	en->data = NULL;
	en->dlen = 0;
	enc_put(en);
}

/* ---- framing ---- */

static uint32_t get32be(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The prefix is in: bound the frame, then make room for exactly it. */
static int framer_size(struct rep_framer *fr, struct rep_err *e)
{
	uint32_t len = get32be(fr->pfx);
	uint8_t *p;

	if (len > REP_FRAME_MAX)
		return fail(e, -EMSGSIZE, "a frame of %u bytes: the most is %u", len,
			    REP_FRAME_MAX);
	if (!len)
		return fail(e, -EPROTO, "an empty frame");
	if (fr->cap < len && !fr->fixed) {
		p = realloc(fr->buf, len);
		if (!p)
			return fail(e, -ENOMEM, "no memory for a frame of %u bytes", len);
		fr->buf = p;
		fr->cap = len;
	}
	fr->need = len;
	fr->have = 0;
	return 0;
}

ssize_t rep_framer_feed(struct rep_framer *fr, const uint8_t *p, size_t n, struct rep_err *e)
{
	size_t used = 0, k;
	int rc;

	if (fr->whole)
		return 0;
	while (fr->npfx < REP_PREFIX_LEN && used < n)
		fr->pfx[fr->npfx++] = p[used++];
	if (fr->npfx < REP_PREFIX_LEN)
		return (ssize_t)used;
	if (!fr->need) {
		rc = framer_size(fr, e);
		if (rc < 0)
			return rc;
	}
	if (fr->cap < fr->need)
		return (ssize_t)used; /* fixed: the caller installs a buffer */
	k = n - used < fr->need - fr->have ? n - used : fr->need - fr->have;
	memcpy(fr->buf + fr->have, p + used, k);
	fr->have += k;
	fr->whole = fr->have == fr->need;
	return (ssize_t)(used + k);
}

size_t rep_frame_whole(const uint8_t *p, size_t n)
{
	uint32_t len;

	if (n < REP_PREFIX_LEN)
		return 0;
	len = get32be(p);
	if (!len || len > REP_FRAME_MAX || len > n - REP_PREFIX_LEN)
		return 0;
	return REP_PREFIX_LEN + len;
}

bool rep_framer_wants(const struct rep_framer *fr)
{
	return fr->npfx == REP_PREFIX_LEN && fr->need && fr->cap < fr->need;
}

void rep_framer_next(struct rep_framer *fr)
{
	fr->npfx = 0;
	fr->need = fr->have = 0;
	fr->whole = false;
}

bool rep_framer_idle(const struct rep_framer *fr)
{
	return fr->npfx == 0 && !fr->whole;
}

void rep_framer_free(struct rep_framer *fr)
{
	free(fr->buf);
	fr->buf = NULL;
	fr->cap = 0;
	rep_framer_next(fr);
}

/* ---- parsing ---- */

/* A varint of at most @max bytes at *@p (before @end); false if cut or longer. */
static bool get_varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; *p < end && shift < 7 * max && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* One top-level field at *@q, which moves past it; a length-delimited
 * one's bytes in *@val (*@vlen). */
static int field_skip(const uint8_t **q, const uint8_t *end, uint64_t *field,
		      const uint8_t **val, uint64_t *vlen, struct rep_err *e)
{
	uint64_t key, v;

	*val = NULL;
	if (!get_varint(q, end, 5, &key) || !(key >> 3))
		return fail(e, -EPROTO, "a frame with a bad field key");
	*field = key >> 3;
	if (*field == DATA_FIELD && (key & 7) != 2)
		return fail(e, -EPROTO, "a frame whose data is not bytes");
	switch (key & 7) {
	case 0:
		if (!get_varint(q, end, 10, &v))
			return fail(e, -EPROTO, "a frame with a cut number");
		return 0;
	case 1:
	case 5:
		v = (key & 7) == 1 ? 8 : 4;
		break;
	case 2: /* protobuf-c refuses length prefixes over 5 bytes: so do we */
		if (!get_varint(q, end, 5, &v))
			return fail(e, -EPROTO, "a frame with a cut length");
		break;
	default:
		return fail(e, -EPROTO, "a frame with a field of wire type %u",
			    (unsigned)(key & 7));
	}
	if (v > (uint64_t)(end - *q))
		return fail(e, -EPROTO, "a frame with a field past its end");
	*val = *q;
	*vlen = v;
	*q += v;
	return 0;
}

/*
 * The frame's metadata (every field but the data) copied into @meta, the
 * data located in place: protobuf-c would copy an extent's bytes out.
 */
static int split(const uint8_t *p, size_t n, uint8_t *meta, size_t *mlen, const uint8_t **data,
		 size_t *dlen, bool *has_data, struct rep_err *e)
{
	const uint8_t *q = p, *end = p + n;

	*mlen = 0;
	*has_data = false;
	while (q < end) {
		const uint8_t *start = q, *val;
		uint64_t field = 0, vlen = 0;
		int rc = field_skip(&q, end, &field, &val, &vlen, e);

		if (rc < 0)
			return rc;
		if (field == DATA_FIELD) {
			if (*has_data)
				return fail(e, -EPROTO, "a frame with two data fields");
			*data = val;
			*dlen = (size_t)vlen;
			*has_data = true;
			continue;
		}
		if ((size_t)(q - start) > REP_META_MAX - *mlen)
			return fail(e, -EMSGSIZE, "a frame with over %u bytes of metadata",
				    REP_META_MAX);
		memcpy(meta + *mlen, start, (size_t)(q - start));
		*mlen += (size_t)(q - start);
	}
	return 0;
}

static int parse_extent(const Hca__RepExtent *x, bool has_data, struct rep_frame *f,
			struct rep_err *e)
{
	f->kind = REP_KIND_EXTENT;
	f->disk = x->disk;
	f->offset = x->offset;
	f->length = x->length;
	f->crc = x->crc;
	if (!x->length)
		return fail(e, -ERANGE, "frame %llu: an empty extent", (unsigned long long)f->seq);
	if (x->length > REP_EXTENT_MAX)
		return fail(e, -EMSGSIZE, "frame %llu: an extent of %u bytes: the most is %u",
			    (unsigned long long)f->seq, x->length, REP_EXTENT_MAX);
	if (x->codec == HCA__REP_CODEC__REP_CODEC_NONE) {
		f->codec = REP_CODEC_NONE;
		if (!has_data || f->dlen != x->length)
			return fail(e, -EBADMSG, "frame %llu: %zu raw bytes for an extent of %u",
				    (unsigned long long)f->seq, f->dlen, x->length);
		return 0;
	}
	if (x->codec != HCA__REP_CODEC__REP_CODEC_ZSTD)
		return fail(e, -EPROTO, "frame %llu: unknown codec %d", (unsigned long long)f->seq,
			    (int)x->codec);
	f->codec = REP_CODEC_ZSTD;
	if (!has_data || f->dlen > ZSTD_COMPRESSBOUND(x->length))
		return fail(e, -EBADMSG, "frame %llu: %zu zstd bytes for an extent of %u",
			    (unsigned long long)f->seq, f->dlen, x->length);
	return 0;
}

static int parse_kind(const Hca__RepFrame *m, bool has_data, struct rep_frame *f,
		      struct rep_err *e)
{
	f->seq = m->seq;
	if (m->kind_case == HCA__REP_FRAME__KIND_EXTENT)
		return parse_extent(m->extent, has_data, f, e);
	if (has_data)
		return fail(e, -EPROTO, "frame %llu: data on a frame that is not an extent",
			    (unsigned long long)f->seq);
	if (m->kind_case == HCA__REP_FRAME__KIND_ZERO) {
		f->kind = REP_KIND_ZERO;
		f->disk = m->zero->disk;
		f->offset = m->zero->offset;
		f->length = m->zero->length;
		if (!f->length)
			return fail(e, -ERANGE, "frame %llu: an empty zero range",
				    (unsigned long long)f->seq);
		return 0;
	}
	if (m->kind_case == HCA__REP_FRAME__KIND_END) {
		f->kind = REP_KIND_END;
		f->end.extents = m->end->extents;
		f->end.zeros = m->end->zeros;
		f->end.raw_bytes = m->end->raw_bytes;
		f->end.zero_bytes = m->end->zero_bytes;
		f->end.digest = m->end->digest;
		return 0;
	}
	return fail(e, -EPROTO, "frame %llu of no known kind", (unsigned long long)f->seq);
}

int rep_frame_parse(const uint8_t *p, size_t n, struct rep_frame *f, struct rep_err *e)
{
	uint8_t meta[REP_META_MAX];
	size_t mlen = 0;
	bool has_data = false;
	Hca__RepFrame *m;
	int rc;

	memset(f, 0, sizeof(*f));
	if (n > REP_FRAME_MAX)
		return fail(e, -EMSGSIZE, "a frame of %zu bytes: the most is %u", n, REP_FRAME_MAX);
	rc = split(p, n, meta, &mlen, &f->data, &f->dlen, &has_data, e);
	if (rc < 0)
		return rc;
	m = hca__rep_frame__unpack(NULL, mlen, meta);
	if (!m)
		return fail(e, -EPROTO, "an undecodable frame");
	rc = parse_kind(m, has_data, f, e);
	hca__rep_frame__free_unpacked(m, NULL);
	return rc;
}

int rep_frame_check(const struct rep_cycle *c, const struct rep_frame *f, struct rep_err *e)
{
	int rc;

	if (f->kind == REP_KIND_END)
		return 0;
	rc = rep_cycle_range(c, f->disk, f->offset, f->length, e);
	if (rc < 0) {
		char line[REP_MSG_MAX];

		snprintf(line, sizeof(line), "%s", e ? e->msg : "");
		return fail(e, rc, "frame %llu: %s", (unsigned long long)f->seq, line);
	}
	return 0;
}

int rep_frame_inflate(struct rep_frame *f, ZSTD_DCtx *dc, uint8_t *out, struct rep_err *e)
{
	unsigned long long cs;
	size_t n;

	if (f->kind != REP_KIND_EXTENT)
		return 0;
	if (f->codec == REP_CODEC_ZSTD) {
		cs = ZSTD_getFrameContentSize(f->data, f->dlen);
		if (cs == ZSTD_CONTENTSIZE_ERROR || (cs != ZSTD_CONTENTSIZE_UNKNOWN &&
						     cs != f->length))
			return fail(e, -EBADMSG, "frame %llu: zstd data that is not %llu bytes",
				    (unsigned long long)f->seq, (unsigned long long)f->length);
		n = ZSTD_decompressDCtx(dc, out, f->length, f->data, f->dlen);
		if (ZSTD_isError(n) || n != f->length)
			return fail(e, -EBADMSG, "frame %llu: corrupt zstd data (%s)",
				    (unsigned long long)f->seq,
				    ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
		f->codec = REP_CODEC_NONE;
		f->data = out;
		f->dlen = n;
	}
	if (chan_crc32c(f->data, f->dlen) != f->crc)
		return fail(e, -EILSEQ, "frame %llu: checksum mismatch (%llu bytes at %llu of disk %u)",
			    (unsigned long long)f->seq, (unsigned long long)f->length,
			    (unsigned long long)f->offset, f->disk);
	return 0;
}

/* ---- the decoder, all at once ---- */

struct rep_dec {
	struct rep_cycle c;
	struct rep_tally t;
	struct rep_framer fr;
	ZSTD_DCtx *dc;
	uint8_t *out; /* REP_EXTENT_MAX, at the first zstd extent */
	rep_frame_fn fn;
	void *opaque;
	int err;
	struct rep_err e;
};

struct rep_dec *rep_dec_new(const uint8_t *hdr, size_t len, rep_frame_fn fn, void *opaque,
			    struct rep_err *e)
{
	struct rep_dec *d = calloc(1, sizeof(*d));
	int rc = -ENOMEM;

	if (!d) {
		fail(e, rc, "no memory for a decoder");
		goto out;
	}
	rc = rep_cycle_decode(hdr, len, &d->c, e);
	if (rc < 0)
		goto out;
	rep_tally_init(&d->t, hdr, len);
	d->fn = fn;
	d->opaque = opaque;
	return d;
out:
	free(d);
	errno = -rc;
	return NULL;
}

static int one_frame(struct rep_dec *d, const uint8_t *p, size_t n)
{
	struct rep_frame f;
	int rc = rep_frame_parse(p, n, &f, &d->e);

	if (rc == 0)
		rc = rep_frame_check(&d->c, &f, &d->e);
	if (rc == 0)
		rc = rep_tally_add(&d->t, &f, &d->e);
	if (rc == 0 && f.kind == REP_KIND_EXTENT && f.codec == REP_CODEC_ZSTD) {
		if (!d->dc)
			d->dc = ZSTD_createDCtx();
		if (!d->out)
			d->out = malloc(REP_EXTENT_MAX);
		if (!d->dc || !d->out)
			rc = fail(&d->e, -ENOMEM, "no memory to decompress");
	}
	if (rc == 0)
		rc = rep_frame_inflate(&f, d->dc, d->out, &d->e);
	if (rc == 0) {
		rc = d->fn(&f, d->opaque);
		if (rc < 0)
			fail(&d->e, rc, "frame %llu refused: %s", (unsigned long long)f.seq,
			     strerror(-rc));
	}
	return rc;
}

int rep_dec_feed(struct rep_dec *d, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (!d->err && len) {
		size_t whole = rep_framer_idle(&d->fr) ? rep_frame_whole(p, len) : 0;
		ssize_t n;

		if (whole) { /* in place, as rep_rx.c does */
			d->err = one_frame(d, p + REP_PREFIX_LEN, whole - REP_PREFIX_LEN);
			p += whole;
			len -= whole;
			continue;
		}
		n = rep_framer_feed(&d->fr, p, len, &d->e);
		if (n < 0) {
			d->err = (int)n;
			break;
		}
		p += n;
		len -= (size_t)n;
		if (!d->fr.whole)
			continue;
		d->err = one_frame(d, d->fr.buf, d->fr.need);
		rep_framer_next(&d->fr);
	}
	return d->err;
}

int rep_dec_finish(struct rep_dec *d)
{
	if (d->err)
		return d->err;
	if (!rep_framer_idle(&d->fr))
		d->err = fail(&d->e, -EPROTO, "the stream ended inside a frame");
	else if (!d->t.ended)
		d->err = fail(&d->e, -EPROTO, "the stream ended before the cycle's end frame");
	return d->err;
}

const char *rep_dec_error(const struct rep_dec *d)
{
	return d->err ? d->e.msg : "";
}

const struct rep_cycle *rep_dec_cycle(const struct rep_dec *d)
{
	return &d->c;
}

void rep_dec_free(struct rep_dec *d)
{
	if (!d)
		return;
	rep_framer_free(&d->fr);
	ZSTD_freeDCtx(d->dc);
	free(d->out);
	free(d);
}
