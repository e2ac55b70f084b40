/*
 * rep_rx.c: the receiver of cycles (rep_stream.h).
 *
 * The channel hands a cycle's bytes to rx_data() in pieces of any size. A
 * frame wholly inside a piece is parsed where it lies, and only an
 * extent's data is copied out (the piece is borrowed for the call): small
 * ones into a slab they share, big ones into a buffer of their own. A
 * frame cut between pieces is put together by the framer (rep_wire.h) in a
 * buffer that becomes the frame's. Each frame is parsed, bounded, checked
 * against the cycle's disks and counted (sequence, totals, digest) on the
 * loop, in order; an extent then goes to a worker to be decompressed and
 * its CRC32C checked. Frames reach the sink
 * in order from the head of the queue as they are ready; the end goes to
 * the sink once every frame before it was done.
 *
 * Memory: a frame's stream bytes are granted back to the sender only when
 * the sink is done with it, so the stream bytes held (in frames, in the
 * framer, in the backlog) never exceed the window. Frames decoded and not
 * yet done are bounded too, by count (max_frames) and by the buffers they
 * hold (another window's worth: zstd frames hold their decompressed
 * bytes); past either, bytes wait as they came in the backlog.
 *
 * A raw extent of at most RX_INLINE bytes is checked on the loop: its CRC
 * takes less than handing it to a worker and back would.
 *
 * Reentrancy: every entry point (the channel's callbacks, the workers'
 * completions, the sink's calls) runs between enter() and leave(); only
 * the outermost leave advances the cycle and frees it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/chan.h"
#include "replica/rep_stream_priv.h"

#define RX_INLINE (64u << 10)
#define SLAB_SIZE (256u << 10)
#define SLAB_PIECE (64u << 10) /* extents' data up to this share slabs */
#define SLAB_ALIGN 64u


struct rep_rx_frame {
	struct exec_item work;
	struct rep_rx *rx;
	struct rep_rx_frame *next; /* in the queue, until handed to the sink */
	struct rep_frame f;
	uint8_t *buf;		   /* the frame's bytes (a pool buffer): extents */
	struct rep_slab *slab;	   /* or its data in a slab */
	uint8_t *out;		   /* the decompressed bytes (a pool buffer): zstd */
	size_t buf_cap, out_cap;
	size_t wire;		   /* its stream bytes, prefix included */
	bool ready;
	bool on_worker;
	int err;		   /* the worker's */
	struct rep_err e;
};

struct rep_recv {
	struct rep_ctx *x;
	struct rep_sink_ops ops;
	void *opaque;
	struct rep_recv_cfg cfg;
	unsigned refs; /* the creator's, and one per cycle */
	bool closed;
	struct rep_rx *cycles;
};

struct rep_rx {
	struct rep_recv *r;
	struct rep_rx *next; /* in r->cycles */
	struct chan_stream *st;
	char peer[CHAN_NAME_MAX + 1];
	struct rep_cycle c;
	void *cycle; /* the sink's */
	struct rep_tally t;
	struct rep_framer fr;
	struct rep_rx_frame *head, *tail; /* decoded, not yet handed to the sink */
	unsigned nframes;		   /* decoded and not yet done */
	size_t held;			   /* and the buffers they hold, slabs included */
	struct rep_slab *slab;		   /* the one small extents' data goes to */
	unsigned at_sink;
	unsigned working;
	uint8_t *backlog;
	size_t bcap, boff, blen;
	bool fin;	 /* the sender finished: our answer is due */
	bool end_called; /* the sink's end(): rep_rx_ack() is due */
	bool acked;
	bool answered;	 /* the sender was told */
	bool failed;
	int ack_err;
	char ack_msg[REP_MSG_MAX];
	unsigned depth;
	bool again;
};

static void enter(struct rep_rx *rx)
{
	rx->depth++;
}

static void leave(struct rep_rx *rx);

/* ---- frames ---- */

static void frame_free(struct rep_rx *rx, struct rep_rx_frame *fr)
{
	rep_buf_put(rx->r->x, fr->buf, fr->buf_cap);
	rep_buf_put(rx->r->x, fr->out, fr->out_cap);
	free(fr);
}

/* Done with: its credit goes back to the sender. */
static void frame_release(struct rep_rx *rx, struct rep_rx_frame *fr)
{
	if (rx->st)
		chan_stream_consume(rx->st, fr->wire);
	rx->nframes--;
	rx->held -= fr->buf_cap + fr->out_cap;
	rep_slab_unref(rx->r->x, fr->slab, &rx->held);
	frame_free(rx, fr);
}

static void fail(struct rep_rx *rx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The cycle is lost: tell the sender and the sink, keep what others hold. */
static void fail(struct rep_rx *rx, int err, const char *fmt, ...)
{
	struct rep_rx_frame *fr, *next;
	char msg[REP_MSG_MAX];
	va_list ap;

	if (rx->failed || rx->answered)
		return;
	rx->failed = true;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log(LOG_WARNING, "replica cycle %llu of %s from %s: %s", (unsigned long long)rx->c.cycle,
	       rx->c.vm, rx->peer, msg);
	if (rx->st)
		chan_stream_abort(rx->st, err, "%s", msg);
	rx->st = NULL;
	for (fr = rx->head; fr; fr = next) {
		next = fr->next;
		if (!fr->on_worker)
			frame_release(rx, fr);
	}
	rx->head = rx->tail = NULL;
	free(rx->backlog);
	rx->backlog = NULL;
	rx->bcap = rx->boff = rx->blen = 0;
	if (!rx->acked)
		rx->r->ops.fail(rx, err, msg, rx->cycle);
}

static void work_fn(struct exec_item *it)
{
	struct rep_rx_frame *fr = EXEC_CONTAINER_OF(it, struct rep_rx_frame, work);
	struct rep_ctx *x = fr->rx->r->x; /* set at creation, never written again */
	ZSTD_DCtx *dc = fr->out ? rep_dctx_get(x) : NULL;

	if (fr->out && !dc)
		fr->err = -ENOMEM;
	else
		fr->err = rep_frame_inflate(&fr->f, dc, fr->out, &fr->e);
	if (dc)
		rep_dctx_put(x, dc);
}

static void work_done(struct exec_item *it)
{
	struct rep_rx_frame *fr = EXEC_CONTAINER_OF(it, struct rep_rx_frame, work);
	struct rep_rx *rx = fr->rx;

	enter(rx);
	rx->working--;
	fr->on_worker = false;
	if (rx->failed || rx->answered)
		frame_release(rx, fr); /* orphaned by fail() */
	else if (exec_item_cancelled(it))
		fail(rx, -ECANCELED, "the executor shut down");
	else if (fr->err == -ENOMEM)
		fail(rx, -ENOMEM, "no memory to decompress frame %llu",
		     (unsigned long long)fr->f.seq);
	else if (fr->err)
		fail(rx, fr->err, "%s", fr->e.msg);
	else
		fr->ready = true;
	leave(rx);
}

/* An extent parsed in place: its data copied out of the stream's piece. */
static int extent_copy(struct rep_rx *rx, struct rep_rx_frame *fr)
{
	uint8_t *p;

	if (fr->f.dlen <= SLAB_PIECE) {
		p = rep_slab_take(rx->r->x, &rx->slab, SLAB_SIZE, fr->f.dlen, SLAB_ALIGN, &rx->held);
		fr->slab = p ? rx->slab : NULL;
	} else
		p = fr->buf = rep_buf_get(rx->r->x, fr->f.dlen, &fr->buf_cap);
	if (!p)
		return -ENOMEM;
	memcpy(p, fr->f.data, fr->f.dlen);
	fr->f.data = p;
	return 0;
}

/* An extent keeps its bytes (the framer's buffer, the framer gets
 * another), and a buffer to decompress into; a small raw one is checked
 * here. */
static int extent_take(struct rep_rx *rx, struct rep_rx_frame *fr, bool in_place)
{
	if (in_place) {
		int rc = extent_copy(rx, fr);

		if (rc < 0)
			return rc;
	} else {
		fr->buf = rx->fr.buf;
		fr->buf_cap = rx->fr.cap;
		rx->fr.buf = NULL;
		rx->fr.cap = 0;
	}
	if (fr->f.codec == REP_CODEC_NONE && fr->f.length <= RX_INLINE) {
		fr->err = rep_frame_inflate(&fr->f, NULL, NULL, &fr->e);
		fr->ready = !fr->err;
		return fr->err;
	}
	if (fr->f.codec == REP_CODEC_ZSTD) {
		fr->out = rep_buf_get(rx->r->x, (size_t)fr->f.length, &fr->out_cap);
		if (!fr->out)
			return -ENOMEM;
	}
	fr->on_worker = true;
	rx->working++;
	exec_item_init(&fr->work, work_fn, work_done);
	exec_push(rep_ctx_queue(rx->r->x), &fr->work, NULL);
	return 0;
}

/* A whole frame's payload @p (@n bytes: the stream's piece @in_place, else
 * the framer's buffer): check it in order and queue it. */
static void frame_take(struct rep_rx *rx, const uint8_t *p, size_t n, bool in_place)
{
	struct rep_rx_frame *fr;
	struct rep_frame f;
	struct rep_err e;
	int rc = rep_frame_parse(p, n, &f, &e);

	if (rc == 0)
		rc = rep_frame_check(&rx->c, &f, &e);
	if (rc == 0)
		rc = rep_tally_add(&rx->t, &f, &e);
	if (rc < 0) {
		fail(rx, rc, "%s", e.msg);
		return;
	}
	fr = calloc(1, sizeof(*fr));
	if (!fr) {
		fail(rx, -ENOMEM, "no memory for frame %llu", (unsigned long long)f.seq);
		return;
	}
	fr->rx = rx;
	fr->f = f;
	fr->wire = REP_PREFIX_LEN + n;
	fr->ready = f.kind != REP_KIND_EXTENT;
	if (rx->tail)
		rx->tail->next = fr;
	else
		rx->head = fr;
	rx->tail = fr;
	rx->nframes++;
	if (f.kind != REP_KIND_EXTENT)
		return;
	rc = extent_take(rx, fr, in_place);
	rx->held += fr->buf_cap + fr->out_cap;
	if (rc == -ENOMEM)
		fail(rx, rc, "no memory for frame %llu", (unsigned long long)f.seq);
	else if (rc < 0)
		fail(rx, rc, "%s", fr->e.msg);
}

/* Room to decode one more frame? */
static bool room(const struct rep_rx *rx)
{
	return rx->nframes < rx->r->cfg.max_frames && rx->held < rx->r->cfg.window;
}

/* The framer knows the next frame's length: a pool buffer that fits it. */
static int framer_buf(struct rep_rx *rx)
{
	size_t cap;
	uint8_t *p = rep_buf_get(rx->r->x, rx->fr.need, &cap);

	if (!p) {
		fail(rx, -ENOMEM, "no memory for a frame of %zu bytes", rx->fr.need);
		return -ENOMEM;
	}
	rep_buf_put(rx->r->x, rx->fr.buf, rx->fr.cap);
	rx->fr.buf = p;
	rx->fr.cap = cap;
	return 0;
}

/* Bytes of the stream into frames while there is room; the bytes used. */
static size_t feed(struct rep_rx *rx, const uint8_t *p, size_t n)
{
	size_t used = 0;
	struct rep_err e;

	while (!rx->failed && used < n && room(rx)) {
		size_t whole = rep_framer_idle(&rx->fr) ? rep_frame_whole(p + used, n - used) : 0;
		ssize_t k;

		if (whole) {
			frame_take(rx, p + used + REP_PREFIX_LEN, whole - REP_PREFIX_LEN, true);
			used += whole;
			continue;
		}
		k = rep_framer_feed(&rx->fr, p + used, n - used, &e);

		if (k < 0) {
			fail(rx, (int)k, "%s", e.msg);
			break;
		}
		used += (size_t)k;
		if (rep_framer_wants(&rx->fr) && framer_buf(rx) < 0)
			break;
		if (rx->fr.whole) {
			frame_take(rx, rx->fr.buf, rx->fr.need, false);
			rep_framer_next(&rx->fr);
		}
	}
	return used;
}

/* Bytes that cannot be framed now, kept as they came. The credit bounds
 * them by the window; the buffer doubles, so a stream of small pieces costs
 * no more than one of big ones. */
static int backlog_add(struct rep_rx *rx, const uint8_t *p, size_t n)
{
	size_t live = rx->blen - rx->boff, cap;
	uint8_t *b;

	/* Slide down only when that moves less than it frees. */
	if (rx->bcap - rx->blen < n && rx->boff && rx->boff >= live) {
		memmove(rx->backlog, rx->backlog + rx->boff, live);
		rx->blen = live;
		rx->boff = 0;
	}
	if (rx->bcap - rx->blen < n) {
		for (cap = rx->bcap ? rx->bcap * 2 : 64u << 10; cap - rx->blen < n; cap *= 2)
			;
		b = realloc(rx->backlog, cap);
		if (!b)
			return -ENOMEM;
		rx->backlog = b;
		rx->bcap = cap;
	}
	memcpy(rx->backlog + rx->blen, p, n);
	rx->blen += n;
	return 0;
}

/* ---- advancing the cycle ---- */

static void deliver(struct rep_rx *rx)
{
	struct rep_rx_frame *fr;

	while (!rx->failed && (fr = rx->head) && fr->ready) {
		if (fr->f.kind == REP_KIND_END && rx->at_sink)
			return;
		rx->head = fr->next;
		if (!rx->head)
			rx->tail = NULL;
		if (fr->f.kind == REP_KIND_END) {
			struct rep_end end = fr->f.end;

			frame_release(rx, fr);
			rx->end_called = true;
			rx->r->ops.end(rx, &end, rx->cycle);
			return;
		}
		rx->at_sink++;
		rx->r->ops.frame(rx, fr, &fr->f, rx->cycle);
	}
}

static void drain(struct rep_rx *rx)
{
	while (!rx->failed && rx->blen > rx->boff && room(rx))
		rx->boff += feed(rx, rx->backlog + rx->boff, rx->blen - rx->boff);
	if (rx->boff == rx->blen)
		rx->boff = rx->blen = 0;
}

/* The sender finished: was everything there? */
static void check_whole(struct rep_rx *rx)
{
	if (rx->failed || !rx->fin || rx->t.ended || rx->blen > rx->boff)
		return;
	if (!rep_framer_idle(&rx->fr))
		fail(rx, -EPROTO, "the stream ended inside a frame");
	else
		fail(rx, -EPROTO, "the stream ended before the cycle's end frame");
}

/* The sink's answer to the sender: an error at once, success after its fin. */
static void answer(struct rep_rx *rx)
{
	if (rx->failed || rx->answered || !rx->acked || (!rx->ack_err && !rx->fin))
		return;
	rx->answered = true;
	if (rx->ack_err)
		qb_log(LOG_WARNING, "replica cycle %llu of %s from %s: not stored: %s",
		       (unsigned long long)rx->c.cycle, rx->c.vm, rx->peer, rx->ack_msg);
	else
		qb_log(LOG_INFO, "replica cycle %llu of %s from %s: stored",
		       (unsigned long long)rx->c.cycle, rx->c.vm, rx->peer);
	if (rx->st)
		chan_stream_abort(rx->st, rx->ack_err, "%s", rx->ack_msg);
	rx->st = NULL;
}

static void recv_unref(struct rep_recv *r)
{
	if (--r->refs > 0)
		return;
	rep_ctx_free(r->x);
	free(r);
}

static void rx_free(struct rep_rx *rx)
{
	struct rep_recv *r = rx->r;
	struct rep_rx **pp;

	for (pp = &r->cycles; *pp; pp = &(*pp)->next) {
		if (*pp == rx) {
			*pp = rx->next;
			break;
		}
	}
	rep_buf_put(r->x, rx->fr.buf, rx->fr.cap);
	rep_slab_unref(r->x, rx->slab, &rx->held);
	free(rx->backlog);
	free(rx);
	recv_unref(r);
}

static void leave(struct rep_rx *rx)
{
	if (rx->depth > 1) {
		rx->depth--;
		rx->again = true;
		return;
	}
	do {
		rx->again = false;
		deliver(rx);
		drain(rx);
		check_whole(rx);
		answer(rx);
	} while (rx->again);
	rx->depth = 0;
	if ((rx->failed || rx->answered) && !rx->working && !rx->at_sink &&
	    (!rx->end_called || rx->acked))
		rx_free(rx);
}

/* ---- the channel's callbacks ---- */

static void rx_data(struct chan_stream *st, const void *buf, size_t len, void *opaque)
{
	struct rep_rx *rx = opaque;
	size_t used = 0;

	enter(rx);
	if (!rx->failed && rx->blen == rx->boff)
		used = feed(rx, buf, len);
	if (!rx->failed && used < len && backlog_add(rx, (const uint8_t *)buf + used, len - used))
		fail(rx, -ENOMEM, "no memory for %zu bytes of the stream", len - used);
	leave(rx);
}

static void rx_fin(struct chan_stream *st, void *opaque)
{
	struct rep_rx *rx = opaque;

	enter(rx);
	rx->fin = true;
	leave(rx);
}

static void rx_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct rep_rx *rx = opaque;

	enter(rx);
	rx->st = NULL; /* freed once this returns */
	fail(rx, err ? err : -EPROTO, "%s", err ? msg : "the stream ended unanswered");
	leave(rx);
}

static const struct chan_stream_ops rx_ops = {
	.data = rx_data,
	.end = rx_end,
	.fin = rx_fin,
};

static int rx_open(struct chan_stream *st, const void *hdr, size_t len, void *opaque)
{
	struct rep_recv *r = opaque;
	struct rep_err e = { "refused by the replica" };
	struct rep_rx *rx = NULL;
	int rc = -ESHUTDOWN;

	if (r->closed) {
		snprintf(e.msg, sizeof(e.msg), "the replica is shutting down");
		goto out;
	}
	rc = -ENOMEM;
	rx = calloc(1, sizeof(*rx));
	if (!rx)
		goto out;
	rx->r = r;
	rx->st = st;
	rx->fr.fixed = true;
	snprintf(rx->peer, sizeof(rx->peer), "%s", chan_stream_peer(st));
	rc = rep_cycle_decode(hdr, len, &rx->c, &e);
	if (rc == 0) {
		rep_tally_init(&rx->t, hdr, len);
		rc = r->ops.open(rx, &rx->c, r->opaque, &rx->cycle, &e);
	}
out:
	if (rc < 0) {
		qb_log(LOG_WARNING, "replica stream from %s refused: %s", chan_stream_peer(st),
		       e.msg);
		chan_stream_abort(st, rc, "%s", e.msg); /* our message, not just the errno */
		free(rx);
		return 0;
	}
	r->refs++;
	rx->next = r->cycles;
	r->cycles = rx;
	chan_stream_accept(st, r->cfg.window, &rx_ops, rx);
	return 0;
}

/* ---- the owner's and the sink's calls ---- */

struct rep_recv *rep_recv_new(const struct hca_env *env, struct rep_ctx *x,
			      const struct rep_recv_cfg *cfg, const struct rep_sink_ops *ops,
			      void *opaque)
{
	struct rep_recv *r;
	int rc;

	if (!env || !x || !ops || !ops->open || !ops->frame || !ops->end || !ops->fail) {
		errno = EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->x = rep_ctx_ref(x);
	r->ops = *ops;
	r->opaque = opaque;
	if (cfg)
		r->cfg = *cfg;
	if (!r->cfg.window)
		r->cfg.window = REP_RX_WINDOW;
	if (r->cfg.window < REP_RX_WINDOW_MIN)
		r->cfg.window = REP_RX_WINDOW_MIN;
	if (!r->cfg.max_frames)
		r->cfg.max_frames = REP_RX_FRAMES;
	r->refs = 1;
	rc = env->handle_stream(env->ctx, REP_STREAM_METHOD, rx_open, r);
	if (rc < 0) {
		recv_unref(r);
		errno = -rc;
		return NULL;
	}
	return r;
}

void rep_recv_free(struct rep_recv *r)
{
	struct rep_rx *rx, *next;

	if (!r)
		return;
	r->closed = true;
	r->refs++; /* the cycles may all go below */
	for (rx = r->cycles; rx; rx = next) {
		next = rx->next;
		enter(rx);
		fail(rx, -ESHUTDOWN, "the replica is shutting down");
		leave(rx);
	}
	r->refs--;
	recv_unref(r);
}

void rep_rx_frame_done(struct rep_rx_frame *fr, int err)
{
	struct rep_rx *rx = fr->rx;
	uint64_t seq = fr->f.seq;

	enter(rx);
	rx->at_sink--;
	frame_release(rx, fr);
	if (err < 0)
		fail(rx, err, "the replica could not store frame %llu: %s",
		     (unsigned long long)seq, strerror(-err));
	leave(rx);
}

void rep_rx_frame_fail(struct rep_rx_frame *fr, int err, const char *fmt, ...)
{
	struct rep_rx *rx = fr->rx;
	char msg[REP_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	enter(rx);
	rx->at_sink--;
	frame_release(rx, fr);
	fail(rx, err < 0 ? err : -EIO, "%s", msg);
	leave(rx);
}

void rep_rx_ack(struct rep_rx *rx, int err, const char *fmt, ...)
{
	va_list ap;

	enter(rx);
	rx->acked = true;
	rx->ack_err = err > 0 ? -err : err;
	va_start(ap, fmt);
	vsnprintf(rx->ack_msg, sizeof(rx->ack_msg), fmt, ap);
	va_end(ap);
	leave(rx);
}

const struct rep_cycle *rep_rx_cycle(const struct rep_rx *rx)
{
	return &rx->c;
}

const char *rep_rx_peer(const struct rep_rx *rx)
{
	return rx->peer;
}
