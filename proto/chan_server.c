/*
 * chan_server.c: the listening side. Accepts connections (bounded in
 * number), keeps the method table, turns requests into handler calls and
 * reply handles into replies.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/chan_priv.h"

struct handler {
	struct chan_list link;
	chan_handler_fn fn;  /* a call, or */
	chan_stream_fn sfn;  /* a stream */
	void *opaque;
	char method[];
};

struct chan_server {
	qb_loop_t *loop;
	struct chan_tls *tls;
	struct chan_cfg cfg;
	int lfd;
	uint16_t port;
	char addr[64];
	struct chan_list conns;
	unsigned nconns;
	struct chan_list handlers;
};

struct chan_reply {
	struct chan_conn *c; /* a reference: the handle may outlive the connection */
	uint64_t id;
	char method[CHAN_METHOD_MAX + 1];
};

/* ---- the method table ---- */

static struct handler *handler_find(struct chan_server *srv, const char *method)
{
	struct chan_list *l;

	for (l = srv->handlers.next; l != &srv->handlers; l = l->next) {
		struct handler *h = chan_entry(l, struct handler, link);

		if (strcmp(h->method, method) == 0)
			return h;
	}
	return NULL;
}

static int handler_add(struct chan_server *srv, const char *method, chan_handler_fn fn,
		       chan_stream_fn sfn, void *opaque)
{
	struct handler *h;
	size_t n;

	if (!srv || !method || !chan_method_valid(method) || (!fn && !sfn))
		return -EINVAL;
	if (handler_find(srv, method))
		return -EEXIST;
	n = strlen(method) + 1;
	h = calloc(1, sizeof(*h) + n);
	if (!h)
		return -ENOMEM;
	memcpy(h->method, method, n);
	h->fn = fn;
	h->sfn = sfn;
	h->opaque = opaque;
	chan_list_add_tail(&srv->handlers, &h->link);
	return 0;
}

int chan_handle(struct chan_server *srv, const char *method, chan_handler_fn fn, void *opaque)
{
	return handler_add(srv, method, fn, NULL, opaque);
}

int chan_handle_stream(struct chan_server *srv, const char *method, chan_stream_fn fn,
		       void *opaque)
{
	return handler_add(srv, method, NULL, fn, opaque);
}

chan_stream_fn chan_srv_stream_handler(struct chan_server *srv, const char *method,
				       void **opaque)
{
	struct handler *h = srv ? handler_find(srv, method) : NULL;

	if (!h || !h->sfn)
		return NULL;
	*opaque = h->opaque;
	return h->sfn;
}

/* ---- replies ---- */

static int reply_send(struct chan_conn *c, uint64_t id, int err, const char *msg,
		      const void *body, size_t len)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanReply rep = HCA__CHAN_REPLY__INIT;
	Hca__ChanError e = HCA__CHAN_ERROR__INIT;
	int rc;

	rep.id = id;
	if (err) {
		e.code = (uint32_t)-err;
		e.message = (char *)msg;
		rep.error = &e;
	} else {
		rep.body.data = (uint8_t *)body;
		rep.body.len = len;
	}
	m.kind_case = HCA__CHAN_MSG__KIND_REPLY;
	m.reply = &rep;
	rc = chan_conn_send(c, &m);
	/* A client that does not read is cut by the stall timer, not here. */
	if (rc < 0 && rc != -EMSGSIZE && rc != -ENOTCONN && !c->full_warned)
		conn_log(c, LOG_WARNING, "replies dropped from %llu on: %s",
			 (unsigned long long)id, strerror(-rc));
	c->full_warned = c->full_warned || rc == -ENOBUFS;
	return rc;
}

static int reply_direct(struct chan_conn *c, uint64_t id, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int reply_direct(struct chan_conn *c, uint64_t id, int err, const char *fmt, ...)
{
	char raw[CHAN_MSG_MAX], msg[CHAN_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	chan_line_copy(msg, sizeof(msg), raw); /* one line, whatever the handler wrote */
	return reply_send(c, id, err, msg, NULL, 0);
}

static void reply_release(struct chan_reply *r)
{
	r->c->inflight--;
	chan_conn_unref(r->c);
	free(r);
}

int chan_reply_ok(struct chan_reply *r, const void *body, size_t len)
{
	int rc = reply_send(r->c, r->id, 0, NULL, body, len);

	if (rc == -EMSGSIZE) {
		conn_log(r->c, LOG_WARNING, "%s: reply of %zu bytes exceeds the frame limit",
			 r->method, len);
		reply_direct(r->c, r->id, -EMSGSIZE, "%s: reply of %zu bytes too large",
			     r->method, len);
	}
	reply_release(r);
	return rc;
}

int chan_reply_error(struct chan_reply *r, int err, const char *fmt, ...)
{
	char raw[CHAN_MSG_MAX], msg[CHAN_MSG_MAX];
	va_list ap;
	int rc;

	if (err >= 0 || err <= -4096)
		err = -EIO; /* the wire carries errno values only */
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	chan_line_copy(msg, sizeof(msg), raw);
	rc = reply_send(r->c, r->id, err, msg, NULL, 0);
	reply_release(r);
	return rc;
}

const char *chan_reply_peer(const struct chan_reply *r)
{
	return r->c->id.name;
}

void chan_srv_on_request(struct chan_conn *c, const Hca__ChanRequest *req)
{
	struct handler *h = c->srv ? handler_find(c->srv, req->method) : NULL;
	struct chan_reply *r;

	if (!h || !h->fn) {
		conn_log(c, LOG_NOTICE, "unknown method '%s'", req->method);
		reply_direct(c, req->id, -ENOSYS, "unknown method '%s'", req->method);
		return;
	}
	if (c->inflight >= c->cfg.max_inflight) {
		reply_direct(c, req->id, -EBUSY, "%u requests in flight already", c->inflight);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		reply_direct(c, req->id, -ENOMEM, "out of memory");
		return;
	}
	chan_conn_ref(c);
	r->c = c;
	r->id = req->id;
	snprintf(r->method, sizeof(r->method), "%s", req->method);
	c->inflight++;
	h->fn(r, req->body.data, req->body.len, h->opaque);
}

/* ---- connections ---- */

void chan_srv_on_close(struct chan_server *srv, struct chan_conn *c)
{
	chan_list_del(&c->link);
	srv->nconns--;
	chan_conn_unref(c);
}

static void accept_one(struct chan_server *srv, int fd, const struct sockaddr_storage *ss,
		       socklen_t len)
{
	char addr[64];
	struct chan_conn *c;

	chan_addr_str((const struct sockaddr *)ss, len, addr, sizeof(addr));
	if (srv->nconns >= srv->cfg.max_conns) {
		qb_log(LOG_WARNING, "chan %s: refused: %u connections already", addr,
		       srv->nconns);
		close(fd);
		return;
	}
	c = chan_conn_accept(srv, srv->loop, srv->tls, &srv->cfg, fd, addr);
	if (!c)
		return;
	qb_log(LOG_DEBUG, "chan %s: accepted", addr);
	chan_list_add_tail(&srv->conns, &c->link);
	srv->nconns++;
}

static int32_t accept_dispatch(int32_t fd, int32_t revents, void *data)
{
	struct chan_server *srv = data;

	/* A bounded batch: new connections do not starve established ones. */
	for (int i = 0; i < 32; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd = accept4(srv->lfd, (struct sockaddr *)&ss, &len,
				  SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (cfd < 0 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (cfd < 0) {
			if (errno != EAGAIN)
				qb_log(LOG_ERR, "chan %s: accept: %s", srv->addr, strerror(errno));
			break;
		}
		accept_one(srv, cfd, &ss, len);
	}
	return 0;
}

/* ---- the server ---- */

struct chan_server *chan_server_new(qb_loop_t *loop, struct chan_tls *tls,
				    const struct chan_cfg *cfg)
{
	struct chan_server *srv;

	if (!loop || !tls) {
		errno = EINVAL;
		return NULL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return NULL;
	srv->loop = loop;
	srv->tls = tls;
	srv->lfd = -1;
	chan_cfg_resolve(&srv->cfg, cfg);
	chan_list_init(&srv->conns);
	chan_list_init(&srv->handlers);
	return srv;
}

static int listen_socket(struct chan_server *srv, const struct sockaddr_storage *ss,
			 unsigned len)
{
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc = -errno;

	if (fd < 0)
		goto out;
	/* A restarted agent must get its port back despite TIME_WAIT. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 128) < 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
		rc = -errno;
		goto out;
	}
	srv->port = ntohs(((struct sockaddr_in *)&bound)->sin_port); /* same spot in sin6 */
	srv->lfd = fd;
	fd = -1;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

int chan_server_listen(struct chan_server *srv, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;
	unsigned len;
	int rc;

	if (srv->lfd >= 0)
		return -EALREADY;
	if (chan_addr_parse(addr, port, &ss, &len) < 0)
		return -EINVAL;
	rc = listen_socket(srv, &ss, len);
	if (rc < 0) {
		qb_log(LOG_ERR, "chan: cannot listen on %s port %u: %s", addr, port, strerror(-rc));
		return rc;
	}
	snprintf(srv->addr, sizeof(srv->addr), "%s:%u", addr, srv->port);
	rc = qb_loop_poll_add(srv->loop, QB_LOOP_MED, srv->lfd, POLLIN, srv, accept_dispatch);
	if (rc < 0) {
		qb_log(LOG_ERR, "chan %s: cannot watch the socket: %s", srv->addr, strerror(-rc));
		close(srv->lfd);
		srv->lfd = -1;
		srv->port = 0;
		return rc;
	}
	qb_log(LOG_INFO, "chan %s: listening", srv->addr);
	return 0;
}

uint16_t chan_server_port(const struct chan_server *srv)
{
	return srv->port;
}

void chan_server_free(struct chan_server *srv)
{
	if (!srv)
		return;
	if (srv->lfd >= 0) {
		qb_loop_poll_del(srv->loop, srv->lfd);
		close(srv->lfd);
	}
	while (!chan_list_empty(&srv->conns)) {
		struct chan_conn *c = chan_entry(srv->conns.next, struct chan_conn, link);

		chan_conn_close(c, -ECANCELED, "server shutting down");
	}
	while (!chan_list_empty(&srv->handlers)) {
		struct handler *h = chan_entry(srv->handlers.next, struct handler, link);

		chan_list_del(&h->link);
		free(h);
	}
	free(srv);
}
