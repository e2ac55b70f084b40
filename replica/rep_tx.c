/*
 * rep_tx.c: the sender of a cycle (rep_stream.h).
 *
 * One item per frame, queued in push order. An extent is encoded on a
 * worker (zero detection, CRC32C, zstd); a zero range or the end is encoded
 * on the loop. Only the head of the queue is written, once encoded, so
 * frames leave in push order whatever order the workers finish in; the
 * digest is chained as each starts to be written.
 *
 * Extents go to the workers in batches: a big one alone, small ones (below
 * BATCH_SMALL) together up to BATCH_BYTES, or whatever the caller pushed
 * by the end of the loop's turn (the kick sends it): a worker round trip
 * costs more than encoding a 4 KiB extent. The worker writes a batch's
 * small frames back to back into one buffer (a run), which goes to the
 * channel in one write: one channel message for many frames, where one
 * each cost both ends more than the frames' bytes (4 KiB extents: measured
 * with tests/tools/rep_bench, REP_BENCH_EXTENT=4).
 *
 * zstd saves the wire, never at the wire's expense: while the channel takes
 * all we have and then waits for the next frame's encoding, the workers are
 * the bottleneck, and extents pushed meanwhile go without zstd (hurry);
 * once the channel is the one that cannot take more, zstd is back.
 *
 *   OPEN -> FINISHING (end queued) -> FIN_SENT (waiting for the answer) -> OVER
 *   any -> OVER on a failure or the caller's abort
 *
 * Lifetime: done() is called only once no worker reads a buffer of the
 * caller's any more, and the handle is freed right after it.
 *
 * Reentrancy: every entry point runs between enter() and leave(); the
 * outermost leave writes what it can and, when it comes from the loop (a
 * channel callback, a worker's completion, a timer), calls more() or done()
 * and frees. The caller's own calls never call back: what is due then is
 * left to a zero-delay timer (the kick).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/chan.h"
#include "replica/rep_stream_priv.h"

#define ITEM_COST 256u	  /* in-flight bytes an item counts besides its data */
#define FIN_RETRY_MS 10u  /* chan_stream_finish() found the queue full */
#define BATCH_SMALL (64u << 10)
#define JOIN_MAX (64u << 10) /* a frame this small is written in one piece */
#define RUN_SIZE (256u << 10)
#define BATCH_BYTES RUN_SIZE /* a batch's frames fit one run */
#define BATCH_MAX 64u
/*
 * An extent below REP_PROBE_MIN is tried with zstd whole, no probe
 * (rep_wire.h): a 4 KiB attempt costs ~3 us whatever the data, most of it
 * setting zstd up, which on incompressible data was a fifth of the CPU
 * both nodes spent on the stream. After SKIP_AFTER misses in a row in a
 * batch only every SKIP_EVERY-th is tried, until one shrinks.
 */
#define SKIP_AFTER 4u
#define SKIP_EVERY 8u

struct tx_item {
	struct rep_tx *tx;
	struct tx_item *next;
	enum rep_kind kind; /* as pushed: an extent may be encoded as a zero range */
	bool ready;	    /* encoded */
	bool hurry;	    /* no zstd: the workers were behind the channel */
	bool on_worker;
	bool counted;	    /* in the tally */
	uint64_t seq;
	uint32_t disk;
	uint64_t off, len;
	void *buf;	    /* the caller's bytes, until released */
	uint8_t *scratch;   /* zstd's output (a pool buffer), taken by the worker */
	size_t scratch_cap;
	struct rep_slab *run; /* a small frame: header and data joined in this
			       * run of a batch's frames, at roff */
	size_t roff;
	struct rep_enc enc;
	size_t woff;	    /* bytes of hdr + data written */
	size_t cost;	    /* counted in tx->inflight */
};

enum tx_state {
	TX_OPEN,
	TX_FINISHING, /* the end frame is queued */
	TX_FIN_SENT,  /* written and finished: waiting for the replica's answer */
	TX_OVER,      /* the outcome is known */
};

struct rep_tx {
	struct rep_ctx *x;
	qb_loop_t *loop;
	struct chan_stream *st;
	struct rep_tx_ops ops;
	void *opaque;
	struct rep_tx_cfg cfg;
	struct rep_cycle c;
	char node[CHAN_NAME_MAX + 1];
	struct rep_tally t;
	enum tx_state state;
	bool told;	/* done() called, or the caller aborted: no more callbacks */
	bool want_more; /* a push was refused with -EAGAIN */
	bool chan_full; /* the channel took less than we had: it is the bottleneck */
	bool hurry;	/* the channel waited for the workers: extents go without zstd */
	uint64_t next_seq;
	struct tx_item *head, *tail;
	unsigned working; /* items on workers */
	size_t inflight;
	unsigned depth;
	bool again;
	int err;
	char msg[REP_MSG_MAX];
	qb_loop_timer_handle timer; /* the finish retry, then the answer's deadline */
	qb_loop_timer_handle kick;
	struct tx_batch *batch; /* extents not yet handed to the workers */
	struct rep_tx_stats s;
};

/* Extents encoded by one worker call. */
struct tx_batch {
	struct exec_item work;
	struct rep_tx *tx;
	unsigned n;
	size_t bytes; /* counting REP_ENC_HDR_MAX per extent */
	struct tx_item *items[BATCH_MAX];
};

static void leave(struct rep_tx *tx, bool caller);
static void batch_send(struct rep_tx *tx);

static void enter(struct rep_tx *tx)
{
	tx->depth++;
}

static void timer_off(struct rep_tx *tx, qb_loop_timer_handle *th)
{
	if (*th)
		qb_loop_timer_del(tx->loop, *th);
	*th = 0;
}

/* ---- items ---- */

static void buf_release(struct rep_tx *tx, struct tx_item *i)
{
	if (!i->buf)
		return;
	if (tx->ops.release)
		tx->ops.release(i->buf, tx->opaque);
	else
		free(i->buf);
	i->buf = NULL;
}

static void item_free(struct rep_tx *tx, struct tx_item *i)
{
	buf_release(tx, i);
	rep_buf_put(tx->x, i->scratch, i->scratch_cap);
	rep_slab_unref(tx->x, i->run, NULL);
	tx->inflight -= i->cost;
	free(i);
}

/* The outcome is known: what no worker holds goes now, the rest when done. */
static void over(struct rep_tx *tx, int err, const char *msg)
{
	struct tx_item *i, *next;

	if (tx->state == TX_OVER)
		return;
	tx->state = TX_OVER;
	tx->err = err;
	snprintf(tx->msg, sizeof(tx->msg), "%s", msg ? msg : "");
	timer_off(tx, &tx->timer);
	if (tx->batch) { /* never sent: no worker has them */
		for (unsigned k = 0; k < tx->batch->n; k++)
			tx->batch->items[k]->on_worker = false;
		tx->working -= tx->batch->n;
		free(tx->batch);
		tx->batch = NULL;
	}
	for (i = tx->head; i; i = next) {
		next = i->next;
		if (!i->on_worker)
			item_free(tx, i);
	}
	tx->head = tx->tail = NULL;
}

static void fail(struct rep_tx *tx, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct rep_tx *tx, int err, const char *fmt, ...)
{
	char msg[REP_MSG_MAX];
	va_list ap;

	if (tx->state == TX_OVER)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	qb_log(LOG_WARNING, "replica cycle %llu of %s to %s: %s", (unsigned long long)tx->c.cycle,
	       tx->c.vm, tx->node, msg);
	if (tx->st)
		chan_stream_abort(tx->st, err, "%s", msg);
	tx->st = NULL;
	over(tx, err, msg);
}

/* ---- writing, in order ---- */

static int item_write(struct rep_tx *tx, struct tx_item *i)
{
	size_t total = i->enc.hlen + i->enc.dlen;

	while (i->woff < total) {
		const uint8_t *p;
		size_t n;
		ssize_t w;

		if (i->woff < i->enc.hlen) {
			p = i->enc.hdr + i->woff;
			n = i->enc.hlen - i->woff;
		} else {
			p = i->enc.data + (i->woff - i->enc.hlen);
			n = total - i->woff;
		}
		w = chan_stream_write(tx->st, p, n);
		if (w == -EAGAIN)
			return 0;
		if (w < 0)
			return (int)w;
		i->woff += (size_t)w;
		tx->s.wire_bytes += (uint64_t)w;
	}
	return 1;
}

static size_t item_left(const struct tx_item *i)
{
	return i->enc.hlen + i->enc.dlen - i->woff;
}

static int item_count(struct rep_tx *tx, struct tx_item *i)
{
	const struct rep_frame *f = &i->enc.f;
	struct rep_err e;
	int rc = rep_tally_add(&tx->t, f, &e);

	if (rc < 0) {
		fail(tx, -EPROTO, "internal error: %s", e.msg);
		return rc;
	}
	i->counted = true;
	tx->s.hurried += i->hurry && f->kind == REP_KIND_EXTENT;
	if (f->kind == REP_KIND_EXTENT) {
		tx->s.extents++;
		tx->s.raw_bytes += f->length;
		tx->s.zstd += f->codec == REP_CODEC_ZSTD;
	} else if (f->kind == REP_KIND_ZERO) {
		tx->s.zeros++;
		tx->s.zero_bytes += f->length;
	}
	return 0;
}

/*
 * The head is in a run: it and the ready items whose bytes follow its in
 * that run go in one write (counted first, in order). 1 when something was
 * written, 0 when the channel takes nothing now, -1 when the cycle failed.
 */
static int run_write(struct rep_tx *tx)
{
	struct tx_item *i = tx->head, *j;
	size_t n = item_left(i), end = i->roff + i->enc.hlen + i->enc.dlen;
	ssize_t w;

	for (j = i->next; j && j->ready && j->run == i->run && j->roff == end; j = j->next) {
		if (!j->counted && item_count(tx, j) < 0)
			return -1;
		n += item_left(j);
		end += item_left(j);
	}
	w = chan_stream_write(tx->st, i->run->buf + i->roff + i->woff, n);
	if (w == -EAGAIN)
		return 0;
	if (w < 0) {
		fail(tx, (int)w, "cannot write to the stream: %s", strerror((int)-w));
		return -1;
	}
	tx->s.wire_bytes += (uint64_t)w;
	while (w > 0) {
		i = tx->head;
		if ((size_t)w < item_left(i)) {
			i->woff += (size_t)w;
			break;
		}
		w -= (ssize_t)item_left(i);
		tx->head = i->next;
		if (!tx->head)
			tx->tail = NULL;
		item_free(tx, i);
	}
	return 1;
}

static void timer_cb(void *data);

static void send_fin(struct rep_tx *tx)
{
	int rc = chan_stream_finish(tx->st);
	unsigned ms = FIN_RETRY_MS;

	if (rc == 0) {
		tx->state = TX_FIN_SENT;
		ms = tx->cfg.answer_timeout_ms;
	} else if (rc != -EAGAIN) {
		fail(tx, rc, "cannot end the stream: %s", strerror(-rc));
		return;
	}
	timer_off(tx, &tx->timer);
	if (qb_loop_timer_add(tx->loop, QB_LOOP_MED, (uint64_t)ms * QB_TIME_NS_IN_MSEC, tx,
			      timer_cb, &tx->timer) < 0)
		fail(tx, -ENOMEM, "cannot arm a timer");
}

static void pump(struct rep_tx *tx)
{
	struct tx_item *i;
	int rc;

	while (tx->st && (i = tx->head)) {
		if (i->kind == REP_KIND_END && !i->ready) {
			rep_enc_end(&i->enc, &tx->t);
			i->ready = true;
		}
		if (!i->ready) {
			if (tx->batch) /* the channel waits: send what was collected */
				batch_send(tx);
			else
				tx->hurry = tx->hurry || !tx->chan_full;
			return;
		}
		if (!i->counted && item_count(tx, i) < 0)
			return;
		if (i->run) {
			rc = run_write(tx);
			if (rc < 0)
				return;
			if (rc > 0)
				continue;
			tx->chan_full = true;
			tx->hurry = false;
			return;
		}
		rc = item_write(tx, i);
		if (rc == 0) {
			tx->chan_full = true;
			tx->hurry = false;
			return;
		}
		if (rc < 0) {
			fail(tx, rc, "cannot write to the stream: %s", strerror(-rc));
			return;
		}
		tx->head = i->next;
		if (!tx->head)
			tx->tail = NULL;
		item_free(tx, i);
	}
	if (tx->st && tx->state == TX_FINISHING && !tx->head)
		send_fin(tx);
}

/* ---- entry and exit ---- */

static void tx_free(struct rep_tx *tx)
{
	timer_off(tx, &tx->timer);
	timer_off(tx, &tx->kick);
	rep_ctx_free(tx->x);
	free(tx);
}

static bool more_due(const struct rep_tx *tx)
{
	return tx->want_more && tx->state == TX_OPEN && tx->inflight <= tx->cfg.max_inflight / 2;
}

static void kick_cb(void *data)
{
	struct rep_tx *tx = data;

	tx->kick = 0;
	enter(tx);
	if (tx->batch)
		batch_send(tx);
	leave(tx, false);
}

static void kick_arm(struct rep_tx *tx)
{
	if (!tx->kick)
		qb_loop_timer_add(tx->loop, QB_LOOP_HIGH, 0, tx, kick_cb, &tx->kick);
}

/* From the loop: more() and done() are due now; from the caller, later. */
static void leave(struct rep_tx *tx, bool caller)
{
	if (tx->depth > 1) {
		tx->depth--;
		tx->again = true;
		return;
	}
	do {
		tx->again = false;
		if (tx->state != TX_OVER)
			pump(tx);
		if (!caller && more_due(tx)) {
			tx->want_more = false;
			if (tx->ops.more)
				tx->ops.more(tx, tx->opaque);
		}
	} while (tx->again);
	tx->depth = 0;
	if (caller && (more_due(tx) || tx->batch || (tx->state == TX_OVER && !tx->working))) {
		kick_arm(tx);
		return;
	}
	if (caller || tx->state != TX_OVER || tx->working)
		return;
	if (!tx->told) {
		tx->told = true;
		tx->ops.done(tx, tx->err, tx->msg, &tx->s, tx->opaque);
	}
	tx_free(tx);
}

/* ---- the channel's callbacks ---- */

static void st_writable(struct chan_stream *st, void *opaque)
{
	struct rep_tx *tx = opaque;

	enter(tx);
	tx->chan_full = false;
	leave(tx, false);
}

static void st_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct rep_tx *tx = opaque;

	enter(tx);
	tx->st = NULL; /* freed once this returns */
	if (!err && tx->state == TX_FIN_SENT) {
		qb_log(LOG_INFO, "replica cycle %llu of %s to %s: stored (%llu extents, %llu zero "
		       "ranges, %llu bytes on the wire)", (unsigned long long)tx->c.cycle,
		       tx->c.vm, tx->node, (unsigned long long)tx->s.extents,
		       (unsigned long long)tx->s.zeros, (unsigned long long)tx->s.wire_bytes);
		over(tx, 0, "");
	} else {
		fail(tx, err ? err : -EPROTO, "%s", err ? msg : "the replica ended the stream");
	}
	leave(tx, false);
}

static void timer_cb(void *data)
{
	struct rep_tx *tx = data;

	tx->timer = 0;
	enter(tx);
	if (tx->state == TX_FIN_SENT)
		fail(tx, -ETIMEDOUT, "no answer from %s %u ms after the cycle's end", tx->node,
		     tx->cfg.answer_timeout_ms);
	leave(tx, false);
}

static const struct chan_stream_ops st_ops = {
	.writable = st_writable,
	.end = st_end,
};

/* ---- the workers ---- */

/* What one worker call shares between the extents of its batch. */
struct tx_work {
	struct rep_ctx *x;
	ZSTD_CCtx *cc;
	struct rep_slab *run;	/* the run small frames join, back to back */
	uint8_t *scratch;	/* zstd's output for small extents: copied to the run */
	size_t scratch_cap;
	unsigned misses;	/* small extents zstd could not shrink, in a row */
	unsigned passed;	/* small extents since: every SKIP_EVERY-th is tried */
};

/* A small frame joins the batch's run (a new one when it is full): one
 * piece with its neighbours instead of a header alone. false without
 * memory: it goes on its own. */
static bool join(struct tx_work *w, struct tx_item *i)
{
	uint8_t *p = rep_slab_take(w->x, &w->run, RUN_SIZE, i->enc.hlen + i->enc.dlen, 1, NULL);

	if (!p)
		return false;
	memcpy(p, i->enc.hdr, i->enc.hlen);
	memcpy(p + i->enc.hlen, i->enc.data, i->enc.dlen);
	i->run = w->run;
	i->roff = (size_t)(p - w->run->buf);
	return true;
}

/*
 * A small extent is compressed into the batch's scratch and joins the run;
 * a big one (or a small one that could not join) keeps a scratch of its
 * own until written. A pool buffer per small extent cost more than zstd
 * itself (the pool keeps 16: the rest were malloc'd and freed, faulting).
 */
static void encode(struct tx_work *w, struct tx_item *i)
{
	size_t len = (size_t)i->len;
	bool small = len + REP_ENC_HDR_MAX <= JOIN_MAX;
	bool unprobed = len < REP_PROBE_MIN;
	bool try = !i->hurry && (!unprobed || w->misses < SKIP_AFTER ||
				 ++w->passed % SKIP_EVERY == 0);
	enum rep_plan plan = rep_enc_plan(try ? w->cc : NULL, i->buf, len);
	uint8_t *out = NULL;

	if (plan == REP_PLAN_ZSTD && small) {
		if (!w->scratch)
			w->scratch = rep_buf_get(w->x, JOIN_MAX, &w->scratch_cap);
		out = w->scratch;
	} else if (plan == REP_PLAN_ZSTD) {
		out = i->scratch = rep_buf_get(w->x, REP_ZSTD_KEEP(len), &i->scratch_cap);
	}
	if (!out && plan == REP_PLAN_ZSTD)
		plan = REP_PLAN_RAW;
	rep_enc_extent(&i->enc, plan, w->cc, out, i->seq, i->disk, i->off, i->buf, len);
	if (plan == REP_PLAN_ZSTD && unprobed)
		w->misses = i->enc.f.codec == REP_CODEC_ZSTD ? 0 : w->misses + 1;
	if (!small || !i->enc.dlen || join(w, i) || i->enc.data != w->scratch)
		return;
	i->scratch = w->scratch; /* could not join: the bytes are this frame's now */
	i->scratch_cap = w->scratch_cap;
	w->scratch = NULL;
}

static void work_fn(struct exec_item *it)
{
	struct tx_batch *b = EXEC_CONTAINER_OF(it, struct tx_batch, work);
	struct tx_work w = { .x = b->tx->x }; /* set at open, never written again */

	w.cc = rep_cctx_get(w.x);
	for (unsigned k = 0; k < b->n; k++)
		encode(&w, b->items[k]);
	rep_buf_put(w.x, w.scratch, w.scratch_cap);
	rep_slab_unref(w.x, w.run, NULL); /* the worker's hold: its items keep theirs */
	if (w.cc)
		rep_cctx_put(w.x, w.cc);
}

/* An item is encoded: the bytes its frame does not need go now. */
static void item_encoded(struct rep_tx *tx, struct tx_item *i)
{
	i->ready = true;
	if (i->enc.data != i->buf || i->run)
		buf_release(tx, i); /* zstd, zeros or joined: not needed */
	if (i->enc.data != i->scratch || i->run) {
		rep_buf_put(tx->x, i->scratch, i->scratch_cap);
		i->scratch = NULL;
	}
}

static void work_done(struct exec_item *it)
{
	struct tx_batch *b = EXEC_CONTAINER_OF(it, struct tx_batch, work);
	struct rep_tx *tx = b->tx;

	enter(tx);
	tx->working -= b->n;
	for (unsigned k = 0; k < b->n; k++) {
		struct tx_item *i = b->items[k];

		i->on_worker = false;
		if (tx->state == TX_OVER)
			item_free(tx, i); /* orphaned by over() */
		else if (exec_item_cancelled(it))
			fail(tx, -ECANCELED, "the executor shut down"); /* frees the rest */
		else
			item_encoded(tx, i);
	}
	free(b);
	leave(tx, false);
}

static void batch_send(struct rep_tx *tx)
{
	struct tx_batch *b = tx->batch;

	tx->batch = NULL;
	exec_item_init(&b->work, work_fn, work_done);
	exec_push(rep_ctx_queue(tx->x), &b->work, NULL);
}

/* ---- the caller's calls ---- */

struct rep_tx *rep_tx_open(const struct hca_env *env, struct rep_ctx *x, const char *node,
			   const struct rep_cycle *c, const struct rep_tx_cfg *cfg,
			   const struct rep_tx_ops *ops, void *opaque)
{
	struct rep_tx *tx = NULL;
	uint8_t *hdr = NULL;
	size_t len;
	struct rep_err e;
	int rc = -EINVAL;

	if (!env || !x || !node || !c || !ops || !ops->done)
		goto out;
	rc = rep_cycle_encode(c, &hdr, &len, &e);
	if (rc < 0) {
		qb_log(LOG_ERR, "replica stream to %s: %s", node, e.msg);
		goto out;
	}
	rc = -ENOMEM;
	tx = calloc(1, sizeof(*tx));
	if (!tx)
		goto out;
	tx->x = rep_ctx_ref(x);
	tx->loop = env->loop;
	tx->ops = *ops;
	tx->opaque = opaque;
	tx->c = *c;
	snprintf(tx->node, sizeof(tx->node), "%s", node);
	if (cfg)
		tx->cfg = *cfg;
	tx->cfg.max_inflight = tx->cfg.max_inflight ? tx->cfg.max_inflight : REP_TX_INFLIGHT;
	tx->cfg.open_timeout_ms = tx->cfg.open_timeout_ms ? tx->cfg.open_timeout_ms : 10000;
	tx->cfg.answer_timeout_ms = tx->cfg.answer_timeout_ms ? tx->cfg.answer_timeout_ms : 120000;
	rep_tally_init(&tx->t, hdr, len);
	tx->next_seq = 1;
	tx->st = env->stream_open(env->ctx, node, REP_STREAM_METHOD, hdr, len, CHAN_STREAM_PUSH,
				  0, tx->cfg.open_timeout_ms, &st_ops, tx);
	if (!tx->st) {
		rc = errno ? -errno : -EIO;
		qb_log(LOG_WARNING, "replica cycle %llu of %s: cannot open a stream to %s: %s",
		       (unsigned long long)c->cycle, c->vm, node, strerror(-rc));
		goto out;
	}
	free(hdr);
	return tx;
out:
	if (tx)
		tx_free(tx);
	free(hdr);
	errno = -rc;
	return NULL;
}

static struct tx_item *item_add(struct rep_tx *tx, enum rep_kind kind, size_t cost)
{
	struct tx_item *i = calloc(1, sizeof(*i));

	if (!i)
		return NULL;
	i->tx = tx;
	i->kind = kind;
	i->seq = tx->next_seq++;
	i->cost = cost + ITEM_COST;
	tx->inflight += i->cost;
	if (tx->tail)
		tx->tail->next = i;
	else
		tx->head = i;
	tx->tail = i;
	return i;
}

static int push_check(struct rep_tx *tx, uint32_t disk, uint64_t off, uint64_t len)
{
	if (tx->state != TX_OPEN)
		return -EPIPE;
	if (!len)
		return -EINVAL;
	if (rep_cycle_range(&tx->c, disk, off, len, NULL) < 0)
		return -ERANGE;
	if (tx->inflight >= tx->cfg.max_inflight) {
		tx->want_more = true;
		return -EAGAIN;
	}
	return 0;
}

int rep_tx_extent(struct rep_tx *tx, uint32_t disk, uint64_t off, void *buf, size_t len)
{
	struct tx_item *i;
	int rc;

	if (!buf || len > REP_EXTENT_MAX)
		return tx->state == TX_OPEN ? -EINVAL : -EPIPE;
	rc = push_check(tx, disk, off, len);
	if (rc < 0)
		return rc;
	if (tx->batch && tx->batch->bytes + len + REP_ENC_HDR_MAX > BATCH_BYTES)
		batch_send(tx); /* its frames fill a run */
	if (!tx->batch && !(tx->batch = calloc(1, sizeof(*tx->batch))))
		return -ENOMEM;
	tx->batch->tx = tx;
	i = item_add(tx, REP_KIND_EXTENT, len);
	if (!i)
		return -ENOMEM;
	i->disk = disk;
	i->off = off;
	i->len = len;
	i->buf = buf;
	i->hurry = tx->hurry;
	i->on_worker = true;
	tx->working++;
	tx->batch->items[tx->batch->n++] = i;
	tx->batch->bytes += len + REP_ENC_HDR_MAX;
	if (len >= BATCH_SMALL || tx->batch->n == BATCH_MAX)
		batch_send(tx);
	else
		kick_arm(tx); /* what else the caller pushes now goes with it */
	return 0;
}

int rep_tx_zero(struct rep_tx *tx, uint32_t disk, uint64_t off, uint64_t len)
{
	struct tx_item *i;
	int rc = push_check(tx, disk, off, len);

	if (rc < 0)
		return rc;
	i = item_add(tx, REP_KIND_ZERO, 0);
	if (!i)
		return -ENOMEM;
	rep_enc_zero(&i->enc, i->seq, disk, off, len);
	i->ready = true;
	enter(tx);
	leave(tx, true);
	return 0;
}

int rep_tx_finish(struct rep_tx *tx)
{
	if (tx->state != TX_OPEN)
		return -EPIPE;
	if (!item_add(tx, REP_KIND_END, 0))
		return -ENOMEM;
	tx->state = TX_FINISHING;
	enter(tx);
	leave(tx, true);
	return 0;
}

const struct rep_tx_stats *rep_tx_stats(const struct rep_tx *tx)
{
	return &tx->s;
}

void rep_tx_abort(struct rep_tx *tx, int err, const char *fmt, ...)
{
	char msg[REP_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	enter(tx);
	tx->told = true;
	fail(tx, err < 0 ? err : -ECANCELED, "%s", msg);
	leave(tx, true);
}
