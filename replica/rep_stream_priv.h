/*
 * rep_stream_priv.h: what rep_ctx.c, rep_tx.c and rep_rx.c share.
 *
 *   rep_ctx.c  codec resources kept between cycles: buffers, zstd contexts
 *   rep_tx.c   the sender: encode on workers, write in order
 *   rep_rx.c   the receiver: frame, decode, check, hand to the sink in order
 */
#ifndef HCA_REP_STREAM_PRIV_H
#define HCA_REP_STREAM_PRIV_H

#include <qb/qblog.h>

#include "replica/rep_stream.h"

/*
 * Buffers come in three sizes, each kept in a pool of its own: frames and
 * zstd's output vary from a few KiB to REP_FRAME_MAX, and a big buffer held
 * for a small frame would make the memory bound four times the bytes.
 */
#define REP_BUF_SIZE REP_FRAME_MAX

struct rep_ctx *rep_ctx_ref(struct rep_ctx *x);
struct exec_queue *rep_ctx_queue(const struct rep_ctx *x);

/* Any thread. A buffer of at least @size (<= REP_BUF_SIZE) bytes, its
 * capacity in *@cap; NULL when out of memory. */
void *rep_buf_get(struct rep_ctx *x, size_t size, size_t *cap);
/* Back to its pool (or freed past what the pool keeps); NULL is a no-op. */
void rep_buf_put(struct rep_ctx *x, void *p, size_t cap);

/*
 * A pool buffer many frames' bytes share, back to back, freed with the
 * last of them: a reference per frame in it, and one of the holder's while
 * it fills it. One thread at a time (hand-offs through the executor order
 * them).
 */
struct rep_slab {
	uint8_t *buf;
	size_t cap, used;
	unsigned refs;
};

/* @n bytes (rounded up to @align, a power of two) in *@cur, or in a new
 * slab of @size that takes its place (the holder's reference moves to it);
 * a reference for the taker. NULL without memory, *@cur unchanged. @held,
 * if not NULL, counts the capacity of the slabs alive. */
uint8_t *rep_slab_take(struct rep_ctx *x, struct rep_slab **cur, size_t size, size_t n,
		       size_t align, size_t *held);
/* One reference less (NULL: none); the last frees the slab. */
void rep_slab_unref(struct rep_ctx *x, struct rep_slab *s, size_t *held);

/* Any thread. A context ready for use, or NULL; give it back after. */
ZSTD_CCtx *rep_cctx_get(struct rep_ctx *x);
void rep_cctx_put(struct rep_ctx *x, ZSTD_CCtx *cc);
ZSTD_DCtx *rep_dctx_get(struct rep_ctx *x);
void rep_dctx_put(struct rep_ctx *x, ZSTD_DCtx *dc);

#endif /* HCA_REP_STREAM_PRIV_H */
