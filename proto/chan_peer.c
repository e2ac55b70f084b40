/*
 * chan_peer.c: the client side for one remote node. One connection, made
 * when there is something to send and remade after a failure with
 * exponential backoff (cfg.backoff_min_ms doubling to backoff_max_ms, back
 * to the minimum once the server has said anything). Calls made while there
 * is no connection wait in a queue for it, each until its own deadline.
 *
 * A call lives in exactly one place: the peer's queue until sent, then the
 * list of the connection it was sent on, which fails it if it breaks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/chan_priv.h"

struct chan_peer {
	unsigned refs; /* the owner's, and loop entry points' that reach callbacks */
	bool dying;
	qb_loop_t *loop;
	struct chan_tls *tls;
	struct chan_cfg cfg;
	char name[CHAN_NAME_MAX + 1];
	char addr[64];
	struct sockaddr_storage sa;
	unsigned salen;
	struct chan_conn *conn;	  /* the one connection, a reference; NULL if none */
	struct chan_list queue;	  /* calls waiting for a connection */
	struct chan_list squeue;  /* streams waiting for a connection */
	uint64_t next_id;
	unsigned backoff_ms;	  /* the next reconnect delay */
	qb_loop_timer_handle retry;
	char last_why[CHAN_MSG_MAX]; /* why the last connection ended, for timeouts */
};

struct chan_call {
	struct chan_list link; /* in peer->queue or conn->calls */
	struct chan_peer *p;   /* only while queued or timing out: the peer may
				* be freed by the callback of a call failed before */
	qb_loop_t *loop;
	uint64_t id;
	chan_reply_fn cb;
	void *opaque;
	qb_loop_timer_handle timer;
	unsigned timeout_ms;
	uint64_t deadline;
	bool sent;
	uint8_t *body; /* a copy while queued */
	size_t len;
	char method[];
};

static void peer_unref(struct chan_peer *p)
{
	if (--p->refs > 0)
		return;
	free(p);
}

const char *chan_peer_name(const struct chan_peer *p)
{
	return p->name;
}

qb_loop_t *chan_peer_loop(struct chan_peer *p)
{
	return p->loop;
}

size_t chan_peer_max_frame(const struct chan_peer *p)
{
	return p->cfg.max_frame;
}

uint64_t chan_peer_next_id(struct chan_peer *p)
{
	return ++p->next_id;
}

struct chan_conn *chan_peer_conn(struct chan_peer *p)
{
	return p->conn && chan_conn_accepted(p->conn) ? p->conn : NULL;
}

bool chan_peer_connected(const struct chan_peer *p)
{
	return p->conn && chan_conn_accepted(p->conn);
}

/* ---- connecting ---- */

static void retry_cb(void *data);

static void retry_arm(struct chan_peer *p)
{
	unsigned ms = p->backoff_ms;

	p->backoff_ms = ms * 2 < p->cfg.backoff_max_ms ? ms * 2 : p->cfg.backoff_max_ms;
	if (qb_loop_timer_add(p->loop, QB_LOOP_MED, (uint64_t)ms * QB_TIME_NS_IN_MSEC, p,
			      retry_cb, &p->retry) < 0)
		p->retry = 0;
	qb_log(LOG_DEBUG, "chan %s at %s: reconnecting in %u ms", p->name, p->addr, ms);
}

static void kick(struct chan_peer *p)
{
	if (p->dying || p->conn || p->retry)
		return;
	if (chan_list_empty(&p->queue) && chan_list_empty(&p->squeue))
		return; /* on demand only */
	p->conn = chan_conn_connect(p, p->loop, p->tls, &p->cfg, p->name,
				    (const struct sockaddr *)&p->sa, p->salen, p->addr);
	if (p->conn)
		return;
	snprintf(p->last_why, sizeof(p->last_why), "cannot connect: %s", strerror(errno));
	retry_arm(p);
}

static void retry_cb(void *data)
{
	struct chan_peer *p = data;

	p->retry = 0;
	kick(p);
}

void chan_peer_on_frame(struct chan_peer *p)
{
	p->backoff_ms = p->cfg.backoff_min_ms;
}

void chan_peer_on_close(struct chan_peer *p, struct chan_conn *c)
{
	snprintf(p->last_why, sizeof(p->last_why), "%s", c->why);
	p->conn = NULL;
	chan_conn_unref(c);
	if (!p->dying && !p->retry)
		retry_arm(p);
}

/* ---- calls ---- */

static void call_complete(struct chan_call *call, int err, const void *body, size_t len,
			  const char *msg)
{
	if (call->timer)
		qb_loop_timer_del(call->loop, call->timer);
	call->timer = 0;
	call->cb(err, body, len, msg ? msg : "", call->opaque);
	free(call->body);
	free(call);
}

void chan_calls_fail(struct chan_list *calls, int err, const char *msg)
{
	while (!chan_list_empty(calls)) {
		struct chan_call *call = chan_entry(calls->next, struct chan_call, link);

		chan_list_del(&call->link);
		call_complete(call, err, NULL, 0, msg);
	}
}

/* Send @call with @body (@len bytes, borrowed: the caller keeps owning it). */
static int call_send(struct chan_conn *c, struct chan_call *call, const void *body, size_t len)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanRequest req = HCA__CHAN_REQUEST__INIT;
	uint64_t now = chan_now_ms();
	int rc;

	req.id = call->id;
	req.method = call->method;
	req.body.data = (uint8_t *)body;
	req.body.len = len;
	req.timeout_ms = call->deadline > now ? (uint32_t)(call->deadline - now) : 1;
	m.kind_case = HCA__CHAN_MSG__KIND_REQUEST;
	m.request = &req;
	rc = chan_conn_send(c, &m);
	if (rc < 0)
		return rc;
	chan_list_add_tail(&c->calls, &call->link);
	call->sent = true;
	return 0;
}

static void call_timeout_cb(void *data)
{
	struct chan_call *call = data;
	struct chan_peer *p = call->p;
	char msg[CHAN_MSG_MAX];

	call->timer = 0;
	chan_list_del(&call->link);
	if (call->sent)
		snprintf(msg, sizeof(msg), "%.64s: no reply from %.64s within %u ms", call->method,
			 p->name, call->timeout_ms);
	else
		snprintf(msg, sizeof(msg), "%.64s: %.64s unreachable for %u ms: %.80s", call->method,
			 p->name, call->timeout_ms, p->last_why[0] ? p->last_why : "connecting");
	qb_log(LOG_DEBUG, "chan %s: %s", p->name, msg);
	call_complete(call, -ETIMEDOUT, NULL, 0, msg);
}

void chan_call_on_reply(struct chan_conn *c, const Hca__ChanReply *r)
{
	struct chan_list *l;
	char msg[CHAN_MSG_MAX];
	int err = chan_msg_error_code(r->error);

	/* Replies come mostly in order: the oldest call is the likely one. */
	for (l = c->calls.next; l != &c->calls; l = l->next) {
		struct chan_call *call = chan_entry(l, struct chan_call, link);

		if (call->id != r->id)
			continue;
		chan_list_del(l);
		chan_line_copy(msg, sizeof(msg), err ? r->error->message : "");
		call_complete(call, err, r->body.data, r->body.len, msg);
		return;
	}
	conn_log(c, LOG_DEBUG, "dropping reply %llu: its call has ended",
		 (unsigned long long)r->id);
}

/* Send what waited for the connection, calls first, in order. */
void chan_peer_on_open(struct chan_peer *p, struct chan_conn *c)
{
	p->refs++;
	while (!p->dying && c->state == CONN_OPEN && !chan_list_empty(&p->queue)) {
		struct chan_call *call = chan_entry(p->queue.next, struct chan_call, link);
		int rc;

		chan_list_del(&call->link);
		rc = call_send(c, call, call->body, call->len);
		free(call->body); /* the queued copy: sent, or the call fails */
		call->body = NULL;
		if (rc < 0)
			call_complete(call, rc, NULL, 0, strerror(-rc));
	}
	while (!p->dying && c->state == CONN_OPEN && !chan_list_empty(&p->squeue)) {
		struct chan_list *l = p->squeue.next;

		chan_list_del(l);
		chan_stream_start(c, l);
	}
	peer_unref(p);
}

static struct chan_call *call_new(struct chan_peer *p, const char *method, unsigned timeout_ms,
				  chan_reply_fn cb, void *opaque)
{
	size_t n = strlen(method) + 1;
	struct chan_call *call = calloc(1, sizeof(*call) + n);

	if (!call)
		return NULL;
	memcpy(call->method, method, n);
	chan_list_init(&call->link);
	call->p = p;
	call->loop = p->loop;
	call->id = chan_peer_next_id(p);
	call->cb = cb;
	call->opaque = opaque;
	call->timeout_ms = timeout_ms;
	call->deadline = chan_now_ms() + timeout_ms;
	return call;
}

/* Connected: send now, the body packed straight into the output queue. */
static int call_start(struct chan_peer *p, struct chan_call *call, const void *body,
		      size_t len)
{
	struct chan_conn *c = chan_peer_conn(p);

	if (c)
		return call_send(c, call, body, len);
	call->len = len;
	call->body = len ? malloc(len) : NULL;
	if (len && !call->body)
		return -ENOMEM;
	if (len)
		memcpy(call->body, body, len);
	chan_list_add_tail(&p->queue, &call->link);
	kick(p);
	return 0;
}

int chan_call(struct chan_peer *p, const char *method, const void *body, size_t len,
	      unsigned timeout_ms, chan_reply_fn cb, void *opaque)
{
	struct chan_call *call = NULL;
	int rc = -EINVAL;

	if (!p || !method || !cb || !timeout_ms || !chan_method_valid(method) || (len && !body))
		goto out;
	rc = -ESHUTDOWN;
	if (p->dying)
		goto out;
	rc = -EMSGSIZE;
	if (len > p->cfg.max_frame)
		goto out;
	rc = -ENOMEM;
	call = call_new(p, method, timeout_ms, cb, opaque);
	if (!call)
		goto out;
	rc = qb_loop_timer_add(p->loop, QB_LOOP_MED, (uint64_t)timeout_ms * QB_TIME_NS_IN_MSEC,
			       call, call_timeout_cb, &call->timer);
	if (rc < 0)
		goto out;
	rc = call_start(p, call, body, len);
	if (rc == 0)
		call = NULL;
out:
	if (call && call->timer)
		qb_loop_timer_del(p->loop, call->timer);
	if (call)
		free(call->body);
	free(call);
	return rc;
}

/* ---- the peer ---- */

struct chan_peer *chan_peer_new(qb_loop_t *loop, struct chan_tls *tls, const char *name,
				const char *addr, uint16_t port, const struct chan_cfg *cfg)
{
	struct chan_peer *p = NULL;
	int rc = -EINVAL;

	if (!loop || !tls || !name || !chan_name_valid(name))
		goto out;
	rc = -ENOMEM;
	p = calloc(1, sizeof(*p));
	if (!p)
		goto out;
	rc = chan_addr_parse(addr, port, &p->sa, &p->salen);
	if (rc < 0)
		goto out;
	chan_addr_str((const struct sockaddr *)&p->sa, p->salen, p->addr, sizeof(p->addr));
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->refs = 1;
	p->loop = loop;
	p->tls = tls;
	chan_cfg_resolve(&p->cfg, cfg);
	p->backoff_ms = p->cfg.backoff_min_ms;
	chan_list_init(&p->queue);
	chan_list_init(&p->squeue);
out:
	if (rc < 0) {
		free(p);
		errno = -rc;
		return NULL;
	}
	return p;
}

int chan_peer_stream_queue(struct chan_peer *p, struct chan_list *link)
{
	if (p->dying)
		return -ESHUTDOWN;
	chan_list_add_tail(&p->squeue, link);
	kick(p);
	return 0;
}

void chan_peer_free(struct chan_peer *p)
{
	char msg[CHAN_MSG_MAX];

	if (!p)
		return;
	p->dying = true;
	if (p->retry)
		qb_loop_timer_del(p->loop, p->retry);
	p->retry = 0;
	snprintf(msg, sizeof(msg), "channel to %.64s closed", p->name);
	chan_calls_fail(&p->queue, -ECANCELED, msg);
	chan_streams_fail(&p->squeue, -ECANCELED, msg);
	if (p->conn)
		chan_conn_close(p->conn, -ECANCELED, "%s", msg);
	peer_unref(p);
}
