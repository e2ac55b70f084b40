/*
 * test_rep_wire: the replica stream's codec (replica/rep_wire.h): round
 * trips cut at every byte, the compression decision, every bound refused
 * with its errno, corruption and reordering caught by the checksums, the
 * sequence and the digest, and a golden encoding of a small cycle.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "replica/rep_wire.h"
#include "tests/unit/util_golden.h"

#define DISK0 (64ull << 20)
#define DISK1 (1ull << 40)

/* ---- helpers ---- */

struct bytes {
	uint8_t *p;
	size_t n;
};

static void put(struct bytes *b, const void *p, size_t n)
{
	b->p = realloc(b->p, b->n + n + 1);
	assert_non_null(b->p);
	memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void put_enc(struct bytes *b, const struct rep_enc *en)
{
	put(b, en->hdr, en->hlen);
	if (en->dlen)
		put(b, en->data, en->dlen);
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(next_rand() >> 24);
}

static void fill_text(uint8_t *p, size_t n)
{
	static const char *w[] = { "replica ", "journal ", "block ", "INFO ", "cycle=", "42 ",
				   "disk ", "error\n", "ok " };
	size_t i = 0;

	while (i < n) {
		const char *s = w[next_rand() % 9];

		for (size_t k = 0; s[k] && i < n; k++)
			p[i++] = (uint8_t)s[k];
	}
}

static void cycle_make(struct rep_cycle *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->vm, sizeof(c->vm), "web1");
	c->relation = 0x1122334455667788ull;
	c->incarnation = 77;
	c->cycle = 5;
	c->base = 4;
	c->ndisks = 2;
	snprintf(c->disks[0].name, sizeof(c->disks[0].name), "root");
	c->disks[0].size = DISK0;
	snprintf(c->disks[1].name, sizeof(c->disks[1].name), "data");
	c->disks[1].size = DISK1;
}

static void header_make(struct bytes *h)
{
	struct rep_cycle c;
	struct rep_err e;

	cycle_make(&c);
	memset(h, 0, sizeof(*h));
	assert_int_equal(rep_cycle_encode(&c, &h->p, &h->n, &e), 0);
}

/* What the decoder handed over, copied. */
struct got {
	unsigned n;
	struct rep_frame f[64];
	uint8_t *data[64];
	int refuse_at; /* the callback refuses this seq */
};

static int on_frame(const struct rep_frame *f, void *opaque)
{
	struct got *g = opaque;

	if (g->refuse_at && f->seq == (uint64_t)g->refuse_at)
		return -ENOSPC;
	assert_true(g->n < 64);
	g->f[g->n] = *f;
	g->data[g->n] = NULL;
	if (f->dlen) {
		g->data[g->n] = malloc(f->dlen);
		memcpy(g->data[g->n], f->data, f->dlen);
	}
	g->n++;
	return 0;
}

static void got_free(struct got *g)
{
	for (unsigned i = 0; i < g->n; i++)
		free(g->data[i]);
	memset(g, 0, sizeof(*g));
}

/* Decode @s (cut in pieces of @step bytes, 0: at once) after header @h. */
static int decode(const struct bytes *h, const struct bytes *s, size_t step, struct got *g,
		  char *why, size_t whylen)
{
	struct rep_err e;
	struct rep_dec *d = rep_dec_new(h->p, h->n, on_frame, g, &e);
	int rc = 0;

	assert_non_null(d);
	for (size_t off = 0; off < s->n && rc == 0;) {
		size_t k = step && s->n - off > step ? step : s->n - off;

		rc = rep_dec_feed(d, s->p + off, k);
		off += k;
	}
	if (rc == 0)
		rc = rep_dec_finish(d);
	if (why)
		snprintf(why, whylen, "%s", rep_dec_error(d));
	rep_dec_free(d);
	return rc;
}

/* What the stream's worker does: plan, then encode. */
static int enc(struct rep_enc *en, ZSTD_CCtx *cc, uint8_t *scratch, uint64_t seq, uint32_t disk,
	       uint64_t off, const void *buf, size_t len)
{
	enum rep_plan plan = rep_enc_plan(cc, buf, len);

	return rep_enc_extent(en, plan, cc, scratch, seq, disk, off, buf, len);
}

/* The test cycle: text, random, zeros, a zero range, random again, the end. */
struct sample {
	uint8_t text[200000], rnd[70000], zeros[8192], small[3];
	struct bytes hdr, stream;
	struct rep_tally t;
	uint64_t frame_at[8]; /* where each frame starts in the stream */
	unsigned nframes;
};

static void sample_add(struct sample *s, struct rep_enc *en)
{
	struct rep_err e;

	s->frame_at[s->nframes++] = s->stream.n;
	assert_int_equal(rep_tally_add(&s->t, &en->f, &e), 0);
	put_enc(&s->stream, en);
}

static struct sample *sample_make(void)
{
	struct sample *s = calloc(1, sizeof(*s));
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	uint8_t *scratch = malloc(REP_EXTENT_MAX);
	struct rep_enc en;

	assert_non_null(s);
	fill_text(s->text, sizeof(s->text));
	fill_random(s->rnd, sizeof(s->rnd));
	memcpy(s->small, "abc", 3);
	header_make(&s->hdr);
	rep_tally_init(&s->t, s->hdr.p, s->hdr.n);
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 4096, s->text, sizeof(s->text)), 0);
	assert_int_equal(en.f.codec, REP_CODEC_ZSTD);
	sample_add(s, &en);
	assert_int_equal(enc(&en, cc, scratch, 2, 1, DISK1 - sizeof(s->rnd), s->rnd,
					sizeof(s->rnd)), 0);
	assert_int_equal(en.f.codec, REP_CODEC_NONE);
	sample_add(s, &en);
	assert_int_equal(enc(&en, cc, scratch, 3, 0, 0, s->zeros, sizeof(s->zeros)), 0);
	assert_int_equal(en.f.kind, REP_KIND_ZERO);
	sample_add(s, &en);
	rep_enc_zero(&en, 4, 1, 1ull << 30, 1ull << 32);
	sample_add(s, &en);
	assert_int_equal(enc(&en, cc, scratch, 5, 0, 7, s->small, 3), 0);
	sample_add(s, &en);
	rep_enc_end(&en, &s->t);
	s->frame_at[s->nframes++] = s->stream.n;
	put_enc(&s->stream, &en);
	ZSTD_freeCCtx(cc);
	free(scratch);
	return s;
}

static void sample_free(struct sample *s)
{
	free(s->hdr.p);
	free(s->stream.p);
	free(s);
}

static void check_sample(const struct sample *s, const struct got *g)
{
	assert_int_equal(g->n, 6);
	assert_int_equal(g->f[0].kind, REP_KIND_EXTENT);
	assert_true(g->f[0].offset == 4096 && g->f[0].length == sizeof(s->text));
	assert_memory_equal(g->data[0], s->text, sizeof(s->text));
	assert_int_equal(g->f[1].disk, 1);
	assert_memory_equal(g->data[1], s->rnd, sizeof(s->rnd));
	assert_int_equal(g->f[2].kind, REP_KIND_ZERO);
	assert_true(g->f[2].length == sizeof(s->zeros));
	assert_int_equal(g->f[3].kind, REP_KIND_ZERO);
	assert_true(g->f[3].length == 1ull << 32);
	assert_memory_equal(g->data[4], "abc", 3);
	assert_int_equal(g->f[5].kind, REP_KIND_END);
	assert_true(g->f[5].end.extents == 3 && g->f[5].end.zeros == 2);
	assert_true(g->f[5].end.raw_bytes == sizeof(s->text) + sizeof(s->rnd) + 3);
}

/* A lone frame passed when the decoder only missed the end after it. */
static int passed(int rc, const char *why)
{
	return rc == -EPROTO && strstr(why, "before the cycle's end") ? 0 : rc;
}

/* A frame built by hand with protobuf-c (data included), prefixed. */
static void frame_raw(struct bytes *b, const Hca__RepFrame *m)
{
	size_t n = hca__rep_frame__get_packed_size(m);
	uint8_t *p = malloc(n + 4);

	hca__rep_frame__pack(m, p + 4);
	p[0] = (uint8_t)(n >> 24);
	p[1] = (uint8_t)(n >> 16);
	p[2] = (uint8_t)(n >> 8);
	p[3] = (uint8_t)n;
	put(b, p, n + 4);
	free(p);
}

/* One extent frame by hand, first of the cycle; the decoder's verdict. */
static int one_extent(uint32_t disk, uint64_t off, uint32_t len, Hca__RepCodec codec,
		      const void *data, size_t dlen, char *why)
{
	Hca__RepFrame m = HCA__REP_FRAME__INIT;
	Hca__RepExtent x = HCA__REP_EXTENT__INIT;
	struct bytes h, s = { 0 };
	struct got g = { 0 };
	int rc;

	header_make(&h);
	m.seq = 1;
	m.kind_case = HCA__REP_FRAME__KIND_EXTENT;
	m.extent = &x;
	x.disk = disk;
	x.offset = off;
	x.length = len;
	x.codec = codec;
	x.crc = data && dlen == len ? chan_crc32c(data, dlen) : 0;
	m.data.data = (uint8_t *)data;
	m.data.len = dlen;
	frame_raw(&s, &m);
	rc = passed(decode(&h, &s, 0, &g, why, REP_MSG_MAX), why);
	got_free(&g);
	free(h.p);
	free(s.p);
	return rc;
}

/* The sample's frames @order (indexes, -1 ends) into a new stream. */
static void reassemble(const struct sample *s, const int *order, struct bytes *out)
{
	memset(out, 0, sizeof(*out));
	for (; *order >= 0; order++) {
		unsigned i = (unsigned)*order;
		size_t end = i + 1 < s->nframes ? s->frame_at[i + 1] : s->stream.n;

		put(out, s->stream.p + s->frame_at[i], end - s->frame_at[i]);
	}
}

static int decode_order(const struct sample *s, const int *order, char *why)
{
	struct bytes b;
	struct got g = { 0 };
	int rc;

	reassemble(s, order, &b);
	rc = decode(&s->hdr, &b, 0, &g, why, REP_MSG_MAX);
	got_free(&g);
	free(b.p);
	return rc;
}

/* ---- tests ---- */

static void header_round_trip_and_bounds(void **state)
{
	Hca__RepCycleHeader h = HCA__REP_CYCLE_HEADER__INIT;
	Hca__RepDisk d = HCA__REP_DISK__INIT, *dp[REP_DISKS_MAX + 1];
	struct rep_cycle c, back;
	struct rep_err e;
	uint8_t buf[REP_HDR_MAX + 1], *out;
	size_t n;

	cycle_make(&c);
	assert_int_equal(rep_cycle_encode(&c, &out, &n, &e), 0);
	assert_int_equal(rep_cycle_decode(out, n, &back, &e), 0);
	assert_memory_equal(&c, &back, sizeof(c));
	free(out);

	c.vm[0] = '\0';
	assert_int_equal(rep_cycle_encode(&c, &out, &n, &e), -EINVAL);
	assert_null(out);
	cycle_make(&c);
	c.ndisks = 0;
	assert_int_equal(rep_cycle_check(&c, &e), -EINVAL);
	cycle_make(&c);
	c.full = true;
	assert_int_equal(rep_cycle_check(&c, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "full copy"));
	cycle_make(&c);
	snprintf(c.disks[1].name, sizeof(c.disks[1].name), "root");
	assert_int_equal(rep_cycle_check(&c, &e), -EINVAL);
	cycle_make(&c);
	c.disks[0].size = 0;
	assert_int_equal(rep_cycle_check(&c, &e), -EINVAL);
	cycle_make(&c);
	c.cycle = 0;
	assert_int_equal(rep_cycle_check(&c, &e), -EINVAL);

	/* by hand: what a peer could send */
	h.format = REP_FORMAT;
	h.vm = "web1";
	h.cycle = 1;
	d.name = "root";
	d.size = 1 << 20;
	for (unsigned i = 0; i <= REP_DISKS_MAX; i++)
		dp[i] = &d;
	h.disks = dp;
	h.n_disks = REP_DISKS_MAX + 1;
	n = hca__rep_cycle_header__pack(&h, buf);
	assert_int_equal(rep_cycle_decode(buf, n, &back, &e), -EPROTO);
	h.n_disks = 1;
	h.format = REP_FORMAT + 1;
	n = hca__rep_cycle_header__pack(&h, buf);
	assert_int_equal(rep_cycle_decode(buf, n, &back, &e), -EPROTONOSUPPORT);
	assert_non_null(strstr(e.msg, "format 2"));
	h.format = 0;
	n = hca__rep_cycle_header__pack(&h, buf);
	assert_int_equal(rep_cycle_decode(buf, n, &back, &e), -EPROTO);
	h.format = REP_FORMAT;
	h.vm = "a-name-of-fifty-characters-is-two-more-than-allowe";
	n = hca__rep_cycle_header__pack(&h, buf);
	assert_int_equal(rep_cycle_decode(buf, n, &back, &e), -EINVAL);
	h.vm = "web 1";
	n = hca__rep_cycle_header__pack(&h, buf);
	assert_int_equal(rep_cycle_decode(buf, n, &back, &e), -EINVAL);
	memset(buf, 0xff, sizeof(buf));
	assert_int_equal(rep_cycle_decode(buf, 10, &back, &e), -EPROTO);
	assert_int_equal(rep_cycle_decode(buf, sizeof(buf), &back, &e), -EMSGSIZE);
}

static void round_trip_cut_at_every_byte(void **state)
{
	struct sample *s = sample_make();
	static const size_t steps[] = { 0, 1, 2, 3, 5, 7, 13, 4096, 65536 };
	struct got g = { 0 };
	char why[REP_MSG_MAX];

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		assert_int_equal(decode(&s->hdr, &s->stream, steps[i], &g, why, sizeof(why)), 0);
		check_sample(s, &g);
		got_free(&g);
	}
	sample_free(s);
}

/* Our frames are exactly what protobuf-c writes with the data in the message. */
static void frames_are_protobuf_c_bytes(void **state)
{
	struct sample *s = sample_make();

	for (unsigned i = 0; i < s->nframes; i++) {
		const uint8_t *p = s->stream.p + s->frame_at[i] + REP_PREFIX_LEN;
		size_t n = (i + 1 < s->nframes ? s->frame_at[i + 1] : s->stream.n) -
			   s->frame_at[i] - REP_PREFIX_LEN;
		Hca__RepFrame *m = hca__rep_frame__unpack(NULL, n, p);
		uint8_t *again;

		assert_non_null(m);
		assert_true(hca__rep_frame__get_packed_size(m) == n);
		again = malloc(n);
		hca__rep_frame__pack(m, again);
		assert_memory_equal(again, p, n);
		free(again);
		hca__rep_frame__free_unpacked(m, NULL);
	}
	sample_free(s);
}

static void compression_decision(void **state)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	uint8_t *buf = malloc(REP_EXTENT_MAX), *scratch = malloc(REP_EXTENT_MAX);
	struct rep_enc en, en2;
	size_t page = 4096;

	fill_text(buf, REP_EXTENT_MAX);
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.codec, REP_CODEC_ZSTD);
	assert_true(en.dlen <= REP_ZSTD_KEEP(REP_EXTENT_MAX));
	assert_ptr_equal(en.data, scratch);
	/* deterministic: the same bytes twice */
	assert_int_equal(enc(&en2, cc, scratch, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_true(en.hlen == en2.hlen && en.dlen == en2.dlen);
	assert_memory_equal(en.hdr, en2.hdr, en.hlen);
	/* no context: raw */
	assert_int_equal(enc(&en, NULL, NULL, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.codec, REP_CODEC_NONE);

	fill_random(buf, REP_EXTENT_MAX);
	assert_int_equal(rep_enc_plan(cc, buf, REP_EXTENT_MAX), REP_PLAN_RAW); /* not even tried */
	assert_int_equal(rep_enc_plan(cc, buf, REP_PROBE_MIN - 1), REP_PLAN_ZSTD); /* small: tried */
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.codec, REP_CODEC_NONE);
	assert_ptr_equal(en.data, buf);
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 0, buf, REP_PROBE_MIN - 1), 0);
	assert_int_equal(en.f.codec, REP_CODEC_NONE);
	/* one page in ten compressible: the probe says try, but it saves less
	 * than an eighth: raw */
	for (size_t o = 0; o < REP_EXTENT_MAX; o += page)
		if ((o / page) % 10 == 0)
			fill_text(buf + o, page);
	assert_int_equal(rep_enc_plan(cc, buf, REP_EXTENT_MAX), REP_PLAN_ZSTD);
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.codec, REP_CODEC_NONE);
	/* half of them: compressed */
	for (size_t o = 0; o < REP_EXTENT_MAX; o += page)
		if ((o / page) % 2 == 0)
			fill_text(buf + o, page);
	assert_int_equal(enc(&en, cc, scratch, 1, 0, 0, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.codec, REP_CODEC_ZSTD);

	memset(buf, 0, REP_EXTENT_MAX);
	assert_int_equal(enc(&en, cc, scratch, 9, 1, 8192, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.kind, REP_KIND_ZERO);
	assert_true(en.f.length == REP_EXTENT_MAX && en.f.offset == 8192 && en.dlen == 0);
	buf[REP_EXTENT_MAX - 1] = 1; /* the last byte counts */
	assert_int_equal(enc(&en, cc, scratch, 9, 1, 8192, buf, REP_EXTENT_MAX), 0);
	assert_int_equal(en.f.kind, REP_KIND_EXTENT);

	assert_int_equal(rep_enc_extent(&en, REP_PLAN_RAW, cc, scratch, 1, 0, 0, buf, 0), -EINVAL);
	assert_int_equal(rep_enc_extent(&en, REP_PLAN_RAW, cc, scratch, 1, 0, 0, buf,
					REP_EXTENT_MAX + 1), -EINVAL);
	assert_int_equal(rep_enc_extent(&en, REP_PLAN_ZSTD, cc, NULL, 1, 0, 0, buf, 100), -EINVAL);
	ZSTD_freeCCtx(cc);
	free(buf);
	free(scratch);
}

static void frame_bounds(void **state)
{
	uint8_t *big = calloc(1, REP_EXTENT_MAX + 1);
	uint8_t z[64], zc[256];
	char why[REP_MSG_MAX];
	size_t zn;

	memset(big, 'x', REP_EXTENT_MAX + 1);
	assert_int_equal(one_extent(0, 0, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 16, why), 0);
	assert_int_equal(one_extent(0, 0, REP_EXTENT_MAX + 1, HCA__REP_CODEC__REP_CODEC_NONE, big,
				    REP_EXTENT_MAX + 1, why), -EMSGSIZE);
	assert_int_equal(one_extent(2, 0, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 16, why),
			 -ERANGE);
	assert_non_null(strstr(why, "disk index 2"));
	assert_int_equal(one_extent(0, DISK0 - 15, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 16,
				    why), -ERANGE);
	assert_non_null(strstr(why, "past the end of disk root"));
	assert_int_equal(one_extent(0, DISK0 - 16, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 16,
				    why), 0);
	assert_int_equal(one_extent(1, UINT64_MAX, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 16,
				    why), -ERANGE);
	assert_int_equal(one_extent(0, 0, 0, HCA__REP_CODEC__REP_CODEC_NONE, NULL, 0, why),
			 -ERANGE);
	assert_int_equal(one_extent(0, 0, 16, HCA__REP_CODEC__REP_CODEC_NONE, big, 15, why),
			 -EBADMSG);
	assert_int_equal(one_extent(0, 0, 16, (Hca__RepCodec)7, big, 16, why), -EPROTO);
	/* zstd data: the decompressed size must be the stated one */
	memset(z, 'a', sizeof(z));
	zn = ZSTD_compress(zc, sizeof(zc), z, sizeof(z), 1);
	assert_false(ZSTD_isError(zn));
	assert_int_equal(one_extent(0, 0, 64, HCA__REP_CODEC__REP_CODEC_ZSTD, zc, zn, why), -EILSEQ);
	assert_int_equal(one_extent(0, 0, 65, HCA__REP_CODEC__REP_CODEC_ZSTD, zc, zn, why),
			 -EBADMSG);
	assert_int_equal(one_extent(0, 0, 63, HCA__REP_CODEC__REP_CODEC_ZSTD, zc, zn, why),
			 -EBADMSG);
	assert_int_equal(one_extent(0, 0, 64, HCA__REP_CODEC__REP_CODEC_ZSTD, big, 20, why),
			 -EBADMSG);
	assert_int_equal(one_extent(0, 0, 64, HCA__REP_CODEC__REP_CODEC_ZSTD, NULL, 0, why),
			 -EBADMSG);
	free(big);
}

/* A good zstd extent (its CRC right) and a zero range's bounds, by hand. */
static int one_frame(const Hca__RepFrame *m, const void *tail, size_t tail_len, char *why)
{
	struct bytes h, s = { 0 };
	struct got g = { 0 };
	int rc;

	header_make(&h);
	frame_raw(&s, m);
	if (tail_len) { /* extra fields appended to the frame: fix its prefix */
		size_t n = s.n - 4 + tail_len;

		put(&s, tail, tail_len);
		s.p[0] = (uint8_t)(n >> 24);
		s.p[1] = (uint8_t)(n >> 16);
		s.p[2] = (uint8_t)(n >> 8);
		s.p[3] = (uint8_t)n;
	}
	rc = passed(decode(&h, &s, 0, &g, why, REP_MSG_MAX), why);
	got_free(&g);
	free(h.p);
	free(s.p);
	return rc;
}

static void zero_and_shape_bounds(void **state)
{
	Hca__RepFrame m = HCA__REP_FRAME__INIT;
	Hca__RepZero z = HCA__REP_ZERO__INIT;
	uint8_t tail[REP_META_MAX + 16];
	char why[REP_MSG_MAX];

	m.seq = 1;
	m.kind_case = HCA__REP_FRAME__KIND_ZERO;
	m.zero = &z;
	z.disk = 1;
	z.offset = DISK1 - 4096;
	z.length = 4096;
	assert_int_equal(one_frame(&m, NULL, 0, why), 0);
	z.length = 4097;
	assert_int_equal(one_frame(&m, NULL, 0, why), -ERANGE);
	z.length = 0;
	assert_int_equal(one_frame(&m, NULL, 0, why), -ERANGE);
	z.length = 1;
	z.disk = 5;
	assert_int_equal(one_frame(&m, NULL, 0, why), -ERANGE);
	z.disk = 0;
	m.data.data = (uint8_t *)"x";
	m.data.len = 1;
	assert_int_equal(one_frame(&m, NULL, 0, why), -EPROTO);
	m.data.len = 0;
	m.kind_case = HCA__REP_FRAME__KIND__NOT_SET;
	assert_int_equal(one_frame(&m, NULL, 0, why), -EPROTO);
	m.kind_case = HCA__REP_FRAME__KIND_ZERO;
	/* metadata over REP_META_MAX: an unknown field 14 of that many bytes */
	tail[0] = 14 << 3 | 2;
	tail[1] = (uint8_t)(REP_META_MAX | 0x80);
	tail[2] = (uint8_t)(REP_META_MAX >> 7);
	memset(tail + 3, 'u', REP_META_MAX);
	assert_int_equal(one_frame(&m, tail, REP_META_MAX + 3, why), -EMSGSIZE);
	/* two data fields; data as a number; a field cut short */
	memcpy(tail, "\x7a\x01x\x7a\x01y", 6);
	assert_int_equal(one_frame(&m, tail, 6, why), -EPROTO);
	memcpy(tail, "\x78\x01", 2);
	assert_int_equal(one_frame(&m, tail, 2, why), -EPROTO);
	memcpy(tail, "\x72\x09zz", 4);
	assert_int_equal(one_frame(&m, tail, 4, why), -EPROTO);
}

static void framing_bounds(void **state)
{
	struct bytes h, s = { 0 };
	struct got g = { 0 };
	char why[REP_MSG_MAX];
	uint8_t pfx[4];
	uint32_t n = REP_FRAME_MAX + 1;

	header_make(&h);
	pfx[0] = (uint8_t)(n >> 24);
	pfx[1] = (uint8_t)(n >> 16);
	pfx[2] = (uint8_t)(n >> 8);
	pfx[3] = (uint8_t)n;
	put(&s, pfx, 4);
	assert_int_equal(decode(&h, &s, 0, &g, why, sizeof(why)), -EMSGSIZE);
	memset(s.p, 0, 4);
	assert_int_equal(decode(&h, &s, 0, &g, why, sizeof(why)), -EPROTO);
	s.p[3] = 3;
	put(&s, "\xff\xff\xff", 3);
	assert_int_equal(decode(&h, &s, 0, &g, why, sizeof(why)), -EPROTO);
	/* in place only when whole and within bounds: else the framer says why */
	assert_int_equal(rep_frame_whole(s.p, 7), 7);
	assert_int_equal(rep_frame_whole(s.p, 6), 0);
	assert_int_equal(rep_frame_whole(s.p, 3), 0);
	memset(s.p, 0, 4);
	assert_int_equal(rep_frame_whole(s.p, 7), 0);
	memcpy(s.p, pfx, 4);
	assert_int_equal(rep_frame_whole(s.p, 7), 0);
	free(s.p);
	free(h.p);
}

static void corruption_detected(void **state)
{
	struct sample *s = sample_make();
	struct got g = { 0 };
	char why[REP_MSG_MAX];
	size_t at;

	/* a raw byte of the random extent (frame 2) */
	at = s->frame_at[2] - 100;
	s->stream.p[at] ^= 0x40;
	assert_int_equal(decode(&s->hdr, &s->stream, 0, &g, why, sizeof(why)), -EILSEQ);
	assert_non_null(strstr(why, "checksum mismatch"));
	assert_int_equal(g.n, 1); /* nothing of the bad frame was handed over */
	got_free(&g);
	s->stream.p[at] ^= 0x40;
	/* a byte of the zstd data (frame 1) */
	at = s->frame_at[1] - 1000;
	s->stream.p[at] ^= 0x01;
	assert_true(decode(&s->hdr, &s->stream, 0, &g, why, sizeof(why)) < 0);
	assert_int_equal(g.n, 0);
	got_free(&g);
	s->stream.p[at] ^= 0x01;
	/* the end's digest */
	s->stream.p[s->stream.n - 1] ^= 0x80;
	assert_int_equal(decode(&s->hdr, &s->stream, 0, &g, why, sizeof(why)), -EILSEQ);
	assert_non_null(strstr(why, "digest mismatch"));
	got_free(&g);
	s->stream.p[s->stream.n - 1] ^= 0x80;
	/* the same frames under another cycle's header */
	s->hdr.p[s->hdr.n - 1] ^= 0x01;
	assert_int_equal(decode(&s->hdr, &s->stream, 0, &g, why, sizeof(why)), -EILSEQ);
	got_free(&g);
	s->hdr.p[s->hdr.n - 1] ^= 0x01;
	assert_int_equal(decode(&s->hdr, &s->stream, 0, &g, why, sizeof(why)), 0);
	got_free(&g);
	sample_free(s);
}

static void reordering_detected(void **state)
{
	struct sample *s = sample_make();
	char why[REP_MSG_MAX];
	static const int swapped[] = { 0, 2, 1, 3, 4, 5, -1 };
	static const int dropped[] = { 0, 1, 2, 4, 5, -1 };
	static const int twice[] = { 0, 0, 1, 2, 3, 4, 5, -1 };
	static const int after[] = { 0, 1, 2, 3, 4, 5, 4, -1 };
	static const int no_end[] = { 0, 1, 2, 3, 4, -1 };
	static const int all[] = { 0, 1, 2, 3, 4, 5, -1 };
	struct bytes b;
	struct got g = { 0 };

	assert_int_equal(decode_order(s, all, why), 0);
	assert_int_equal(decode_order(s, swapped, why), -EILSEQ);
	assert_non_null(strstr(why, "frame 3 where 2 was due"));
	assert_int_equal(decode_order(s, dropped, why), -EILSEQ);
	assert_int_equal(decode_order(s, twice, why), -EILSEQ);
	assert_int_equal(decode_order(s, after, why), -EPROTO);
	assert_non_null(strstr(why, "after the cycle's end"));
	assert_int_equal(decode_order(s, no_end, why), -EPROTO);
	/* cut inside the last frame */
	reassemble(s, all, &b);
	b.n -= 2;
	assert_int_equal(decode(&s->hdr, &b, 0, &g, why, sizeof(why)), -EPROTO);
	assert_non_null(strstr(why, "inside a frame"));
	got_free(&g);
	free(b.p);
	sample_free(s);
}

static void callback_refusal_sticks(void **state)
{
	struct sample *s = sample_make();
	struct got g = { .refuse_at = 2 };
	char why[REP_MSG_MAX];

	assert_int_equal(decode(&s->hdr, &s->stream, 1000, &g, why, sizeof(why)), -ENOSPC);
	assert_int_equal(g.n, 1);
	assert_non_null(strstr(why, "frame 2 refused"));
	got_free(&g);
	sample_free(s);
}

static char *hex_line(char *o, const char *label, const uint8_t *p, size_t n)
{
	o += sprintf(o, "%s ", label);
	for (size_t i = 0; i < n; i++)
		o += sprintf(o, "%02x", p[i]);
	return o + sprintf(o, "\n");
}

/* A change here means nodes of different versions cannot replicate. */
static void golden_cycle(void **state)
{
	static const uint8_t raw[16] = "\x01\x23\x45\x67\x89\xab\xcd\xef\xfe\xdc\xba\x98\x76\x54\x32\x10";
	struct bytes h;
	struct rep_tally t;
	struct rep_enc en;
	struct rep_err e;
	char *text = calloc(1, 4096), *o = text;

	header_make(&h);
	o = hex_line(o, "header", h.p, h.n);
	rep_tally_init(&t, h.p, h.n);
	assert_int_equal(rep_enc_extent(&en, REP_PLAN_RAW, NULL, NULL, 1, 0, 512, raw, sizeof(raw)), 0);
	assert_int_equal(rep_tally_add(&t, &en.f, &e), 0);
	o = hex_line(o, "extent", en.hdr, en.hlen);
	o = hex_line(o, "  data", en.data, en.dlen);
	rep_enc_zero(&en, 2, 1, 1ull << 30, 1ull << 20);
	assert_int_equal(rep_tally_add(&t, &en.f, &e), 0);
	o = hex_line(o, "zero", en.hdr, en.hlen);
	rep_enc_end(&en, &t);
	hex_line(o, "end", en.hdr, en.hlen);
	assert_int_equal(golden_check("rep_cycle.hex", text), 0);
	free(text);
	free(h.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(header_round_trip_and_bounds),
		cmocka_unit_test(round_trip_cut_at_every_byte),
		cmocka_unit_test(frames_are_protobuf_c_bytes),
		cmocka_unit_test(compression_decision),
		cmocka_unit_test(frame_bounds),
		cmocka_unit_test(zero_and_shape_bounds),
		cmocka_unit_test(framing_bounds),
		cmocka_unit_test(corruption_detected),
		cmocka_unit_test(reordering_detected),
		cmocka_unit_test(callback_refusal_sticks),
		cmocka_unit_test(golden_cycle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
