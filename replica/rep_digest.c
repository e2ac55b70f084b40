/*
 * rep_digest: block digests and the resync filter (see rep_digest.h).
 */
#include "replica/rep_digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

uint32_t rep_digest_gran(uint64_t size)
{
	uint32_t g = REP_DIGEST_GRAN_MIN;

	while (g < REP_DIGEST_GRAN_MAX && (size + g - 1) / g > REP_DIGEST_BLOCKS_MAX)
		g <<= 1;
	return g;
}

void rep_digest(const void *buf, size_t len, uint8_t out[REP_DIGEST_LEN])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	if (!EVP_Digest(buf, len, md, &n, EVP_sha256(), NULL) || n < REP_DIGEST_LEN)
		memset(md, 0xFF, REP_DIGEST_LEN); /* never equal to a real one by chance */
	memcpy(out, md, REP_DIGEST_LEN);
}

void rep_dmap_init(struct rep_dmap *m, uint32_t gran)
{
	memset(m, 0, sizeof(*m));
	m->gran = gran;
}

void rep_dmap_free(struct rep_dmap *m)
{
	free(m->blk);
	free(m->dg);
	rep_dmap_init(m, m->gran);
}

int rep_dmap_add(struct rep_dmap *m, uint64_t off, const uint8_t *dg, size_t len,
		 uint64_t disk_size)
{
	size_t k = len / REP_DIGEST_LEN;
	uint64_t first, blocks;

	if (!m->gran || off % m->gran || len % REP_DIGEST_LEN)
		return -EINVAL;
	first = off / m->gran;
	blocks = (disk_size + m->gran - 1) / m->gran;
	if (first > blocks || k > blocks - first || (m->n && first <= m->blk[m->n - 1]))
		return -EINVAL;
	if (k > REP_DIGEST_BLOCKS_MAX - m->n)
		return -E2BIG;
	if (m->n + k > m->cap) {
		size_t cap = m->cap ? m->cap : 1024;
		uint64_t *b;
		uint8_t(*d)[REP_DIGEST_LEN];

		while (cap < m->n + k)
			cap *= 2;
		if (!(b = realloc(m->blk, cap * sizeof(*b))))
			return -ENOMEM;
		m->blk = b;
		if (!(d = realloc(m->dg, cap * sizeof(*d))))
			return -ENOMEM;
		m->dg = d;
		m->cap = cap;
	}
	for (size_t i = 0; i < k; i++) {
		m->blk[m->n] = first + i;
		memcpy(m->dg[m->n], dg + i * REP_DIGEST_LEN, REP_DIGEST_LEN);
		m->n++;
	}
	return 0;
}

const uint8_t *rep_dmap_find(const struct rep_dmap *m, uint64_t blk)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (m->blk[mid] < blk)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->n && m->blk[lo] == blk ? m->dg[lo] : NULL;
}

/* Is the block of @len bytes at @buf, block @blk, the replica's already? */
static bool same(const struct rep_dmap *m, uint64_t blk, const void *buf, size_t len)
{
	const uint8_t *theirs = rep_dmap_find(m, blk);
	uint8_t ours[REP_DIGEST_LEN];

	if (!theirs)
		return false;
	rep_digest(buf, len, ours);
	return !memcmp(ours, theirs, REP_DIGEST_LEN);
}

/* Emits [a, b) of data chunk @c into @out. */
static int emit(const struct rep_chunk *c, uint64_t a, uint64_t b, bool whole,
		struct rep_chunk *out, size_t *n_out)
{
	struct rep_chunk *o = &out[(*n_out)++];

	o->off = a;
	o->len = b - a;
	if (whole) {
		o->buf = c->buf;
		return 0;
	}
	if (!(o->buf = malloc((size_t)o->len))) {
		(*n_out)--;
		return -ENOMEM;
	}
	memcpy(o->buf, (const char *)c->buf + (a - c->off), (size_t)o->len);
	return 0;
}

int rep_digest_filter(const struct rep_dmap *m, struct rep_chunk *in, size_t n_in,
		      struct rep_chunk *out, size_t cap, size_t *n_out,
		      struct rep_filter_stats *st)
{
	int rc = 0;

	*n_out = 0;
	if (cap < n_in || !m->gran) {
		rep_chunks_free(in, n_in);
		return -EINVAL;
	}
	for (size_t i = 0; i < n_in && !rc; i++) {
		struct rep_chunk *c = &in[i];
		uint64_t end = c->off + c->len, pos = c->off, run = UINT64_MAX;
		bool split = false;

		if (!c->buf) { /* a zero range: sent as it is, it costs no payload */
			out[(*n_out)++] = *c;
			continue;
		}
		while (pos < end && !rc) {
			uint64_t bstart = pos / m->gran * m->gran, bend = bstart + m->gran;
			uint64_t seg = bend < end ? bend : end;
			bool keep = !(pos == bstart && bend <= end &&
				      same(m, pos / m->gran, (const char *)c->buf + (pos - c->off),
					   m->gran));

			if (keep && run == UINT64_MAX) {
				run = pos;
				/* one slot left beyond those the other chunks need:
				 * the rest of this chunk goes as one run */
				if (cap - *n_out <= n_in - i)
					seg = end;
			}
			if (!keep) {
				st->same_bytes += seg - pos;
				split = true;
				if (run != UINT64_MAX) {
					rc = emit(c, run, pos, false, out, n_out);
					st->sent_bytes += pos - run;
					run = UINT64_MAX;
				}
			}
			pos = seg;
		}
		if (!rc && run != UINT64_MAX) {
			bool whole = !split && run == c->off;
			rc = emit(c, run, end, whole, out, n_out);
			st->sent_bytes += end - run;
			if (!rc && whole)
				c->buf = NULL; /* moved */
		}
		free(c->buf);
		c->buf = NULL;
	}
	if (rc < 0) {
		rep_chunks_free(out, *n_out);
		*n_out = 0;
		rep_chunks_free(in, n_in);
	}
	return rc;
}
