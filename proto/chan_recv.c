/*
 * chan_recv.c: a connection's input. Frames are read one at a time into a
 * buffer the size of that frame: first the 16-byte header, which bounds the
 * length before anything is allocated, then exactly the payload; so the
 * buffer never holds more than one frame and is never compacted. Each frame
 * is checked (chan_frame_parse), decoded and dispatched by kind; stream data
 * is handed to its stream in place, without a copy.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include <openssl/err.h>

#include "proto/chan_priv.h"

#define READ_BUDGET (1u << 20) /* bytes per dispatch: one busy peer cannot starve the loop */

static void not_expected(struct chan_conn *c, const char *what)
{
	chan_conn_close(c, -EPROTO, "refusing a %s from a %s", what, c->peer ? "server" : "client");
}

static void on_ping(struct chan_conn *c, const Hca__ChanPing *p)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanPing pong = HCA__CHAN_PING__INIT;

	if (p->pong)
		return; /* its arrival already counted as input */
	pong.nonce = p->nonce;
	pong.pong = true;
	m.kind_case = HCA__CHAN_MSG__KIND_PING;
	m.ping = &pong;
	chan_conn_send(c, &m); /* a full queue is the stall timer's business */
}

/* A client's first frame is the server's welcome: it accepted us. */
static void welcomed(struct chan_conn *c)
{
	conn_log(c, LOG_INFO, "connected (%s, %s)", SSL_get_version(c->ssl),
		 SSL_get_cipher_name(c->ssl));
	chan_peer_on_frame(c->peer);
	chan_peer_on_open(c->peer, c);
}

/* Before any frame: is the connection still there to take it? */
static bool dispatch_begin(struct chan_conn *c)
{
	if (c->rx_frames++ == 0 && c->peer)
		welcomed(c);
	return c->state == CONN_OPEN;
}

static void dispatch(struct chan_conn *c, const Hca__ChanMsg *m)
{
	if (!dispatch_begin(c))
		return;
	switch (m->kind_case) {
	case HCA__CHAN_MSG__KIND_PING:
		on_ping(c, m->ping);
		break;
	case HCA__CHAN_MSG__KIND_REQUEST:
		if (c->peer)
			not_expected(c, "request");
		else
			chan_srv_on_request(c, m->request);
		break;
	case HCA__CHAN_MSG__KIND_REPLY:
		if (c->peer)
			chan_call_on_reply(c, m->reply);
		else
			not_expected(c, "reply");
		break;
	case HCA__CHAN_MSG__KIND_STREAM_OPEN:
		if (c->peer)
			not_expected(c, "stream open");
		else
			chan_stream_on_open(c, m->stream_open);
		break;
	case HCA__CHAN_MSG__KIND_STREAM_DATA:
		chan_stream_on_data(c, m->stream_data->stream_id, m->stream_data->data.data,
				    m->stream_data->data.len);
		break;
	case HCA__CHAN_MSG__KIND_STREAM_CREDIT:
		chan_stream_on_credit(c, m->stream_credit);
		break;
	case HCA__CHAN_MSG__KIND_STREAM_END:
		chan_stream_on_end(c, m->stream_end);
		break;
	default: /* chan_msg_decode() lets none through; be sure */
		chan_conn_close(c, -EPROTO, "unknown message kind %d", (int)m->kind_case);
	}
}

static void frame_refused(struct chan_conn *c, int rc, const struct chan_frame *f,
			  const char *why)
{
	if (rc == -EMSGSIZE)
		chan_conn_close(c, -EPROTO, "refusing a frame of %u bytes: the limit is %zu",
				f->h.len, c->cfg.max_frame);
	else if (rc == -EPROTO && (f->h.type == 0 || f->h.type >= WIRE_T_MAX))
		chan_conn_close(c, -EPROTO, "refusing a frame of unknown type %u", f->h.type);
	else
		chan_conn_close(c, -EPROTO, "refusing a frame: %s", why);
}

/* The header is in: bound the frame, then make room for exactly it. */
static void header_done(struct chan_conn *c)
{
	struct chan_frame f = { .total = 0 };
	const char *why;
	int rc = chan_frame_parse(c->rbuf, c->rlen, c->cfg.max_frame, &f, &why);
	uint8_t *p;

	if (rc < 0 && rc != -EAGAIN) {
		frame_refused(c, rc, &f, why);
		return;
	}
	c->rneed = f.total; /* the whole frame's length, from now on */
	if (f.total <= c->rcap)
		return;
	p = realloc(c->rbuf, f.total);
	if (!p) {
		chan_conn_close(c, -ENOMEM, "no memory for a frame of %zu bytes", f.total);
		return;
	}
	c->rbuf = p;
	c->rcap = f.total;
}

static void frame_done(struct chan_conn *c)
{
	struct chan_frame f = { .total = 0 };
	const uint8_t *data;
	const char *why;
	Hca__ChanMsg *m;
	uint64_t id;
	size_t dlen;
	int rc = chan_frame_parse(c->rbuf, c->rlen, c->cfg.max_frame, &f, &why);

	if (rc < 0) {
		frame_refused(c, rc, &f, why);
		return;
	}
	c->rlen = c->rneed = 0; /* the bytes stay until the next read */
	if (chan_msg_data_peek(f.payload, f.h.len, &id, &data, &dlen)) {
		if (dispatch_begin(c))
			chan_stream_on_data(c, id, data, dlen);
		return;
	}
	m = chan_msg_decode(f.payload, f.h.len, &why);
	if (!m) {
		chan_conn_close(c, -EPROTO, "refusing a frame: %s", why);
		return;
	}
	dispatch(c, m); /* @m is its own copy: the buffer may go meanwhile */
	chan_msg_free(m);
}

/* Bytes still missing of the header, or of the frame once it is known. */
static size_t rbuf_missing(const struct chan_conn *c)
{
	return (c->rneed ? c->rneed : WIRE_HDR_LEN) - c->rlen;
}

void chan_conn_read(struct chan_conn *c)
{
	size_t budget = READ_BUDGET;
	int n;

	c->read_wants_write = false;
	while (c->state == CONN_OPEN && budget > 0) {
		size_t want = rbuf_missing(c);

		ERR_clear_error();
		n = SSL_read(c->ssl, c->rbuf + c->rlen, want > INT_MAX ? INT_MAX : (int)want);
		if (n <= 0) {
			chan_conn_ssl_fail(c, n, true);
			return;
		}
		c->t_rx = chan_now_ms();
		c->rlen += (size_t)n;
		budget = (size_t)n < budget ? budget - (size_t)n : 0;
		if (!c->rneed && c->rlen == WIRE_HDR_LEN)
			header_done(c);
		if (c->state == CONN_OPEN && c->rneed && c->rlen == c->rneed)
			frame_done(c);
	}
	/* Out of budget: OpenSSL may hold decrypted bytes poll cannot see. */
	if (c->state == CONN_OPEN && SSL_has_pending(c->ssl))
		chan_conn_resume(c);
}

