/*
 * chan_conn.c: one TLS connection on the loop, either side (see chan_priv.h).
 *
 *   CONNECTING (client) -> HANDSHAKE -> OPEN -> CLOSED
 *
 * Input (frames, dispatch) is chan_recv.c's. Output is a queue of whole
 * frames written record by record (partial writes); past cfg.wbuf_max the
 * peer counts as not reading, and stays so for at most cfg.stall_ms.
 *
 * Reentrancy: loop entry points (io, timers) hold a reference while they run,
 * and every step re-checks the state, since any callback they reach may
 * close the connection or free its owner.
 */
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "proto/chan_priv.h"

#define RBUF_KEEP (1u << 20)	 /* receive buffer kept while idle */
#define WBUF_KEEP (1u << 20)	 /* send buffer kept while idle */
#define WBUF_MIN (64u << 10)

static int32_t io_dispatch(int32_t fd, int32_t revents, void *data);
static void tick_cb(void *data);
static void resume_cb(void *data);

/* ---- configuration ---- */

static void dflt(unsigned *v, unsigned d)
{
	if (!*v)
		*v = d;
}

void chan_cfg_resolve(struct chan_cfg *o, const struct chan_cfg *cfg)
{
	static const struct chan_cfg def = {
		.ping_ms = 1000, .dead_ms = 3000, .handshake_ms = 5000,
		.backoff_min_ms = 100, .backoff_max_ms = 5000, .stall_ms = 5000,
		.max_frame = CHAN_MAX_FRAME, .wbuf_max = 16u << 20, .max_conns = 256,
		.max_inflight = 1024, .max_streams = 64,
	};

	*o = cfg ? *cfg : def;
	dflt(&o->ping_ms, def.ping_ms);
	dflt(&o->dead_ms, def.dead_ms);
	dflt(&o->handshake_ms, def.handshake_ms);
	dflt(&o->backoff_min_ms, def.backoff_min_ms);
	dflt(&o->backoff_max_ms, def.backoff_max_ms);
	dflt(&o->stall_ms, def.stall_ms);
	dflt(&o->max_conns, def.max_conns);
	dflt(&o->max_inflight, def.max_inflight);
	dflt(&o->max_streams, def.max_streams);
	if (!o->max_frame || o->max_frame > WIRE_MAX_PAYLOAD)
		o->max_frame = o->max_frame ? WIRE_MAX_PAYLOAD : def.max_frame;
	if (!o->wbuf_max)
		o->wbuf_max = def.wbuf_max;
}

/* ---- life cycle ---- */

static struct chan_conn *conn_alloc(qb_loop_t *loop, const struct chan_cfg *cfg, const char *addr)
{
	struct chan_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->refs = 1;
	c->loop = loop;
	c->cfg = *cfg;
	c->fd = -1;
	c->t_start = c->t_rx = c->t_ping = chan_now_ms();
	chan_list_init(&c->link);
	chan_list_init(&c->calls);
	chan_list_init(&c->streams);
	snprintf(c->id.addr, sizeof(c->id.addr), "%s", addr);
	snprintf(c->id.label, sizeof(c->id.label), "%s", addr);
	return c;
}

void chan_conn_ref(struct chan_conn *c)
{
	c->refs++;
}

/* Everything is released by chan_conn_close(); only the memory is left. */
void chan_conn_unref(struct chan_conn *c)
{
	if (--c->refs > 0)
		return;
	free(c->rbuf);
	free(c->wbuf);
	free(c);
}

static void timer_disarm(struct chan_conn *c, qb_loop_timer_handle *th)
{
	if (*th)
		qb_loop_timer_del(c->loop, *th);
	*th = 0;
}

static int tick_arm(struct chan_conn *c)
{
	unsigned ms = c->cfg.ping_ms;

	ms = c->cfg.dead_ms < ms ? c->cfg.dead_ms : ms;
	ms = c->cfg.stall_ms < ms ? c->cfg.stall_ms : ms;
	ms = c->cfg.handshake_ms < ms ? c->cfg.handshake_ms : ms;
	ms = ms / 4 ? ms / 4 : 1;
	return qb_loop_timer_add(c->loop, QB_LOOP_MED, (uint64_t)ms * QB_TIME_NS_IN_MSEC, c,
				 tick_cb, &c->tick);
}

static int32_t wanted_events(const struct chan_conn *c, bool hs_write)
{
	if (c->state == CONN_CONNECTING)
		return POLLOUT;
	if (c->state == CONN_HANDSHAKE)
		return POLLIN | (hs_write ? POLLOUT : 0);
	return POLLIN | (c->wlen > c->woff || c->read_wants_write ? POLLOUT : 0);
}

static int watch(struct chan_conn *c, bool hs_write)
{
	int32_t ev = wanted_events(c, hs_write);
	int rc;

	if (c->watched && c->events == ev)
		return 0;
	if (c->watched)
		rc = qb_loop_poll_mod(c->loop, QB_LOOP_MED, c->fd, ev, c, io_dispatch);
	else
		rc = qb_loop_poll_add(c->loop, QB_LOOP_MED, c->fd, ev, c, io_dispatch);
	if (rc < 0) {
		chan_conn_close(c, rc, "cannot watch the socket: %s", strerror(-rc));
		return rc;
	}
	c->watched = true;
	c->events = ev;
	return 0;
}

/* The socket, TLS state, timers and buffers go; the struct stays. */
static void io_release(struct chan_conn *c, bool polite)
{
	if (c->watched)
		qb_loop_poll_del(c->loop, c->fd);
	c->watched = false;
	timer_disarm(c, &c->tick);
	timer_disarm(c, &c->resume);
	if (c->ssl && polite && c->state == CONN_OPEN) {
		ERR_clear_error();
		SSL_shutdown(c->ssl); /* best effort close_notify; we do not wait */
	}
	SSL_free(c->ssl);
	ERR_clear_error();
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->wbuf);
	c->wbuf = NULL;
	if (!c->in_dispatch) { /* else a data() callback may be reading it in place */
		free(c->rbuf);
		c->rbuf = NULL;
		c->rcap = 0;
	}
	c->rlen = c->rneed = 0;
	c->wcap = c->wlen = c->woff = 0;
	c->state = CONN_CLOSED;
}

void chan_conn_close(struct chan_conn *c, int err, const char *fmt, ...)
{
	struct chan_list calls, streams;
	int cb_err = err == -ECANCELED ? -ECANCELED : -ECONNRESET;
	va_list ap;

	if (c->state == CONN_CLOSED)
		return;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
	conn_log(c, err == -ECANCELED ? LOG_INFO : LOG_WARNING, "closing: %s", c->why);
	chan_conn_ref(c);
	c->err = err;
	io_release(c, err == -ECANCELED);
	chan_list_move(&c->calls, &calls);
	chan_list_move(&c->streams, &streams);
	/* The owner first, so callbacks below see the connection gone. */
	if (c->peer)
		chan_peer_on_close(c->peer, c);
	else if (c->srv)
		chan_srv_on_close(c->srv, c);
	c->peer = NULL;
	c->srv = NULL;
	chan_calls_fail(&calls, cb_err, c->why);
	chan_streams_fail(&streams, cb_err, c->why);
	chan_conn_unref(c);
}

/* ---- sending ---- */

size_t chan_conn_queued(const struct chan_conn *c)
{
	return c->wlen - c->woff;
}

bool chan_conn_accepted(const struct chan_conn *c)
{
	return c->state == CONN_OPEN && (!c->peer || c->rx_frames > 0);
}

/* Stream bytes queued beyond this wait for the queue to drain. */
static size_t stream_queue(const struct chan_conn *c)
{
	return c->cfg.wbuf_max < CHAN_STREAM_QUEUE ? c->cfg.wbuf_max : CHAN_STREAM_QUEUE;
}

bool chan_conn_writable(struct chan_conn *c)
{
	if (c->state != CONN_OPEN)
		return false;
	if (!c->over && chan_conn_queued(c) < stream_queue(c))
		return true;
	c->streams_waiting = true; /* flush() calls them back */
	return false;
}

static int wbuf_reserve(struct chan_conn *c, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (c->wcap - c->wlen >= n)
		return 0;
	/* Slide down only when that moves less than it frees. */
	if (c->woff && c->woff >= c->wlen - c->woff) {
		memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
		c->wlen -= c->woff;
		c->woff = 0;
		if (c->wcap - c->wlen >= n)
			return 0;
	}
	cap = c->wcap * 2 > WBUF_MIN ? c->wcap * 2 : WBUF_MIN;
	cap = cap > c->wlen + n ? cap : c->wlen + n;
	p = realloc(c->wbuf, cap);
	if (!p)
		return -ENOMEM;
	c->wbuf = p;
	c->wcap = cap;
	return 0;
}

int chan_conn_send(struct chan_conn *c, const Hca__ChanMsg *m)
{
	size_t plen, total = chan_msg_frame_size(m, &plen);
	int rc;

	if (c->state != CONN_OPEN)
		return -ENOTCONN;
	if (plen > c->cfg.max_frame)
		return -EMSGSIZE;
	if (chan_conn_queued(c) + total > 2 * c->cfg.wbuf_max)
		return -ENOBUFS;
	rc = wbuf_reserve(c, total);
	if (rc < 0)
		return rc;
	chan_msg_frame_put(c->wbuf + c->wlen, m, plen);
	c->wlen += total;
	if (!c->over && chan_conn_queued(c) > c->cfg.wbuf_max) {
		c->over = true;
		c->t_over = chan_now_ms();
	}
	/* Inside io_dispatch the flush at its end sends it with the rest. */
	if (!c->in_dispatch)
		watch(c, false);
	return 0;
}

/* ---- TLS I/O failures ---- */

/* The reason at the head of OpenSSL's queue, before the log drains it. */
static const char *ssl_reason(void)
{
	const char *r = ERR_reason_error_string(ERR_peek_error());

	return r ? r : "TLS error";
}

void chan_conn_ssl_fail(struct chan_conn *c, int n, bool reading)
{
	int sys = errno;
	int e = SSL_get_error(c->ssl, n);
	char why[128];

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (reading)
			c->read_wants_write = e == SSL_ERROR_WANT_WRITE;
		else
			c->write_wants_read = e == SSL_ERROR_WANT_READ;
		return;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		chan_conn_close(c, -ECONNRESET, "closed by the peer");
		return;
	}
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		chan_conn_close(c, -ECONNRESET, "%s", n == 0 || !sys ? "connection lost" :
			       strerror(sys));
		return;
	}
	snprintf(why, sizeof(why), "%s", ssl_reason());
	if (chan_ssl_log(LOG_DEBUG, c->id.label, reading ? "TLS read" : "TLS write"))
		chan_conn_close(c, -ECONNRESET, "connection lost (no close_notify)");
	else
		chan_conn_close(c, -EPROTO, "TLS error: %s", why);
}

/* ---- writing ---- */

static void buffers_trim(struct chan_conn *c)
{
	uint8_t *p;

	if (c->wlen == 0 && c->wcap > WBUF_KEEP) {
		free(c->wbuf);
		c->wbuf = NULL;
		c->wcap = 0;
	}
	if (c->rlen == 0 && c->rcap > RBUF_KEEP) {
		p = realloc(c->rbuf, RBUF_KEEP);
		if (p) {
			c->rbuf = p;
			c->rcap = RBUF_KEEP;
		}
	}
}

/* Write the queue until it is empty or the socket full; true if full. */
static bool write_queue(struct chan_conn *c)
{
	while (c->state == CONN_OPEN && c->woff < c->wlen) {
		size_t n = c->wlen - c->woff;
		int w;

		ERR_clear_error();
		w = SSL_write(c->ssl, c->wbuf + c->woff, n > INT_MAX ? INT_MAX : (int)n);
		if (w <= 0) {
			chan_conn_ssl_fail(c, w, false);
			return true;
		}
		c->write_wants_read = false;
		c->woff += (size_t)w;
	}
	c->woff = c->wlen = 0;
	return false;
}

/*
 * Streams keep the queue short (stream_queue()) and refill it here as it
 * drains, a few rounds while the socket takes it: their bytes go from the
 * user's buffer to the socket through a queue that stays in cache.
 */
static void flush(struct chan_conn *c)
{
	for (int round = 0; round < 8 && c->state == CONN_OPEN; round++) {
		bool full = write_queue(c);

		if (c->state != CONN_OPEN)
			return;
		if (c->over && chan_conn_queued(c) <= c->cfg.wbuf_max / 2) {
			c->over = false;
			c->full_warned = false;
		}
		if (!c->streams_waiting || chan_conn_queued(c) >= stream_queue(c) / 2)
			return;
		c->streams_waiting = false;
		chan_streams_drained(c);
		if (full)
			return;
	}
}

/* ---- handshake ---- */

/*
 * In TLS 1.3 the client finishes its handshake before the server has
 * checked the client's certificate, so a refused client would send its
 * requests into a connection about to fail. The server therefore speaks
 * first once it has accepted, and the client sends nothing before that.
 */
static void welcome(struct chan_conn *c)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanPing p = HCA__CHAN_PING__INIT;

	p.pong = true; /* asks for no answer */
	m.kind_case = HCA__CHAN_MSG__KIND_PING;
	m.ping = &p;
	chan_conn_send(c, &m);
}

static void established(struct chan_conn *c)
{
	if (!c->id.name[0] || SSL_get_verify_result(c->ssl) != X509_V_OK) {
		chan_conn_close(c, -EACCES, "peer certificate not verified");
		return;
	}
	c->rbuf = malloc(RBUF_KEEP);
	if (!c->rbuf) {
		chan_conn_close(c, -ENOMEM, "no memory for buffers");
		return;
	}
	c->rcap = RBUF_KEEP;
	c->state = CONN_OPEN;
	c->t_rx = chan_now_ms();
	if (c->peer) {
		conn_log(c, LOG_DEBUG, "TLS up, waiting for the server's welcome");
		return;
	}
	conn_log(c, LOG_INFO, "connected (%s, %s)", SSL_get_version(c->ssl),
		 SSL_get_cipher_name(c->ssl));
	welcome(c);
}

static void do_handshake(struct chan_conn *c)
{
	int n, e;
	char why[128];

	ERR_clear_error();
	n = SSL_do_handshake(c->ssl);
	if (n == 1) {
		established(c);
		return;
	}
	e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		watch(c, e == SSL_ERROR_WANT_WRITE);
		return;
	}
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		chan_conn_close(c, -ECONNRESET, "connection closed during the TLS handshake");
		return;
	}
	snprintf(why, sizeof(why), "%s", ssl_reason());
	chan_ssl_log(LOG_DEBUG, c->id.label, "TLS handshake");
	chan_conn_close(c, SSL_get_verify_result(c->ssl) != X509_V_OK ? -EACCES : -EPROTO,
			"TLS handshake failed: %s", why);
}

static void on_connected(struct chan_conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		chan_conn_close(c, -err, "cannot connect: %s", strerror(err));
		return;
	}
	c->state = CONN_HANDSHAKE;
	do_handshake(c);
}

/* ---- loop entry points ---- */

static void serve(struct chan_conn *c, int32_t revents)
{
	c->in_dispatch = true;
	if (c->state == CONN_CONNECTING)
		on_connected(c);
	else if (c->state == CONN_HANDSHAKE) {
		do_handshake(c);
		/* what came with the handshake's last flight sits in OpenSSL's buffer */
		if (c->state == CONN_OPEN)
			chan_conn_read(c);
	} else if (c->state == CONN_OPEN) {
		if ((revents & POLLOUT) || c->write_wants_read)
			flush(c);
		if (c->state == CONN_OPEN &&
		    ((revents & (POLLIN | POLLHUP | POLLERR)) || c->read_wants_write))
			chan_conn_read(c);
	}
	c->in_dispatch = false;
	if (c->state == CONN_OPEN)
		flush(c); /* what dispatching queued, in as few records as it takes */
	if (c->state == CONN_OPEN)
		watch(c, false);
}

static int32_t io_dispatch(int32_t fd, int32_t revents, void *data)
{
	struct chan_conn *c = data;

	chan_conn_ref(c);
	serve(c, revents);
	chan_conn_unref(c);
	return 0;
}

static void keepalive(struct chan_conn *c, uint64_t now)
{
	Hca__ChanMsg m = HCA__CHAN_MSG__INIT;
	Hca__ChanPing ping = HCA__CHAN_PING__INIT;

	if (now - c->t_rx < c->cfg.ping_ms || now - c->t_ping < c->cfg.ping_ms)
		return;
	c->t_ping = now;
	ping.nonce = ++c->ping_nonce;
	m.kind_case = HCA__CHAN_MSG__KIND_PING;
	m.ping = &ping;
	chan_conn_send(c, &m);
}

void chan_conn_resume(struct chan_conn *c)
{
	if (!c->resume)
		qb_loop_timer_add(c->loop, QB_LOOP_MED, 0, c, resume_cb, &c->resume);
}

static void resume_cb(void *data)
{
	struct chan_conn *c = data;

	c->resume = 0;
	chan_conn_ref(c);
	if (c->state == CONN_OPEN)
		serve(c, POLLIN);
	chan_conn_unref(c);
}

static void tick_cb(void *data)
{
	struct chan_conn *c = data;
	uint64_t now = chan_now_ms();

	c->tick = 0;
	chan_conn_ref(c);
	if (!chan_conn_accepted(c) && now - c->t_start >= c->cfg.handshake_ms)
		chan_conn_close(c, -ETIMEDOUT, "no TLS handshake within %u ms", c->cfg.handshake_ms);
	else if (c->state == CONN_OPEN && now - c->t_rx >= c->cfg.dead_ms)
		chan_conn_close(c, -ETIMEDOUT, "nothing received for %u ms", c->cfg.dead_ms);
	else if (c->over && now - c->t_over >= c->cfg.stall_ms)
		chan_conn_close(c, -ETIMEDOUT, "the peer left %zu bytes unread for %u ms",
				chan_conn_queued(c), c->cfg.stall_ms);
	if (c->state == CONN_CLOSED)
		goto out;
	if (c->state == CONN_OPEN) {
		keepalive(c, now);
		buffers_trim(c);
	}
	if (tick_arm(c) < 0)
		chan_conn_close(c, -ENOMEM, "cannot arm the keepalive timer");
out:
	chan_conn_unref(c);
}

/* ---- creation ---- */

int chan_addr_parse(const char *host, uint16_t port, struct sockaddr_storage *ss, unsigned *len)
{
	struct addrinfo hints = {
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
		.ai_socktype = SOCK_STREAM,
	};
	struct addrinfo *res = NULL;
	char svc[8];

	snprintf(svc, sizeof(svc), "%u", port);
	/* Numeric only: a name lookup would block the loop. */
	if (!host || getaddrinfo(host, svc, &hints, &res) != 0 || !res)
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = (unsigned)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

void chan_addr_str(const struct sockaddr *sa, unsigned len, char *out, size_t n)
{
	char host[INET6_ADDRSTRLEN] = "?", svc[8] = "?";

	getnameinfo(sa, len, host, sizeof(host), svc, sizeof(svc),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(out, n, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, svc);
}

static int sock_nodelay(int fd)
{
	int one = 1;

	return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Common tail of connect and accept: TLS state, watch, keepalive timer. */
static int conn_start(struct chan_conn *c, struct chan_tls *tls, bool server)
{
	c->ssl = chan_tls_ssl_new(tls, server, c->fd, &c->id);
	if (!c->ssl)
		return -EPROTO;
	sock_nodelay(c->fd);
	if (tick_arm(c) < 0)
		return -ENOMEM;
	/* A client speaks first: ask for POLLOUT to send its hello. */
	return watch(c, !server);
}

struct chan_conn *chan_conn_connect(struct chan_peer *p, qb_loop_t *loop, struct chan_tls *tls,
				    const struct chan_cfg *cfg, const char *name,
				    const struct sockaddr *sa, unsigned salen, const char *addr)
{
	struct chan_conn *c = conn_alloc(loop, cfg, addr);
	int rc = -ENOMEM;

	if (!c)
		goto out;
	snprintf(c->id.expect, sizeof(c->id.expect), "%s", name);
	snprintf(c->id.label, sizeof(c->id.label), "%s at %s", name, addr);
	c->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	rc = c->fd < 0 ? -errno : 0;
	if (rc == 0 && connect(c->fd, sa, salen) < 0 && errno != EINPROGRESS)
		rc = -errno;
	if (rc < 0) {
		conn_log(c, LOG_NOTICE, "cannot connect: %s", strerror(-rc));
		goto out;
	}
	c->state = CONN_CONNECTING;
	rc = conn_start(c, tls, false);
out:
	if (rc < 0 && c) {
		io_release(c, false);
		chan_conn_unref(c);
		c = NULL;
	}
	if (rc < 0)
		errno = -rc;
	if (c)
		c->peer = p;
	return c;
}

struct chan_conn *chan_conn_accept(struct chan_server *srv, qb_loop_t *loop, struct chan_tls *tls,
				   const struct chan_cfg *cfg, int fd, const char *addr)
{
	struct chan_conn *c = conn_alloc(loop, cfg, addr);

	if (!c) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->state = CONN_HANDSHAKE;
	if (conn_start(c, tls, true) < 0) {
		io_release(c, false);
		chan_conn_unref(c);
		return NULL;
	}
	c->srv = srv;
	return c;
}
