/*
 * test_chan_stream: streams over the node channel (proto/chan.h), server
 * "node1" and peer "node2" on one qb_loop over 127.0.0.1. The data is a
 * fixed pseudo-random pattern with an odd period, so the receiver checks
 * every byte in place and order without keeping a copy; the receiver also
 * asserts it never holds more than its window.
 */
#include <errno.h>
#include <setjmp.h>
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

#include "proto/chan.h"
#include "proto/hca.pb-c.h"
#include "proto/wire.h"
#include "tests/unit/util_certs.h"

#define SAFETY_MS 30000u
#define PERIOD ((1u << 20) - 7u) /* pattern period: chunks never line up with it */

static struct pki *pki;
static uint8_t pattern[PERIOD];

/* The side that sends: a server handler's or an opener's. */
struct sender {
	uint64_t total, sent;
	int ends;
	int err;
	char msg[256];
	bool finished;
	bool stop;	   /* do not write from writable (tests drive it) */
};

/* The side that receives. */
struct receiver {
	uint64_t window;
	uint64_t got, held, max_held;
	bool pause;	   /* do not consume */
	bool abort_at_half;
	uint64_t total;	   /* for abort_at_half */
	int ends;
	int err;
	char msg[256];
	bool bad;	   /* a byte differed */
	int fins;	   /* fin() calls */
	struct chan_stream *fin_st; /* the handle fin() got, to answer on */
};

struct h {
	qb_loop_t *loop;
	struct chan_tls *stls, *ctls;
	struct chan_server *srv;
	struct chan_peer *peer;
	uint16_t port;
	struct sender ssnd;	/* the server's, for PULL */
	struct receiver srcv;	/* the server's, for PUSH */
	struct chan_stream *sst; /* the server's stream handle */
	uint64_t srv_window;
	int refuse;		/* the handler refuses with this */
	bool srv_fin;		/* "sink" answers the end itself */
};

/* ---- data ---- */

static void pattern_init(void)
{
	uint64_t x = 0x9E3779B97F4A7C15ull;

	for (size_t i = 0; i < PERIOD; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pattern[i] = (uint8_t)x;
	}
}

/* Does @buf equal the pattern from stream offset @off on? */
static bool pattern_at(uint64_t off, const uint8_t *buf, size_t len)
{
	while (len) {
		size_t at = (size_t)(off % PERIOD), n = PERIOD - at < len ? PERIOD - at : len;

		if (memcmp(buf, pattern + at, n) != 0)
			return false;
		buf += n;
		off += n;
		len -= n;
	}
	return true;
}

/* ---- sender and receiver callbacks, used on both sides ---- */

static void snd_writable(struct chan_stream *st, void *opaque)
{
	struct sender *s = opaque;

	while (!s->stop && s->sent < s->total) {
		size_t at = (size_t)(s->sent % PERIOD);
		uint64_t left = s->total - s->sent;
		size_t n = PERIOD - at < left ? PERIOD - at : (size_t)left;
		ssize_t w = chan_stream_write(st, pattern + at, n);

		if (w == -EAGAIN)
			return;
		assert_true(w > 0);
		s->sent += (uint64_t)w;
	}
	if (!s->stop && !s->finished && chan_stream_finish(st) == 0)
		s->finished = true;
}

static void snd_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct sender *s = opaque;

	s->ends++;
	s->err = err;
	snprintf(s->msg, sizeof(s->msg), "%s", msg);
}

static void rcv_data(struct chan_stream *st, const void *buf, size_t len, void *opaque)
{
	struct receiver *r = opaque;

	if (!pattern_at(r->got, buf, len))
		r->bad = true;
	r->got += len;
	r->held += len;
	r->max_held = r->held > r->max_held ? r->held : r->max_held;
	assert_true(r->held <= r->window);
	if (r->abort_at_half && r->got >= r->total / 2) {
		chan_stream_abort(st, -EINTR, "receiver gave up at %llu", (unsigned long long)r->got);
		r->ends++;
		return;
	}
	if (!r->pause) {
		chan_stream_consume(st, (size_t)r->held);
		r->held = 0;
	}
}

static void rcv_end(struct chan_stream *st, int err, const char *msg, void *opaque)
{
	struct receiver *r = opaque;

	r->ends++;
	r->err = err;
	snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static const struct chan_stream_ops snd_ops = {
	.writable = snd_writable,
	.end = snd_end,
};

static const struct chan_stream_ops rcv_ops = {
	.data = rcv_data,
	.end = rcv_end,
};

static void rcv_fin(struct chan_stream *st, void *opaque)
{
	struct receiver *r = opaque;

	r->fins++;
	r->fin_st = st;
}

/* A receiver that answers the end itself (chan_stream_ops.fin). */
static const struct chan_stream_ops rcv_fin_ops = {
	.data = rcv_data,
	.end = rcv_end,
	.fin = rcv_fin,
};

/* ---- server handlers ---- */

/* "blocks": the opener pulls; the header is the number of bytes (text). */
static int h_blocks(struct chan_stream *st, const void *hdr, size_t len, void *opaque)
{
	struct h *h = opaque;
	char num[32] = "";

	if (h->refuse)
		return h->refuse;
	assert_int_equal(chan_stream_dir(st), CHAN_STREAM_PULL);
	assert_string_equal(chan_stream_peer(st), "node2");
	memcpy(num, hdr, len < sizeof(num) - 1 ? len : sizeof(num) - 1);
	memset(&h->ssnd, 0, sizeof(h->ssnd));
	h->ssnd.total = strtoull(num, NULL, 10);
	h->sst = st;
	chan_stream_accept(st, 0, &snd_ops, &h->ssnd);
	return 0;
}

/* "sink": the opener pushes. */
static int h_sink(struct chan_stream *st, const void *hdr, size_t len, void *opaque)
{
	struct h *h = opaque;

	assert_int_equal(chan_stream_dir(st), CHAN_STREAM_PUSH);
	memset(&h->srcv, 0, sizeof(h->srcv));
	h->srcv.window = h->srv_window;
	h->sst = st;
	chan_stream_accept(st, h->srv_window, h->srv_fin ? &rcv_fin_ops : &rcv_ops, &h->srcv);
	return 0;
}

static void h_ping(struct chan_reply *r, const void *body, size_t len, void *opaque)
{
	chan_reply_ok(r, body, len);
}

/* ---- harness ---- */

static struct h *h_new(void)
{
	struct h *h = calloc(1, sizeof(*h));

	assert_non_null(h);
	h->loop = qb_loop_create();
	h->stls = pki_tls(pki, "node1");
	h->ctls = pki_tls(pki, "node2");
	h->srv = chan_server_new(h->loop, h->stls, NULL);
	assert_non_null(h->srv);
	assert_int_equal(chan_server_listen(h->srv, "127.0.0.1", 0), 0);
	h->port = chan_server_port(h->srv);
	assert_int_equal(chan_handle_stream(h->srv, "blocks", h_blocks, h), 0);
	assert_int_equal(chan_handle_stream(h->srv, "sink", h_sink, h), 0);
	assert_int_equal(chan_handle(h->srv, "ping", h_ping, h), 0);
	assert_int_equal(chan_handle(h->srv, "sink", h_ping, h), -EEXIST);
	h->peer = chan_peer_new(h->loop, h->ctls, "node1", "127.0.0.1", h->port, NULL);
	assert_non_null(h->peer);
	log_capture_clear();
	return h;
}

static void h_free(struct h *h)
{
	chan_peer_free(h->peer);
	chan_server_free(h->srv);
	chan_tls_free(h->stls);
	chan_tls_free(h->ctls);
	qb_loop_destroy(h->loop);
	free(h);
}

static struct chan_stream *pull(struct h *h, uint64_t total, size_t window,
				struct receiver *r)
{
	char num[32];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)total);
	struct chan_stream *st;

	memset(r, 0, sizeof(*r));
	r->window = window;
	r->total = total;
	st = chan_stream_open(h->peer, "blocks", num, (size_t)n, CHAN_STREAM_PULL, window, 2000,
			      &rcv_ops, r);
	assert_non_null(st);
	return st;
}

static bool rcv_ended(void *arg)
{
	return ((struct receiver *)arg)->ends > 0;
}

static bool snd_ended(void *arg)
{
	return ((struct sender *)arg)->ends > 0;
}

struct both {
	struct sender *s;
	struct receiver *r;
};

static bool both_ended(void *arg)
{
	struct both *b = arg;

	return b->s->ends > 0 && b->r->ends > 0;
}

/* ---- tests ---- */

static void pull_64mib_small_window(void **state)
{
	struct h *h = h_new();
	struct receiver r;
	struct both b = { &h->ssnd, &r };

	pull(h, 64ull << 20, 256 << 10, &r);
	assert_true(loop_run_until(h->loop, both_ended, &b, SAFETY_MS));
	assert_int_equal(r.err, 0);
	assert_int_equal(h->ssnd.err, 0);
	assert_int_equal(r.ends, 1);
	assert_int_equal(h->ssnd.ends, 1);
	assert_true(r.got == 64ull << 20);
	assert_false(r.bad);
	assert_true(r.max_held <= 256 << 10);
	h_free(h);
}

static void push_to_server(void **state)
{
	struct h *h = h_new();
	struct sender s = { .total = (8u << 20) + 12345 };
	struct chan_stream *st;
	struct both b = { &s, &h->srcv };

	h->srv_window = 128 << 10;
	st = chan_stream_open(h->peer, "sink", "", 0, CHAN_STREAM_PUSH, 0, 2000, &snd_ops, &s);
	assert_non_null(st);
	assert_int_equal(chan_stream_dir(st), CHAN_STREAM_PUSH);
	assert_true(loop_run_until(h->loop, both_ended, &b, SAFETY_MS));
	assert_int_equal(s.err, 0);
	assert_int_equal(h->srcv.err, 0);
	assert_true(h->srcv.got == s.total);
	assert_false(h->srcv.bad);
	assert_true(h->srcv.max_held <= 128 << 10);
	h_free(h);
}

static bool got_window(void *arg)
{
	struct receiver *r = arg;

	return r->held >= r->window;
}

static void paused_receiver_stalls_sender(void **state)
{
	struct h *h = h_new();
	struct receiver r;
	struct chan_stream *st = pull(h, 16u << 20, 256 << 10, &r);
	struct both b = { &h->ssnd, &r };

	r.pause = true;
	assert_true(loop_run_until(h->loop, got_window, &r, SAFETY_MS));
	loop_run_for(h->loop, 300);
	/* exactly the window arrived, and the sender is not ahead of it */
	assert_true(r.got == 256 << 10);
	assert_true(h->ssnd.sent == 256 << 10);
	assert_int_equal(r.ends, 0);
	r.pause = false;
	chan_stream_consume(st, (size_t)r.held);
	r.held = 0;
	assert_true(loop_run_until(h->loop, both_ended, &b, SAFETY_MS));
	assert_int_equal(r.err, 0);
	assert_true(r.got == 16u << 20);
	assert_false(r.bad);
	h_free(h);
}

static void receiver_aborts(void **state)
{
	struct h *h = h_new();
	struct receiver r;

	pull(h, 8u << 20, 256 << 10, &r);
	r.abort_at_half = true;
	assert_true(loop_run_until(h->loop, snd_ended, &h->ssnd, SAFETY_MS));
	assert_int_equal(h->ssnd.err, -EINTR);
	assert_non_null(strstr(h->ssnd.msg, "receiver gave up"));
	assert_int_equal(r.ends, 1); /* only ours: no callback after abort */
	h_free(h);
}

static void sender_aborts(void **state)
{
	struct h *h = h_new();
	struct receiver r;

	pull(h, 8u << 20, 256 << 10, &r);
	r.pause = true;
	assert_true(loop_run_until(h->loop, got_window, &r, SAFETY_MS));
	chan_stream_abort(h->sst, -EIO, "disk read failed at %d", 42);
	assert_true(loop_run_until(h->loop, rcv_ended, &r, SAFETY_MS));
	assert_int_equal(r.err, -EIO);
	assert_string_equal(r.msg, "disk read failed at 42");
	assert_int_equal(h->ssnd.ends, 0);
	h_free(h);
}

static void refused_and_unknown(void **state)
{
	struct h *h = h_new();
	struct receiver r;
	struct chan_stream *st;

	h->refuse = -EPERM;
	pull(h, 100, 0, &r);
	assert_true(loop_run_until(h->loop, rcv_ended, &r, SAFETY_MS));
	assert_int_equal(r.err, -EPERM);
	assert_non_null(strstr(r.msg, "refused"));
	memset(&r, 0, sizeof(r));
	st = chan_stream_open(h->peer, "nothing-here", "", 0, CHAN_STREAM_PULL, 0, 2000,
			      &rcv_ops, &r);
	assert_non_null(st);
	assert_true(loop_run_until(h->loop, rcv_ended, &r, SAFETY_MS));
	assert_int_equal(r.err, -ENOSYS);
	/* bad arguments: nothing opened, no callback */
	assert_null(chan_stream_open(h->peer, "blocks", "", 0, CHAN_STREAM_PUSH, 0, 2000,
				     &rcv_ops, &r));
	assert_null(chan_stream_open(h->peer, "blocks", "", 0, CHAN_STREAM_PULL, 0, 0,
				     &rcv_ops, &r));
	h_free(h);
}

/* The opener dies mid-stream (connection reset): the server's sender ends. */
static void client_killed_mid_stream(void **state)
{
	struct h *h = h_new();
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanStreamOpen o = HCA__CHAN_STREAM_OPEN__INIT;
	struct raw_opts ro = { .who = "node2", .abort_after = 300 << 10, .timeout_ms = 5000 };
	struct raw_client *rc;
	struct raw_result res;
	struct receiver r;
	struct both b = { &h->ssnd, &r };
	uint8_t *frame;
	size_t len;

	o.stream_id = 1;
	o.method = "blocks";
	o.header.data = (uint8_t *)"67108864";
	o.header.len = 8;
	o.credit = 1 << 20;
	m.kind_case = HCA__CHAN_MSG__KIND_STREAM_OPEN;
	m.stream_open = &o;
	frame = wire_frame_pack(WIRE_T_CHAN, &m.base, &len);
	ro.send = frame;
	ro.send_len = len;
	rc = raw_client_start(pki, h->port, &ro);
	assert_non_null(rc);
	assert_true(loop_run_until(h->loop, snd_ended, &h->ssnd, SAFETY_MS));
	assert_int_equal(h->ssnd.err, -ECONNRESET);
	assert_true(h->ssnd.sent < 64u << 20);
	raw_client_join(rc, &res);
	assert_true(res.handshake_ok);
	assert_true(res.received >= 300 << 10);
	free(frame);
	/* the server goes on serving */
	pull(h, 1 << 20, 1 << 20, &r);
	assert_true(loop_run_until(h->loop, both_ended, &b, SAFETY_MS));
	assert_int_equal(r.err, 0);
	h_free(h);
}

/* The server goes away mid-stream: the opener's receiver ends with an error. */
static void server_gone_mid_stream(void **state)
{
	struct h *h = h_new();
	struct receiver r;

	pull(h, 64u << 20, 256 << 10, &r);
	r.pause = true;
	assert_true(loop_run_until(h->loop, got_window, &r, SAFETY_MS));
	chan_server_free(h->srv);
	h->srv = NULL;
	assert_int_equal(h->ssnd.ends, 1); /* from inside chan_server_free() */
	assert_int_equal(h->ssnd.err, -ECANCELED);
	assert_true(loop_run_until(h->loop, rcv_ended, &r, SAFETY_MS));
	assert_int_equal(r.err, -ECONNRESET);
	h_free(h);
}

/* Opened while the node is down: waits for it, then gives up. */
static void open_unreachable_times_out(void **state)
{
	struct h *h = h_new();
	struct chan_peer *p = chan_peer_new(h->loop, h->ctls, "node1", "127.0.0.1", 1, NULL);
	struct receiver r = { .window = 1 << 20 };

	assert_non_null(chan_stream_open(p, "blocks", "1", 1, CHAN_STREAM_PULL, 0, 300,
					 &rcv_ops, &r));
	assert_true(loop_run_until(h->loop, rcv_ended, &r, SAFETY_MS));
	assert_int_equal(r.err, -ETIMEDOUT);
	assert_non_null(strstr(r.msg, "unreachable"));
	chan_peer_free(p);
	h_free(h);
}

/* Freeing the peer ends its open streams from inside chan_peer_free(). */
static void peer_free_ends_streams(void **state)
{
	struct h *h = h_new();
	struct receiver r;

	pull(h, 64u << 20, 256 << 10, &r);
	r.pause = true;
	assert_true(loop_run_until(h->loop, got_window, &r, SAFETY_MS));
	chan_peer_free(h->peer);
	h->peer = NULL;
	assert_int_equal(r.ends, 1);
	assert_int_equal(r.err, -ECANCELED);
	assert_true(loop_run_until(h->loop, snd_ended, &h->ssnd, SAFETY_MS));
	assert_int_equal(h->ssnd.err, -ECONNRESET);
	h_free(h);
}

static bool got_fin(void *arg)
{
	return ((struct receiver *)arg)->fins > 0;
}

/* A receiver with fin(): the sender's end waits for its answer, which may
 * be a refusal; the connection stays usable. */
static void fin_answered_by_receiver(void **state)
{
	struct h *h = h_new();
	struct sender s = { .total = (2u << 20) + 3 };

	h->srv_window = 256 << 10;
	h->srv_fin = true;
	assert_non_null(chan_stream_open(h->peer, "sink", "", 0, CHAN_STREAM_PUSH, 0, 2000,
					 &snd_ops, &s));
	assert_true(loop_run_until(h->loop, got_fin, &h->srcv, SAFETY_MS));
	assert_true(h->srcv.got == s.total);
	loop_run_for(h->loop, 200);
	assert_int_equal(s.ends, 0); /* no answer yet, no end */
	assert_int_equal(h->srcv.ends, 0);
	chan_stream_abort(h->srcv.fin_st, 0, "ignored");
	assert_true(loop_run_until(h->loop, snd_ended, &s, SAFETY_MS));
	assert_int_equal(s.err, 0);
	assert_int_equal(h->srcv.ends, 0); /* our own answer: no callback */

	memset(&s, 0, sizeof(s));
	s.total = 100;
	h->srcv.fins = 0;
	assert_non_null(chan_stream_open(h->peer, "sink", "", 0, CHAN_STREAM_PUSH, 0, 2000,
					 &snd_ops, &s));
	assert_true(loop_run_until(h->loop, got_fin, &h->srcv, SAFETY_MS));
	chan_stream_abort(h->srcv.fin_st, -EILSEQ, "digest mismatch in cycle %d", 7);
	assert_true(loop_run_until(h->loop, snd_ended, &s, SAFETY_MS));
	assert_int_equal(s.err, -EILSEQ);
	assert_string_equal(s.msg, "digest mismatch in cycle 7");
	assert_true(chan_peer_connected(h->peer));
	h_free(h);
}

/* The connection fails while the answer is due: both ends learn it. */
static void fin_pending_when_connection_lost(void **state)
{
	struct h *h = h_new();
	struct sender s = { .total = 1000 };

	h->srv_window = 1 << 20;
	h->srv_fin = true;
	assert_non_null(chan_stream_open(h->peer, "sink", "", 0, CHAN_STREAM_PUSH, 0, 2000,
					 &snd_ops, &s));
	assert_true(loop_run_until(h->loop, got_fin, &h->srcv, SAFETY_MS));
	chan_server_free(h->srv);
	h->srv = NULL;
	assert_int_equal(h->srcv.ends, 1);
	assert_int_equal(h->srcv.err, -ECANCELED);
	assert_true(loop_run_until(h->loop, snd_ended, &s, SAFETY_MS));
	assert_int_equal(s.err, -ECONNRESET);
	h_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pull_64mib_small_window),
		cmocka_unit_test(push_to_server),
		cmocka_unit_test(paused_receiver_stalls_sender),
		cmocka_unit_test(receiver_aborts),
		cmocka_unit_test(sender_aborts),
		cmocka_unit_test(refused_and_unknown),
		cmocka_unit_test(client_killed_mid_stream),
		cmocka_unit_test(server_gone_mid_stream),
		cmocka_unit_test(open_unreachable_times_out),
		cmocka_unit_test(peer_free_ends_streams),
		cmocka_unit_test(fin_answered_by_receiver),
		cmocka_unit_test(fin_pending_when_connection_lost),
	};
	int rc;

	signal(SIGPIPE, SIG_IGN);
	qb_log_init("test_chan_stream", LOG_USER, LOG_EMERG);
	qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, QB_FALSE);
	log_capture_start();
	pattern_init();
	pki = pki_new();
	if (!pki)
		return 1;
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	pki_free(pki);
	qb_log_fini();
	return rc;
}
