/*
 * rep_ctx.c: what the cycles of a node keep between them. A cycle every few
 * seconds must not pay for fresh megabyte buffers (each first touch is a
 * page fault: ~90 us per MiB measured, a tenth of the time TLS takes to
 * carry it) nor for fresh zstd contexts.
 *
 * Buffers and contexts are taken and given back on any thread, under a
 * mutex held for a pointer swap.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "replica/rep_stream_priv.h"

#define CLASSES 3
#define KEEP_BUFS 16u /* per class: at most 21 MiB kept idle */
#define KEEP_CTX 8u

static const size_t class_size[CLASSES] = { 64u << 10, 256u << 10, REP_BUF_SIZE };

struct rep_ctx {
	struct exec_queue *q;
	unsigned refs;
	pthread_mutex_t lock;
	void *bufs[CLASSES][KEEP_BUFS];
	unsigned nbufs[CLASSES];
	ZSTD_CCtx *cc[KEEP_CTX];
	ZSTD_DCtx *dc[KEEP_CTX];
	unsigned ncc, ndc;
};

struct rep_ctx *rep_ctx_new(struct exec_queue *q)
{
	struct rep_ctx *x;

	if (!q) {
		errno = EINVAL;
		return NULL;
	}
	x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->q = q;
	x->refs = 1;
	pthread_mutex_init(&x->lock, NULL);
	return x;
}

struct rep_ctx *rep_ctx_ref(struct rep_ctx *x)
{
	x->refs++;
	return x;
}

void rep_ctx_free(struct rep_ctx *x)
{
	if (!x || --x->refs > 0)
		return;
	for (unsigned c = 0; c < CLASSES; c++)
		for (unsigned i = 0; i < x->nbufs[c]; i++)
			free(x->bufs[c][i]);
	for (unsigned i = 0; i < x->ncc; i++)
		ZSTD_freeCCtx(x->cc[i]);
	for (unsigned i = 0; i < x->ndc; i++)
		ZSTD_freeDCtx(x->dc[i]);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

struct exec_queue *rep_ctx_queue(const struct rep_ctx *x)
{
	return x->q;
}

static unsigned class_of(size_t size)
{
	unsigned c = 0;

	while (c + 1 < CLASSES && size > class_size[c])
		c++;
	return c;
}

void *rep_buf_get(struct rep_ctx *x, size_t size, size_t *cap)
{
	unsigned c = class_of(size);
	void *p = NULL;

	*cap = 0;
	if (size > REP_BUF_SIZE)
		return NULL;
	pthread_mutex_lock(&x->lock);
	if (x->nbufs[c])
		p = x->bufs[c][--x->nbufs[c]];
	pthread_mutex_unlock(&x->lock);
	if (!p)
		p = malloc(class_size[c]);
	if (p)
		*cap = class_size[c];
	return p;
}

void rep_buf_put(struct rep_ctx *x, void *p, size_t cap)
{
	unsigned c = class_of(cap);

	if (!p)
		return;
	pthread_mutex_lock(&x->lock);
	if (class_size[c] == cap && x->nbufs[c] < KEEP_BUFS) {
		x->bufs[c][x->nbufs[c]++] = p;
		p = NULL;
	}
	pthread_mutex_unlock(&x->lock);
	free(p);
}

ZSTD_CCtx *rep_cctx_get(struct rep_ctx *x)
{
	ZSTD_CCtx *cc = NULL;

	pthread_mutex_lock(&x->lock);
	if (x->ncc)
		cc = x->cc[--x->ncc];
	pthread_mutex_unlock(&x->lock);
	return cc ? cc : ZSTD_createCCtx();
}

void rep_cctx_put(struct rep_ctx *x, ZSTD_CCtx *cc)
{
	pthread_mutex_lock(&x->lock);
	if (cc && x->ncc < KEEP_CTX) {
		x->cc[x->ncc++] = cc;
		cc = NULL;
	}
	pthread_mutex_unlock(&x->lock);
	ZSTD_freeCCtx(cc);
}

ZSTD_DCtx *rep_dctx_get(struct rep_ctx *x)
{
	ZSTD_DCtx *dc = NULL;

	pthread_mutex_lock(&x->lock);
	if (x->ndc)
		dc = x->dc[--x->ndc];
	pthread_mutex_unlock(&x->lock);
	return dc ? dc : ZSTD_createDCtx();
}

void rep_dctx_put(struct rep_ctx *x, ZSTD_DCtx *dc)
{
	pthread_mutex_lock(&x->lock);
	if (dc && x->ndc < KEEP_CTX) {
		x->dc[x->ndc++] = dc;
		dc = NULL;
	}
	pthread_mutex_unlock(&x->lock);
	ZSTD_freeDCtx(dc);
}

uint8_t *rep_slab_take(struct rep_ctx *x, struct rep_slab **cur, size_t size, size_t n,
		       size_t align, size_t *held)
{
	struct rep_slab *s = *cur;
	size_t need = (n + align - 1) & ~(align - 1);
	uint8_t *p;

	if (!s || s->cap - s->used < need) {
		if (!(s = calloc(1, sizeof(*s))))
			return NULL;
		if (!(s->buf = rep_buf_get(x, size, &s->cap)) || s->cap < need) {
			rep_buf_put(x, s->buf, s->cap);
			free(s);
			return NULL;
		}
		s->refs = 1; /* the holder's */
		if (held)
			*held += s->cap;
		rep_slab_unref(x, *cur, held);
		*cur = s;
	}
	p = s->buf + s->used;
	s->used += need;
	s->refs++;
	return p;
}

void rep_slab_unref(struct rep_ctx *x, struct rep_slab *s, size_t *held)
{
	if (!s || --s->refs > 0)
		return;
	if (held)
		*held -= s->cap;
	rep_buf_put(x, s->buf, s->cap);
	free(s);
}
