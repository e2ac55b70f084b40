/*
 * chan_stream.c: streams, both sides, both directions (see chan.h).
 *
 * Flow control, receiver side: window = allowed + held + pending, always.
 * `allowed` is what the sender may still send, `held` what data() delivered
 * and the user has not consumed, `pending` what was consumed but not yet
 * granted back (sent once it reaches a quarter of the window, so credit
 * frames stay few). Data beyond `allowed` is a protocol violation and ends
 * the connection: that is what bounds the receiver's memory. The sender
 * spends `credit` and writes nothing when it is zero or the connection's
 * outbound queue is past its bound.
 *
 * A stream holds one reference for being alive (on a list) and one per
 * callback in progress, so a callback may abort it or close everything.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/chan_priv.h"

enum st_state {
	ST_QUEUED, /* opener: waiting for the connection */
	ST_OPEN,
	ST_FIN_SENT, /* sender: end of data sent, waiting for the receiver's */
	ST_FIN_RCVD, /* receiver with fin(): the sender's end seen, our answer due */
	ST_ENDED,
};

struct chan_stream {
	struct chan_list link; /* in the peer's queue or the connection's list */
	unsigned refs;
	enum st_state state;
	struct chan_peer *p; /* opener side */
	struct chan_conn *c; /* once on a connection */
	qb_loop_t *loop;
	uint64_t id;
	bool opener;
	bool sender;
	const struct chan_stream_ops *ops;
	void *opaque;
	uint64_t credit; /* sender */
	uint64_t window, allowed, held, pending; /* receiver */
	qb_loop_timer_handle timer; /* opener, queued: its deadline */
	unsigned timeout_ms;
	uint8_t *hdr; /* opener, until the OPEN is sent */
	size_t hdr_len;
	char method[CHAN_METHOD_MAX + 1];
};

/* ---- life cycle ---- */

static void st_unref(struct chan_stream *st)
{
	if (--st->refs > 0)
		return;
	free(st->hdr);
	free(st);
}

/* Over: off its list, end() unless told not to, the alive reference gone. */
static void st_finish(struct chan_stream *st, int err, const char *msg, bool notify)
{
	if (st->state == ST_ENDED)
		return;
	st->state = ST_ENDED;
	chan_list_del(&st->link);
	if (st->timer)
		qb_loop_timer_del(st->loop, st->timer);
	st->timer = 0;
	if (st->c)
		st->c->nstreams--;
	if (notify && st->ops && st->ops->end)
		st->ops->end(st, err, msg ? msg : "", st->opaque);
	st_unref(st);
}

void chan_streams_fail(struct chan_list *list, int err, const char *msg)
{
	while (!chan_list_empty(list)) {
		struct chan_stream *st = chan_entry(list->next, struct chan_stream, link);

		st_finish(st, err, msg, true);
	}
}

static struct chan_stream *find(struct chan_conn *c, uint64_t id)
{
	struct chan_list *l;

	for (l = c->streams.next; l != &c->streams; l = l->next) {
		struct chan_stream *st = chan_entry(l, struct chan_stream, link);

		if (st->id == id)
			return st;
	}
	return NULL;
}

static void attach(struct chan_conn *c, struct chan_stream *st)
{
	st->c = c;
	st->state = ST_OPEN;
	chan_list_add_tail(&c->streams, &st->link);
	c->nstreams++;
}

/* ---- frames out ---- */

static int send_end(struct chan_conn *c, uint64_t id, int err, const char *msg)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanStreamEnd e = HCA__CHAN_STREAM_END__INIT;
	Hca__ChanError er = HCA__CHAN_ERROR__INIT;

	e.stream_id = id;
	if (err) {
		er.code = (uint32_t)(err < 0 && err > -4096 ? -err : EIO);
		er.message = (char *)msg;
		e.error = &er;
	}
	m.kind_case = HCA__CHAN_MSG__KIND_STREAM_END;
	m.stream_end = &e;
	return chan_conn_send(c, &m);
}

static int send_credit(struct chan_conn *c, uint64_t id, uint64_t n)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanStreamCredit cr = HCA__CHAN_STREAM_CREDIT__INIT;

	cr.stream_id = id;
	cr.bytes = n;
	m.kind_case = HCA__CHAN_MSG__KIND_STREAM_CREDIT;
	m.stream_credit = &cr;
	return chan_conn_send(c, &m);
}

static int send_data(struct chan_conn *c, uint64_t id, const void *buf, size_t len)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanStreamData d = HCA__CHAN_STREAM_DATA__INIT;

	d.stream_id = id;
	d.data.data = (uint8_t *)buf;
	d.data.len = len;
	m.kind_case = HCA__CHAN_MSG__KIND_STREAM_DATA;
	m.stream_data = &d;
	return chan_conn_send(c, &m);
}

/* The opener's OPEN, granting its window at once when it receives. */
static int send_open(struct chan_conn *c, struct chan_stream *st)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanStreamOpen o = HCA__CHAN_STREAM_OPEN__INIT;
	int rc;

	o.stream_id = st->id;
	o.method = st->method;
	o.header.data = st->hdr;
	o.header.len = st->hdr_len;
	o.opener_sends = st->sender;
	o.credit = st->sender ? 0 : st->window;
	m.kind_case = HCA__CHAN_MSG__KIND_STREAM_OPEN;
	m.stream_open = &o;
	rc = chan_conn_send(c, &m);
	if (rc < 0)
		return rc;
	free(st->hdr);
	st->hdr = NULL;
	attach(c, st);
	return 0;
}

/* ---- callbacks ---- */

static void notify_writable(struct chan_stream *st)
{
	if (st->state != ST_OPEN || !st->sender || !st->credit || !st->ops || !st->ops->writable ||
	    !chan_conn_writable(st->c))
		return;
	st->refs++;
	st->ops->writable(st, st->opaque);
	st_unref(st);
}

void chan_streams_drained(struct chan_conn *c)
{
	struct chan_stream **v;
	struct chan_list *l;
	unsigned n = 0;

	if (!c->nstreams)
		return;
	/* A snapshot: callbacks may end any stream of the list. */
	v = calloc(c->nstreams, sizeof(*v));
	if (!v)
		return;
	for (l = c->streams.next; l != &c->streams && n < c->nstreams; l = l->next) {
		v[n] = chan_entry(l, struct chan_stream, link);
		v[n++]->refs++;
	}
	for (unsigned i = 0; i < n; i++) {
		notify_writable(v[i]);
		st_unref(v[i]);
	}
	free(v);
}

/* ---- frames in ---- */

static struct chan_stream *st_new(qb_loop_t *loop, const char *method)
{
	struct chan_stream *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->refs = 1;
	st->loop = loop;
	chan_list_init(&st->link);
	snprintf(st->method, sizeof(st->method), "%s", method);
	return st;
}

/* Run the handler; 0 if it took the stream with chan_stream_accept(). */
static int st_offer(struct chan_stream *st, chan_stream_fn fn, void *hop,
		    const Hca__ChanStreamOpen *o)
{
	int rc = fn(st, o->header.data, o->header.len, hop);

	if (st->state != ST_OPEN)
		return 0; /* it aborted the stream, or everything closed */
	if (rc == 0 && !st->ops) {
		conn_log(st->c, LOG_ERR, "stream '%s': handler neither accepted nor refused",
			 st->method);
		rc = -EINVAL;
	}
	if (rc < 0) {
		char msg[CHAN_MSG_MAX];

		snprintf(msg, sizeof(msg), "stream '%.64s' refused: %s", st->method, strerror(-rc));
		send_end(st->c, st->id, rc, msg);
		st_finish(st, rc, msg, false);
	}
	return rc;
}

void chan_stream_on_open(struct chan_conn *c, const Hca__ChanStreamOpen *o)
{
	void *hop = NULL;
	chan_stream_fn fn = chan_srv_stream_handler(c->srv, o->method, &hop);
	struct chan_stream *st;

	if (find(c, o->stream_id)) {
		chan_conn_close(c, -EPROTO, "stream %llu opened twice",
				(unsigned long long)o->stream_id);
		return;
	}
	if (!fn) {
		conn_log(c, LOG_NOTICE, "unknown stream method '%s'", o->method);
		send_end(c, o->stream_id, -ENOSYS, "unknown stream method");
		return;
	}
	st = c->nstreams < c->cfg.max_streams ? st_new(c->loop, o->method) : NULL;
	if (!st) {
		send_end(c, o->stream_id, -EBUSY, "too many streams");
		return;
	}
	st->id = o->stream_id;
	st->sender = !o->opener_sends;
	st->credit = st->sender ? o->credit : 0;
	attach(c, st);
	st->refs++;
	if (st_offer(st, fn, hop, o) == 0 && st->state == ST_OPEN) {
		if (!st->sender && send_credit(c, st->id, st->window) == 0)
			st->allowed = st->window;
		notify_writable(st);
	}
	st_unref(st);
}

void chan_stream_on_data(struct chan_conn *c, uint64_t id, const uint8_t *data, size_t len)
{
	struct chan_stream *st = find(c, id);

	if (!st)
		return; /* ended here while it was in flight */
	if (st->sender || st->state != ST_OPEN) {
		chan_conn_close(c, -EPROTO, "stream %llu: data from its receiver or after its end",
				(unsigned long long)st->id);
		return;
	}
	if (len > st->allowed) {
		chan_conn_close(c, -EPROTO, "stream %llu: %zu bytes beyond the %llu granted",
				(unsigned long long)st->id, len, (unsigned long long)st->allowed);
		return;
	}
	if (!len)
		return;
	st->allowed -= len;
	st->held += len;
	st->refs++;
	st->ops->data(st, data, len, st->opaque);
	st_unref(st);
}

void chan_stream_on_credit(struct chan_conn *c, const Hca__ChanStreamCredit *cr)
{
	struct chan_stream *st = find(c, cr->stream_id);

	if (!st)
		return;
	if (!st->sender || cr->bytes > UINT64_MAX / 2 - st->credit) {
		chan_conn_close(c, -EPROTO, "stream %llu: bad credit",
				(unsigned long long)st->id);
		return;
	}
	st->credit += cr->bytes;
	notify_writable(st);
}

void chan_stream_on_end(struct chan_conn *c, const Hca__ChanStreamEnd *e)
{
	struct chan_stream *st = find(c, e->stream_id);
	int err = chan_msg_error_code(e->error);
	char msg[CHAN_MSG_MAX];

	if (!st)
		return;
	if (err) {
		chan_line_copy(msg, sizeof(msg), e->error->message);
		st_finish(st, err, msg, true);
	} else if (!st->sender && st->state == ST_FIN_RCVD) {
		chan_conn_close(c, -EPROTO, "stream %llu ended twice", (unsigned long long)st->id);
	} else if (!st->sender && st->ops->fin) {
		st->state = ST_FIN_RCVD; /* the user answers with chan_stream_abort() */
		st->refs++;
		st->ops->fin(st, st->opaque);
		st_unref(st);
	} else if (!st->sender) {
		send_end(c, st->id, 0, NULL); /* the acknowledgement */
		st_finish(st, 0, NULL, true);
	} else if (st->state == ST_FIN_SENT) {
		st_finish(st, 0, NULL, true);
	} else {
		send_end(c, st->id, -EPROTO, "end of a stream we send");
		st_finish(st, -EPROTO, "the receiver ended the stream", true);
	}
}

/* ---- the opener ---- */

static void open_timeout_cb(void *data)
{
	struct chan_stream *st = data;
	char msg[CHAN_MSG_MAX];

	st->timer = 0;
	snprintf(msg, sizeof(msg), "stream '%.64s': %.64s unreachable for %u ms", st->method,
		 chan_peer_name(st->p), st->timeout_ms);
	st_finish(st, -ETIMEDOUT, msg, true);
}

void chan_stream_start(struct chan_conn *c, struct chan_list *link)
{
	struct chan_stream *st = chan_entry(link, struct chan_stream, link);
	int rc;

	if (st->timer)
		qb_loop_timer_del(st->loop, st->timer);
	st->timer = 0;
	rc = send_open(c, st);
	if (rc < 0) {
		char msg[CHAN_MSG_MAX];

		snprintf(msg, sizeof(msg), "stream '%.64s': cannot open: %s", st->method,
			 strerror(-rc));
		st_finish(st, rc, msg, true);
	}
}

static int open_check(struct chan_peer *p, const char *method, const void *hdr, size_t len,
		      enum chan_stream_dir dir, unsigned timeout_ms,
		      const struct chan_stream_ops *ops)
{
	if (!p || !method || !chan_method_valid(method) || !ops || !ops->end || !timeout_ms ||
	    (len && !hdr))
		return -EINVAL;
	if ((dir == CHAN_STREAM_PUSH && !ops->writable) ||
	    (dir == CHAN_STREAM_PULL && !ops->data) ||
	    (dir != CHAN_STREAM_PUSH && dir != CHAN_STREAM_PULL))
		return -EINVAL;
	return len + CHAN_METHOD_MAX + 64 > chan_peer_max_frame(p) ? -EMSGSIZE : 0;
}

static struct chan_stream *open_new(struct chan_peer *p, const char *method, const void *hdr,
				    size_t len, enum chan_stream_dir dir, size_t window)
{
	struct chan_stream *st = st_new(chan_peer_loop(p), method);

	if (!st)
		return NULL;
	st->hdr = len ? malloc(len) : NULL;
	if (len && !st->hdr) {
		free(st);
		return NULL;
	}
	if (len)
		memcpy(st->hdr, hdr, len);
	st->hdr_len = len;
	st->p = p;
	st->opener = true;
	st->sender = dir == CHAN_STREAM_PUSH;
	st->id = chan_peer_next_id(p);
	st->window = window ? window : CHAN_WINDOW_DEFAULT;
	st->allowed = st->sender ? 0 : st->window;
	return st;
}

struct chan_stream *chan_stream_open(struct chan_peer *p, const char *method, const void *hdr,
				     size_t len, enum chan_stream_dir dir, size_t window,
				     unsigned timeout_ms, const struct chan_stream_ops *ops,
				     void *opaque)
{
	struct chan_stream *st = NULL;
	struct chan_conn *c;
	int rc = open_check(p, method, hdr, len, dir, timeout_ms, ops);

	if (rc < 0)
		goto out;
	rc = -ENOMEM;
	st = open_new(p, method, hdr, len, dir, window);
	if (!st)
		goto out;
	st->ops = ops;
	st->opaque = opaque;
	st->timeout_ms = timeout_ms;
	c = chan_peer_conn(p);
	if (c) {
		rc = send_open(c, st);
		goto out;
	}
	rc = qb_loop_timer_add(st->loop, QB_LOOP_MED, (uint64_t)timeout_ms * QB_TIME_NS_IN_MSEC,
			       st, open_timeout_cb, &st->timer);
	if (rc == 0)
		rc = chan_peer_stream_queue(p, &st->link);
out:
	if (rc < 0 && st) {
		if (st->timer)
			qb_loop_timer_del(st->loop, st->timer);
		st_unref(st);
	}
	if (rc < 0) {
		errno = -rc;
		return NULL;
	}
	return st;
}

/* ---- the user's side ---- */

void chan_stream_accept(struct chan_stream *st, size_t window,
			const struct chan_stream_ops *ops, void *opaque)
{
	st->ops = ops;
	st->opaque = opaque;
	st->window = window ? window : CHAN_WINDOW_DEFAULT;
}

enum chan_stream_dir chan_stream_dir(const struct chan_stream *st)
{
	return st->opener == st->sender ? CHAN_STREAM_PUSH : CHAN_STREAM_PULL;
}

const char *chan_stream_peer(const struct chan_stream *st)
{
	if (st->c)
		return st->c->id.name;
	return st->p ? chan_peer_name(st->p) : "";
}

ssize_t chan_stream_write(struct chan_stream *st, const void *buf, size_t len)
{
	size_t n, done = 0;
	int rc = 0;

	if (!st->sender || !len || !buf)
		return -EINVAL;
	if (st->state == ST_FIN_SENT || st->state == ST_ENDED)
		return -EPIPE;
	if (st->state != ST_OPEN || !st->credit || !chan_conn_writable(st->c))
		return -EAGAIN;
	n = len < st->credit ? len : (size_t)st->credit;
	/* Chunk by chunk while the queue is below its bound: one chunk past it at most. */
	while (done < n && chan_conn_writable(st->c)) {
		size_t k = n - done < CHAN_CHUNK_MAX ? n - done : CHAN_CHUNK_MAX;

		k = k < st->c->cfg.max_frame - 64 ? k : st->c->cfg.max_frame - 64;
		rc = send_data(st->c, st->id, (const uint8_t *)buf + done, k);
		if (rc < 0)
			break;
		done += k;
	}
	st->credit -= done;
	if (done)
		return (ssize_t)done;
	return rc == -ENOBUFS || rc == 0 ? -EAGAIN : -EPIPE;
}

int chan_stream_finish(struct chan_stream *st)
{
	int rc;

	if (!st->sender || st->state == ST_FIN_SENT || st->state == ST_ENDED)
		return -EPIPE;
	if (st->state != ST_OPEN)
		return -EAGAIN;
	rc = send_end(st->c, st->id, 0, NULL);
	if (rc < 0)
		return rc == -ENOBUFS ? -EAGAIN : -EPIPE;
	st->state = ST_FIN_SENT;
	return 0;
}

void chan_stream_consume(struct chan_stream *st, size_t n)
{
	uint64_t quarter = st->window / 4 ? st->window / 4 : 1;

	if (st->sender || st->state != ST_OPEN)
		return;
	n = n < st->held ? n : (size_t)st->held;
	st->held -= n;
	st->pending += n;
	if (st->pending < quarter)
		return;
	if (send_credit(st->c, st->id, st->pending) == 0) {
		st->allowed += st->pending;
		st->pending = 0;
	}
}

void chan_stream_abort(struct chan_stream *st, int err, const char *fmt, ...)
{
	char raw[CHAN_MSG_MAX], msg[CHAN_MSG_MAX];
	va_list ap;

	if (st->state == ST_ENDED)
		return;
	if (!err && st->state != ST_FIN_RCVD)
		err = -ECANCELED; /* only an answer to fin() may end without error */
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	chan_line_copy(msg, sizeof(msg), raw);
	if (st->state != ST_QUEUED)
		send_end(st->c, st->id, err, msg);
	st_finish(st, err, msg, false);
}
