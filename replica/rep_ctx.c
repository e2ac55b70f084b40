/*
 * rep_ctx.c: what the cycles of a node keep between them. A cycle every few
 * seconds must not pay for fresh megabyte buffers (each first touch is a
 * page fault: ~90 us per MiB measured, a tenth of the time TLS takes to
 * carry it) nor for fresh zstd contexts.
 *
 * Buffers are taken and given back on the loop thread only; contexts on
 * the workers, under a mutex held for a pointer swap.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "replica/rep_stream_priv.h"

#define KEEP_BUFS 16u
#define KEEP_CTX 8u

struct rep_ctx {
	struct exec_queue *q;
	unsigned refs;
	void *bufs[KEEP_BUFS];
	unsigned nbufs;
	pthread_mutex_t lock;
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
	for (unsigned i = 0; i < x->nbufs; i++)
		free(x->bufs[i]);
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

void *rep_buf_get(struct rep_ctx *x)
{
	if (x->nbufs)
		return x->bufs[--x->nbufs];
	return malloc(REP_BUF_SIZE);
}

void rep_buf_put(struct rep_ctx *x, void *p)
{
	if (!p)
		return;
	if (x->nbufs < KEEP_BUFS)
		x->bufs[x->nbufs++] = p;
	else
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
