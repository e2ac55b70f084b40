/*
 * test_rep_stream: replication cycles over a real node channel (server
 * "node1" takes cycles, peer "node2" sends them, one qb_loop, 127.0.0.1),
 * through replica/rep_stream.h with an executor of two workers. The sink
 * writes into in-memory disks, at once or later, and the test compares them
 * with the source's; streams written by hand play a corrupt, reordered or
 * truncated sender.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <unistd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <qb/qblog.h>
#include <qb/qbloop.h>

#include "base/env.h"
#include "base/exec.h"
#include "proto/chan.h"
#include "replica/rep_stream.h"
#include "tests/unit/util_certs.h"

#define SAFETY_MS 30000u
#define D0 (6u << 20)
#define D1 (3u << 20)

static struct pki *pki;

struct sink {
	uint8_t *disk[2];
	int opens, ends, fails;
	int fail_err;
	char fail_msg[REP_MSG_MAX];
	struct rep_end end;
	int refuse_open;	 /* open() refuses with this */
	int frame_err;		 /* frame_done() with this, at frame... */
	uint64_t frame_err_seq;
	const char *frame_why;	 /* frame_err with this line (rep_rx_frame_fail) */
	int ack_err;		 /* the answer to end() */
	bool later;		 /* complete frames from a timer */
	unsigned held, max_held; /* frames not yet done */
	struct rep_rx_frame *pending[256];
	unsigned npending;
	qb_loop_timer_handle t;
	qb_loop_t *loop;
};

struct src {
	int dones, mores;
	int err;
	char msg[REP_MSG_MAX];
	struct rep_tx_stats s;
	uint64_t released;
};

struct h {
	qb_loop_t *loop;
	struct exec *exec;
	struct exec_queue *q;
	struct chan_tls *stls, *ctls;
	struct chan_server *srv;
	struct chan_peer *peer;
	struct hca_env env;
	struct rep_ctx *x;
	struct rep_recv *recv;
	struct sink sink;
	struct src src;
};

/* ---- the environment the stream is handed ---- */

static int env_handle_stream(void *ctx, const char *method, env_stream_fn fn, void *opaque)
{
	struct h *h = ctx;

	return chan_handle_stream(h->srv, method, fn, opaque);
}

static struct chan_stream *env_stream_open(void *ctx, const char *node, const char *method,
					   const void *hdr, size_t len, int dir, size_t window,
					   unsigned timeout_ms,
					   const struct chan_stream_ops *ops, void *opaque)
{
	struct h *h = ctx;

	if (strcmp(node, "node1") != 0) {
		errno = ENOENT;
		return NULL;
	}
	return chan_stream_open(h->peer, method, hdr, len, (enum chan_stream_dir)dir, window,
				timeout_ms, ops, opaque);
}

/* ---- the sink: two disks in memory ---- */

static int sk_open(struct rep_rx *rx, const struct rep_cycle *c, void *opaque, void **cycle,
		   struct rep_err *e)
{
	struct sink *k = opaque;

	assert_string_equal(rep_rx_peer(rx), "node2");
	if (k->refuse_open) {
		snprintf(e->msg, sizeof(e->msg), "cycle %llu of %s: replica busy",
			 (unsigned long long)c->cycle, c->vm);
		return k->refuse_open;
	}
	assert_int_equal(c->ndisks, 2);
	assert_true(c->disks[0].size == D0 && c->disks[1].size == D1);
	k->opens++;
	*cycle = k;
	return 0;
}

static void complete(struct sink *k, struct rep_rx_frame *fr, uint64_t seq)
{
	k->held--;
	if (k->frame_why && k->frame_err && seq >= k->frame_err_seq)
		rep_rx_frame_fail(fr, k->frame_err, "%s", k->frame_why);
	else
		rep_rx_frame_done(fr, k->frame_err && seq >= k->frame_err_seq ? k->frame_err : 0);
}

static void later_cb(void *data)
{
	struct sink *k = data;
	unsigned n = k->npending;

	k->t = 0;
	k->npending = 0;
	for (unsigned i = 0; i < n; i++)
		complete(k, k->pending[i], 0);
}

static void sk_frame(struct rep_rx *rx, struct rep_rx_frame *fr, const struct rep_frame *f,
		     void *cycle)
{
	struct sink *k = cycle;

	assert_true(f->disk < 2);
	if (f->kind == REP_KIND_EXTENT)
		memcpy(k->disk[f->disk] + f->offset, f->data, f->length);
	else
		memset(k->disk[f->disk] + f->offset, 0, f->length);
	k->held++;
	k->max_held = k->held > k->max_held ? k->held : k->max_held;
	if (!k->later) {
		complete(k, fr, f->seq);
		return;
	}
	assert_true(k->npending < 256);
	k->pending[k->npending++] = fr;
	if (!k->t)
		qb_loop_timer_add(k->loop, QB_LOOP_MED, 2 * QB_TIME_NS_IN_MSEC, k, later_cb, &k->t);
}

static void sk_end(struct rep_rx *rx, const struct rep_end *e, void *cycle)
{
	struct sink *k = cycle;

	assert_int_equal(k->held, 0);
	k->ends++;
	k->end = *e;
	if (k->ack_err)
		rep_rx_ack(rx, k->ack_err, "cannot make recovery point %d", 6);
	else
		rep_rx_ack(rx, 0, "stored");
}

static void sk_fail(struct rep_rx *rx, int err, const char *msg, void *cycle)
{
	struct sink *k = cycle;

	k->fails++;
	k->fail_err = err;
	snprintf(k->fail_msg, sizeof(k->fail_msg), "%s", msg);
}

static const struct rep_sink_ops sink_ops = {
	.open = sk_open,
	.frame = sk_frame,
	.end = sk_end,
	.fail = sk_fail,
};

/* ---- the source ---- */

static void src_more(struct rep_tx *tx, void *opaque)
{
	((struct src *)opaque)->mores++;
}

static void src_done(struct rep_tx *tx, int err, const char *msg, const struct rep_tx_stats *s,
		     void *opaque)
{
	struct src *o = opaque;

	o->dones++;
	o->err = err;
	o->s = *s;
	snprintf(o->msg, sizeof(o->msg), "%s", msg);
}

static void src_release(void *buf, void *opaque)
{
	((struct src *)opaque)->released++;
}

static const struct rep_tx_ops src_ops = {
	.more = src_more,
	.done = src_done,
	.release = src_release,
};

static bool src_done_cond(void *arg)
{
	return ((struct src *)arg)->dones > 0;
}

/* ---- harness ---- */

static struct h *h_new(const struct rep_recv_cfg *rc)
{
	struct h *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	h->loop = qb_loop_create();
	h->exec = exec_new(h->loop);
	h->q = exec_queue_new(h->exec, "rep", 2);
	assert_non_null(h->q);
	h->stls = pki_tls(pki, "node1");
	h->ctls = pki_tls(pki, "node2");
	h->srv = chan_server_new(h->loop, h->stls, NULL);
	assert_int_equal(chan_server_listen(h->srv, "127.0.0.1", 0), 0);
	h->peer = chan_peer_new(h->loop, h->ctls, "node1", "127.0.0.1", chan_server_port(h->srv),
				NULL);
	h->env.loop = h->loop;
	h->env.exec = h->exec;
	h->env.node = "node2";
	h->env.ctx = h;
	h->env.handle_stream = env_handle_stream;
	h->env.stream_open = env_stream_open;
	h->x = rep_ctx_new(h->q);
	assert_non_null(h->x);
	h->sink.loop = h->loop;
	h->sink.disk[0] = calloc(1, D0);
	h->sink.disk[1] = calloc(1, D1);
	h->recv = rep_recv_new(&h->env, h->x, rc, &sink_ops, &h->sink);
	assert_non_null(h->recv);
	assert_null(rep_recv_new(&h->env, h->x, rc, &sink_ops, &h->sink));
	assert_int_equal(errno, EEXIST);
	return h;
}

static void h_free(struct h *h)
{
	chan_peer_free(h->peer);
	chan_server_free(h->srv);
	rep_recv_free(h->recv);
	exec_free(h->exec, 5000);
	rep_ctx_free(h->x);
	chan_tls_free(h->stls);
	chan_tls_free(h->ctls);
	if (h->sink.t)
		qb_loop_timer_del(h->loop, h->sink.t);
	qb_loop_destroy(h->loop);
	free(h->sink.disk[0]);
	free(h->sink.disk[1]);
	free(h);
}

static void cycle_of(struct rep_cycle *c, uint64_t n)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->vm, "web1");
	c->relation = 9;
	c->incarnation = 1;
	c->cycle = n;
	c->base = n - 1;
	c->full = n == 1;
	c->ndisks = 2;
	strcpy(c->disks[0].name, "root");
	c->disks[0].size = D0;
	strcpy(c->disks[1].name, "data");
	c->disks[1].size = D1;
}

/* Source disks: text, random and zero regions of assorted sizes. */
static uint8_t *src_disk[2];

static void src_disks_make(void)
{
	static const char *w[] = { "replica ", "journal ", "INFO ", "block=", "17 ", "\n  " };
	uint64_t x = 88172645463325252ull;
	size_t sizes[2] = { D0, D1 };

	for (int d = 0; d < 2; d++) {
		src_disk[d] = calloc(1, sizes[d]);
		for (size_t o = 0; o < sizes[d] - (d ? 256u << 10 : 0); o += 65536) {
			unsigned kind = (unsigned)((o / 65536 + (unsigned)d) % 5);

			for (size_t i = o; i < o + 65536; i++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				if (kind == 0 || kind == 3)
					src_disk[d][i] = (uint8_t)x;
				else if (kind == 1)
					src_disk[d][i] = (uint8_t)w[x % 6][i % 3];
			}
		}
	}
}

/* Push the whole of both disks in extents of @ext bytes, zero holes as ranges;
 * wait for room when told. */
struct pusher {
	struct h *h;
	struct rep_tx *tx;
	int disk;
	uint64_t off;
	size_t ext;
	bool finished;
};

static bool pusher_step(struct pusher *p)
{
	size_t sizes[2] = { D0, D1 };

	while (p->disk < 2) {
		/* the second disk's last 256 KiB: a range known to read as zeros */
		size_t hole = 256u << 10, end = sizes[p->disk] - (p->disk == 1 ? hole : 0);
		size_t n = end - p->off < p->ext ? end - p->off : p->ext;
		int rc;

		if (p->disk == 1 && p->off == end)
			rc = rep_tx_zero(p->tx, 1, p->off, hole), n = hole;
		else
			rc = rep_tx_extent(p->tx, (uint32_t)p->disk, p->off,
					   src_disk[p->disk] + p->off, n);
		if (rc == -EAGAIN)
			return false;
		assert_int_equal(rc, 0);
		p->off += n;
		if (p->off == sizes[p->disk]) {
			p->disk++;
			p->off = 0;
		}
	}
	if (!p->finished) {
		assert_int_equal(rep_tx_finish(p->tx), 0);
		p->finished = true;
	}
	return true;
}

static void pusher_more(struct rep_tx *tx, void *opaque);

static void pusher_done(struct rep_tx *tx, int err, const char *msg,
			const struct rep_tx_stats *s, void *opaque)
{
	struct pusher *p = opaque;

	src_done(tx, err, msg, s, &p->h->src);
}

static void pusher_release(void *buf, void *opaque)
{
	struct pusher *p = opaque;

	p->h->src.released++;
}

static const struct rep_tx_ops pusher_ops = {
	.more = pusher_more,
	.done = pusher_done,
	.release = pusher_release,
};

static void pusher_more(struct rep_tx *tx, void *opaque)
{
	struct pusher *p = opaque;

	p->h->src.mores++;
	pusher_step(p);
}

static void run_cycle(struct h *h, uint64_t n, size_t ext, size_t inflight)
{
	struct rep_tx_cfg cfg = { .max_inflight = inflight };
	struct rep_cycle c;
	struct pusher p = { .h = h, .ext = ext };

	cycle_of(&c, n);
	memset(&h->src, 0, sizeof(h->src));
	p.tx = rep_tx_open(&h->env, h->x, "node1", &c, &cfg, &pusher_ops, &p);
	assert_non_null(p.tx);
	pusher_step(&p);
	assert_true(loop_run_until(h->loop, src_done_cond, &h->src, SAFETY_MS));
}

/* ---- tests ---- */

static void cycle_arrives_whole(void **state)
{
	struct h *h = h_new(NULL);

	run_cycle(h, 1, 1u << 20, 2u << 20);
	assert_int_equal(h->src.err, 0);
	assert_int_equal(h->sink.opens, 1);
	assert_int_equal(h->sink.ends, 1);
	assert_int_equal(h->sink.fails, 0);
	assert_memory_equal(h->sink.disk[0], src_disk[0], D0);
	assert_memory_equal(h->sink.disk[1], src_disk[1], D1);
	assert_true(h->src.mores > 0);		/* the bound was reached */
	assert_true(h->src.s.zstd > 0);		/* text compressed */
	assert_true(h->src.s.zero_bytes > 0);	/* zeros detected */
	assert_true(h->src.s.wire_bytes < (uint64_t)D0 + D1);
	assert_true(h->sink.end.extents == h->src.s.extents);
	assert_true(h->sink.end.zeros == h->src.s.zeros);
	assert_true(h->src.released == h->src.s.extents + h->src.s.zeros - 1); /* one pushed zero */
	h_free(h);
}

/* Small extents, a sink that completes later, a small frame budget. */
static void slow_sink_bounded(void **state)
{
	struct rep_recv_cfg rc = { .window = REP_RX_WINDOW_MIN, .max_frames = 8 };
	struct h *h = h_new(&rc);

	h->sink.later = true;
	run_cycle(h, 2, 24u << 10, 1u << 20);
	assert_int_equal(h->src.err, 0);
	assert_true(h->sink.max_held <= 8);
	assert_true(h->src.s.zeros > 1); /* zero extents went as ranges */
	assert_memory_equal(h->sink.disk[0], src_disk[0], D0);
	assert_memory_equal(h->sink.disk[1], src_disk[1], D1);
	/* and again on the same node: the next cycles, big and tiny extents
	 * (these pile up in the receiver's backlog behind the 8 frames) */
	memset(h->sink.disk[0], 0xaa, D0);
	run_cycle(h, 3, 1u << 20, 0);
	assert_int_equal(h->src.err, 0);
	assert_memory_equal(h->sink.disk[0], src_disk[0], D0);
	memset(h->sink.disk[1], 0xaa, D1);
	run_cycle(h, 4, 4096, 0);
	assert_int_equal(h->src.err, 0);
	assert_memory_equal(h->sink.disk[0], src_disk[0], D0);
	assert_memory_equal(h->sink.disk[1], src_disk[1], D1);
	h_free(h);
}

static void sink_refusals_reach_the_source(void **state)
{
	struct h *h = h_new(NULL);

	h->sink.refuse_open = -EBUSY;
	run_cycle(h, 4, 1u << 20, 0);
	assert_int_equal(h->src.err, -EBUSY);
	assert_string_equal(h->src.msg, "cycle 4 of web1: replica busy");
	h->sink.refuse_open = 0;

	h->sink.frame_err = -ENOSPC;
	h->sink.frame_err_seq = 3;
	run_cycle(h, 5, 1u << 20, 0);
	assert_int_equal(h->src.err, -ENOSPC);
	assert_non_null(strstr(h->src.msg, "could not store frame 3"));
	assert_int_equal(h->sink.fails, 1);
	assert_int_equal(h->sink.fail_err, -ENOSPC);
	h->sink.frame_err = 0;

	/* a frame failed with the sink's own reason: the source gets it */
	h->sink.frame_err = -ENOENT;
	h->sink.frame_err_seq = 1;
	h->sink.frame_why = "cycle 7 could not begin here: pool far: no such pool";
	run_cycle(h, 7, 1u << 20, 0);
	assert_int_equal(h->src.err, -ENOENT);
	assert_non_null(strstr(h->src.msg, "pool far: no such pool"));
	assert_int_equal(h->sink.fails, 2);
	h->sink.frame_err = 0;
	h->sink.frame_why = NULL;

	h->sink.ack_err = -EIO;
	run_cycle(h, 8, 1u << 20, 0);
	assert_int_equal(h->src.err, -EIO);
	assert_string_equal(h->src.msg, "cannot make recovery point 6");
	assert_int_equal(h->sink.fails, 2); /* an answer is not a failure */
	h_free(h);
}

/* ---- a sender written by hand ---- */

struct raw_src {
	const uint8_t *p;
	size_t n, off;
	bool finished;
	int ends, err;
	char msg[REP_MSG_MAX];
};

static void raw_writable(struct chan_stream *st, void *opaque)
{
	struct raw_src *r = opaque;

	while (r->off < r->n) {
		ssize_t w = chan_stream_write(st, r->p + r->off, r->n - r->off);

		if (w < 0)
			return;
		r->off += (size_t)w;
	}
	if (!r->finished && chan_stream_finish(st) == 0)
		r->finished = true;
}

static void raw_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct raw_src *r = opaque;

	r->ends++;
	r->err = err;
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static const struct chan_stream_ops raw_ops = { .writable = raw_writable, .end = raw_end };

static bool raw_ended(void *arg)
{
	return ((struct raw_src *)arg)->ends > 0;
}

/* A cycle of three extents and a zero range, then its end, encoded by hand;
 * @mangle changes it before it is sent. */
static void raw_cycle(struct h *h, void (*mangle)(uint8_t *p, size_t *n, const size_t *at),
		      struct raw_src *r)
{
	static uint8_t buf[1u << 20];
	struct rep_cycle c;
	struct rep_tally t;
	struct rep_enc en;
	struct rep_err e;
	uint8_t *hdr;
	size_t hl, n = 0, at[6];

	cycle_of(&c, 7);
	assert_int_equal(rep_cycle_encode(&c, &hdr, &hl, &e), 0);
	rep_tally_init(&t, hdr, hl);
	for (unsigned i = 0; i < 5; i++) {
		at[i] = n;
		if (i == 3)
			rep_enc_zero(&en, i + 1, 1, 0, 4096);
		else if (i < 3)
			rep_enc_extent(&en, REP_PLAN_RAW, NULL, NULL, i + 1, 0, (uint64_t)i << 16,
				       src_disk[0] + (65536u * 3), 65536);
		else
			rep_enc_end(&en, &t);
		if (i < 4)
			assert_int_equal(rep_tally_add(&t, &en.f, &e), 0);
		memcpy(buf + n, en.hdr, en.hlen);
		if (en.dlen)
			memcpy(buf + n + en.hlen, en.data, en.dlen);
		n += en.hlen + en.dlen;
	}
	at[5] = n;
	if (mangle)
		mangle(buf, &n, at);
	memset(r, 0, sizeof(*r));
	r->p = buf;
	r->n = n;
	assert_non_null(chan_stream_open(h->peer, REP_STREAM_METHOD, hdr, hl, CHAN_STREAM_PUSH, 0,
					 2000, &raw_ops, r));
	free(hdr);
	assert_true(loop_run_until(h->loop, raw_ended, r, SAFETY_MS));
}

static void flip_data(uint8_t *p, size_t *n, const size_t *at)
{
	p[at[2] - 10] ^= 1;
}

static void swap_frames(uint8_t *p, size_t *n, const size_t *at)
{
	size_t a = at[1] - at[0], b = at[2] - at[1];
	uint8_t *tmp = malloc(a + b);

	memcpy(tmp, p + at[1], b);
	memcpy(tmp + b, p + at[0], a);
	memcpy(p + at[0], tmp, a + b);
	free(tmp);
}

static void bad_digest(uint8_t *p, size_t *n, const size_t *at)
{
	p[*n - 1] ^= 0x10;
}

static void no_end(uint8_t *p, size_t *n, const size_t *at)
{
	*n = at[4];
}

static void hand_made_streams(void **state)
{
	struct h *h = h_new(NULL);
	struct raw_src r;

	raw_cycle(h, NULL, &r);
	assert_int_equal(r.err, 0);
	assert_int_equal(h->sink.ends, 1);

	raw_cycle(h, flip_data, &r);
	assert_int_equal(r.err, -EILSEQ);
	assert_non_null(strstr(r.msg, "checksum mismatch"));
	assert_int_equal(h->sink.fail_err, -EILSEQ);

	raw_cycle(h, swap_frames, &r);
	assert_int_equal(r.err, -EILSEQ);
	assert_non_null(strstr(r.msg, "reordered"));

	raw_cycle(h, bad_digest, &r);
	assert_int_equal(r.err, -EILSEQ);
	assert_non_null(strstr(r.msg, "digest mismatch"));
	assert_int_equal(h->sink.ends, 1); /* never reached the sink's end */

	raw_cycle(h, no_end, &r);
	assert_int_equal(r.err, -EPROTO);
	assert_non_null(strstr(r.msg, "before the cycle's end"));
	assert_int_equal(h->sink.fails, 4);
	h_free(h);
}

static bool sink_failed(void *arg)
{
	return ((struct sink *)arg)->fails > 0;
}

static void pushes_checked_and_abort(void **state)
{
	struct h *h = h_new(NULL);
	struct rep_tx_cfg cfg = { .max_inflight = 1u << 20 };
	static uint8_t buf[1u << 20];
	struct rep_cycle c;
	struct rep_tx *tx;
	int rc = 0;

	cycle_of(&c, 8);
	assert_null(rep_tx_open(&h->env, h->x, "node9", &c, NULL, &src_ops, &h->src));
	assert_int_equal(errno, ENOENT);
	c.ndisks = 0;
	assert_null(rep_tx_open(&h->env, h->x, "node1", &c, NULL, &src_ops, &h->src));
	assert_int_equal(errno, EINVAL);
	cycle_of(&c, 8);
	tx = rep_tx_open(&h->env, h->x, "node1", &c, &cfg, &src_ops, &h->src);
	assert_non_null(tx);
	assert_int_equal(rep_tx_extent(tx, 2, 0, buf, 10), -ERANGE);
	assert_int_equal(rep_tx_extent(tx, 1, D1 - 5, buf, 10), -ERANGE);
	assert_int_equal(rep_tx_extent(tx, 0, 0, buf, 0), -EINVAL);
	assert_int_equal(rep_tx_extent(tx, 0, 0, buf, REP_EXTENT_MAX + 1), -EINVAL);
	assert_int_equal(rep_tx_zero(tx, 0, D0, 1), -ERANGE);
	for (int i = 0; i < 4 && rc == 0; i++)
		rc = rep_tx_extent(tx, 0, (uint64_t)i << 20, src_disk[0] + ((size_t)i << 20),
				   1u << 20);
	assert_int_equal(rc, -EAGAIN);
	loop_run_for(h->loop, 200);
	assert_int_equal(h->src.mores, 1);
	assert_int_equal(h->sink.opens, 1);
	rep_tx_abort(tx, -EINTR, "the source VM %s stopped", "web1");
	assert_true(loop_run_until(h->loop, sink_failed, &h->sink, SAFETY_MS));
	assert_int_equal(h->sink.fail_err, -EINTR);
	assert_string_equal(h->sink.fail_msg, "the source VM web1 stopped");
	loop_run_for(h->loop, 100);
	assert_int_equal(h->src.dones, 0);
	assert_true(h->src.released >= 1);
	(void)buf;
	h_free(h);
}

/* The replica goes away mid-cycle: the source hears of it. */
static void replica_gone(void **state)
{
	struct h *h = h_new(NULL);
	struct rep_cycle c;
	struct rep_tx *tx;

	cycle_of(&c, 9);
	h->sink.later = true;
	tx = rep_tx_open(&h->env, h->x, "node1", &c, NULL, &src_ops, &h->src);
	assert_non_null(tx);
	assert_int_equal(rep_tx_extent(tx, 0, 0, src_disk[0], 65536), 0);
	loop_run_for(h->loop, 100);
	assert_int_equal(h->sink.opens, 1);
	chan_server_free(h->srv);
	h->srv = NULL;
	assert_int_equal(h->sink.fails, 1); /* its timer completes what it held */
	assert_true(loop_run_until(h->loop, src_done_cond, &h->src, SAFETY_MS));
	assert_int_equal(h->src.err, -ECONNRESET);
	h_free(h);
}

/* ---- zstd yields to the channel ---- */

static atomic_bool unblock;

static void block_fn(struct exec_item *it)
{
	while (!atomic_load(&unblock))
		usleep(1000);
}

static bool sink_opened(void *arg)
{
	return ((struct sink *)arg)->opens > 0;
}

static bool tx_done_cond(void *arg)
{
	return ((struct src *)arg)->dones > 0;
}

/* The channel waits on the only worker: what is pushed meanwhile skips zstd. */
static void compression_yields_to_the_channel(void **state)
{
	struct h *h = h_new(NULL);
	struct exec_queue *q1 = exec_queue_new(h->exec, "rep-one", 1);
	struct rep_ctx *x1 = rep_ctx_new(q1);
	struct exec_item blocker;
	static uint8_t text[2][256u << 10];
	struct rep_cycle c;
	struct rep_tx *tx;

	for (size_t i = 0; i < sizeof(text[0]); i++)
		text[0][i] = text[1][i] = (uint8_t)"journal entry 42 ok\n"[i % 20];
	atomic_store(&unblock, false);
	exec_item_init(&blocker, block_fn, NULL);
	exec_push(q1, &blocker, NULL);
	cycle_of(&c, 11);
	tx = rep_tx_open(&h->env, x1, "node1", &c, NULL, &src_ops, &h->src);
	assert_non_null(tx);
	assert_int_equal(rep_tx_extent(tx, 0, 0, text[0], sizeof(text[0])), 0);
	/* opened and credited: the channel waits for extent 1 */
	assert_true(loop_run_until(h->loop, sink_opened, &h->sink, SAFETY_MS));
	loop_run_for(h->loop, 200);
	assert_int_equal(rep_tx_extent(tx, 0, 1u << 20, text[1], sizeof(text[1])), 0);
	assert_int_equal(rep_tx_finish(tx), 0);
	atomic_store(&unblock, true);
	assert_true(loop_run_until(h->loop, tx_done_cond, &h->src, SAFETY_MS));
	assert_int_equal(h->src.err, 0);
	assert_true(h->src.s.extents == 2);
	assert_true(h->src.s.zstd == 1);    /* the first, pushed before the wait */
	assert_true(h->src.s.hurried == 1); /* the second went raw */
	assert_memory_equal(h->sink.disk[0] + (1u << 20), text[1], sizeof(text[1]));
	rep_ctx_free(x1);
	h_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cycle_arrives_whole),
		cmocka_unit_test(slow_sink_bounded),
		cmocka_unit_test(sink_refusals_reach_the_source),
		cmocka_unit_test(hand_made_streams),
		cmocka_unit_test(pushes_checked_and_abort),
		cmocka_unit_test(replica_gone),
		cmocka_unit_test(compression_yields_to_the_channel),
	};
	int rc;

	signal(SIGPIPE, SIG_IGN);
	qb_log_init("test_rep_stream", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	log_capture_start();
	src_disks_make();
	pki = pki_new();
	if (!pki)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	pki_free(pki);
	free(src_disk[0]);
	free(src_disk[1]);
	qb_log_fini();
	return rc;
}
