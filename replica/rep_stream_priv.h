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

/* Buffers of REP_FRAME_MAX bytes: frames and decompressed extents. */
#define REP_BUF_SIZE REP_FRAME_MAX
/* Smaller ones are plain malloc'd: a big buffer held for a few KiB would
 * make the memory bound four times the bytes, not once. */
#define REP_BUF_BIG (REP_BUF_SIZE / 4)

struct rep_ctx *rep_ctx_ref(struct rep_ctx *x);
struct exec_queue *rep_ctx_queue(const struct rep_ctx *x);

/* Loop thread. A buffer of REP_BUF_SIZE bytes, or NULL. */
void *rep_buf_get(struct rep_ctx *x);
/* Back to the pool, or freed past what it keeps; NULL is a no-op. */
void rep_buf_put(struct rep_ctx *x, void *p);

/* Any thread. A context ready for use, or NULL; give it back after. */
ZSTD_CCtx *rep_cctx_get(struct rep_ctx *x);
void rep_cctx_put(struct rep_ctx *x, ZSTD_CCtx *cc);
ZSTD_DCtx *rep_dctx_get(struct rep_ctx *x);
void rep_dctx_put(struct rep_ctx *x, ZSTD_DCtx *dc);

#endif /* HCA_REP_STREAM_PRIV_H */
