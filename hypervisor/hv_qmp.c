/*
 * hv_qmp.c: the QMP client (see hv_qmp.h).
 *
 * Two halves, the way libvirt keeps qemu_monitor_json.c apart from
 * qemu_monitor.c: first the wire encoding (build a command, classify and pick
 * apart a message from QEMU; no I/O, no connection state), then the
 * connection: socket, line reader, write queue, timers and the state machine
 *
 *   IDLE -> CONNECTING -> GREETING -> NEGOTIATING -> READY -> IDLE
 *
 * Reentrancy: user callbacks may end the connection or free the handle. Every
 * entry point that can reach a callback (loop dispatchers, timer callbacks,
 * disconnect, free) holds a reference so the memory outlives the callback,
 * and every teardown bumps a generation counter so a dispatcher stops
 * touching a connection a callback has ended (or replaced by a reconnect).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <qb/qblog.h>

#include "hypervisor/hv_qmp.h"

#define qmp_log(q, pri, fmt, ...) qb_log(pri, "qmp %s: " fmt, (q)->path, ##__VA_ARGS__)

/* ---- wire encoding: JSON in, JSON out, nothing else ---- */

enum msg_kind {
	MSG_OTHER,
	MSG_GREETING,
	MSG_EVENT,
	MSG_REPLY,
};

/*
 * The text of one command into *@out (free() it). Steals @args. No line
 * terminator: QEMU's JSON streamer needs none, and it stops reading while a
 * command runs, so a "\r\n" after `quit` would be left unread and QEMU's exit
 * would reset the socket instead of closing it cleanly.
 */
static int msg_encode_command(const char *cmd, json_t *args, const char *id, char **out)
{
	json_t *obj = json_object();
	json_t *name = json_string(cmd); /* NULL also when not UTF-8 */
	int rc = -ENOMEM;

	*out = NULL;
	if (!name) {
		rc = -EINVAL;
		goto out;
	}
	if (!obj || json_object_set(obj, "execute", name) < 0)
		goto out;
	if (args && json_object_set(obj, "arguments", args) < 0)
		goto out;
	if (json_object_set_new(obj, "id", json_string(id)) < 0)
		goto out;
	*out = json_dumps(obj, JSON_COMPACT);
	rc = *out ? 0 : -ENOMEM;
out:
	json_decref(name);
	json_decref(args);
	json_decref(obj);
	return rc;
}

/* One message from QEMU; NULL with @jerr->text set unless a JSON object. */
static json_t *msg_decode(const char *line, size_t len, json_error_t *jerr)
{
	json_t *msg = json_loadb(line, len, 0, jerr);

	if (msg && !json_is_object(msg)) {
		json_decref(msg);
		msg = NULL;
		snprintf(jerr->text, sizeof(jerr->text), "not a JSON object");
	}
	return msg;
}

static enum msg_kind msg_kind(const json_t *msg)
{
	if (json_object_get(msg, "QMP"))
		return MSG_GREETING;
	if (json_is_string(json_object_get(msg, "event")))
		return MSG_EVENT;
	if (json_object_get(msg, "return") || json_is_object(json_object_get(msg, "error")))
		return MSG_REPLY;
	return MSG_OTHER;
}

/* The id we put in the command; NULL if QEMU could not tell (parse error). */
static const char *msg_reply_id(const json_t *msg)
{
	return json_string_value(json_object_get(msg, "id"));
}

/* 0 and *@ret, or -EIO and the error's class/desc (never NULL). Borrowed. */
static int msg_reply_parse(const json_t *msg, json_t **ret, const char **cls, const char **desc)
{
	json_t *err = json_object_get(msg, "error");

	*ret = err ? NULL : json_object_get(msg, "return");
	*cls = *desc = NULL;
	if (!err)
		return 0;
	*cls = json_string_value(json_object_get(err, "class"));
	*desc = json_string_value(json_object_get(err, "desc"));
	*cls = *cls ? *cls : "";
	*desc = *desc ? *desc : "";
	return -EIO;
}

/* Event name (borrowed) and its "data" (borrowed, may be NULL). */
static const char *msg_event(const json_t *msg, json_t **data)
{
	*data = json_object_get(msg, "data");
	return json_string_value(json_object_get(msg, "event"));
}

/* QEMU's version from the greeting, for the log; zeros where absent. */
static void msg_greeting_version(const json_t *msg, int v[3])
{
	json_t *ver = json_object_get(json_object_get(msg, "QMP"), "version");
	json_t *qemu = json_object_get(ver, "qemu");

	v[0] = (int)json_integer_value(json_object_get(qemu, "major"));
	v[1] = (int)json_integer_value(json_object_get(qemu, "minor"));
	v[2] = (int)json_integer_value(json_object_get(qemu, "micro"));
}

/* ---- the connection ---- */

#define QMP_RBUF_MIN 4096u
#define QMP_RBUF_MAX (HV_QMP_MAX_LINE + 2u) /* the longest line and its "\r\n" */
#define QMP_EOF 1			    /* read_some(): QEMU closed its end */

enum qmp_state {
	ST_IDLE,
	ST_CONNECTING,
	ST_GREETING,
	ST_NEGOTIATING,
	ST_READY,
};

static const char *const state_names[] = {
	[ST_IDLE] = "idle",
	[ST_CONNECTING] = "connecting",
	[ST_GREETING] = "waiting for greeting",
	[ST_NEGOTIATING] = "negotiating capabilities",
	[ST_READY] = "ready",
};

struct qmp_cmd {
	struct qmp_cmd *next;
	struct hv_qmp *q;
	hv_qmp_reply_fn cb;
	void *opaque;
	qb_loop_timer_handle timer; /* 0: none armed */
	char id[32];
	char name[]; /* for the log */
};

struct hv_qmp {
	qb_loop_t *loop;
	char *path;
	const struct hv_qmp_ops *ops;
	void *opaque;
	unsigned timeout_ms;

	enum qmp_state state;
	int fd;
	bool watched;	 /* fd registered with the loop */
	int32_t events;	 /* what we poll for */
	unsigned gen;	 /* bumped by every teardown */
	unsigned refs;	 /* entry points in progress */
	bool dying;	 /* hv_qmp_free() called: free when refs drops to 0 */
	uint64_t next_id;

	qb_loop_timer_handle conn_timer; /* connect+greeting+negotiation deadline */
	qb_loop_timer_handle fail_timer; /* reports a failed connect() from the loop */
	int fail_err;

	char *rbuf; /* [rstart, rlen) not yet parsed */
	size_t rcap, rstart, rlen;
	char *wbuf; /* [woff, wlen) not yet written */
	size_t wcap, woff, wlen;

	struct qmp_cmd *pending; /* in send order */
};

static int32_t io_dispatch(int32_t fd, int32_t revents, void *data);

/* May free @q: callers must not touch it afterwards. */
static void unref(struct hv_qmp *q)
{
	if (--q->refs > 0 || !q->dying)
		return;
	free(q->rbuf);
	free(q->wbuf);
	free(q->path);
	free(q);
}

static int timer_arm(struct hv_qmp *q, uint64_t ns, qb_loop_timer_dispatch_fn fn, void *data,
		     qb_loop_timer_handle *th)
{
	int rc = qb_loop_timer_add(q->loop, QB_LOOP_MED, ns, data, fn, th);

	if (rc < 0) {
		qmp_log(q, LOG_ERR, "cannot add a timer: %s", strerror(-rc));
		*th = 0;
	}
	return rc < 0 ? rc : 0;
}

static void timer_disarm(struct hv_qmp *q, qb_loop_timer_handle *th)
{
	if (*th)
		qb_loop_timer_del(q->loop, *th);
	*th = 0;
}

static int watch(struct hv_qmp *q, int32_t events)
{
	int rc = 0;

	if (q->watched && q->events == events)
		return 0;
	if (q->watched)
		rc = qb_loop_poll_mod(q->loop, QB_LOOP_MED, q->fd, events, q, io_dispatch);
	else
		rc = qb_loop_poll_add(q->loop, QB_LOOP_MED, q->fd, events, q, io_dispatch);
	if (rc < 0) {
		qmp_log(q, LOG_ERR, "cannot watch the socket: %s", strerror(-rc));
		return rc;
	}
	q->watched = true;
	q->events = events;
	return 0;
}

/* ---- pending commands ---- */

/* A handful are ever in flight: lists beat anything cleverer here. */
static void cmd_unlink(struct hv_qmp *q, struct qmp_cmd *c)
{
	struct qmp_cmd **pp = &q->pending;

	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
}

static struct qmp_cmd *cmd_take(struct hv_qmp *q, const char *id)
{
	struct qmp_cmd *c;

	for (c = q->pending; c; c = c->next) {
		if (strcmp(c->id, id) == 0) {
			cmd_unlink(q, c);
			return c;
		}
	}
	return NULL;
}

/* @c is already off the pending list; runs its callback and frees it. */
static void cmd_complete(struct hv_qmp *q, struct qmp_cmd *c, int err, json_t *ret,
			 const char *cls, const char *desc)
{
	/* With a callback the caller judges the error; without one, say it here. */
	int pri = c->cb ? LOG_DEBUG : LOG_WARNING;

	timer_disarm(q, &c->timer);
	if (err == -EIO)
		qmp_log(q, pri, "%s (id %s) failed: %s: %s", c->name, c->id, cls, desc);
	else if (err && !c->cb)
		qmp_log(q, pri, "%s (id %s) failed: %s", c->name, c->id, strerror(-err));
	if (c->cb)
		c->cb(q, err, ret, cls, desc, c->opaque);
	free(c);
}

static void cmd_timeout_cb(void *data)
{
	struct qmp_cmd *c = data;
	struct hv_qmp *q = c->q;

	c->timer = 0;
	q->refs++;
	cmd_unlink(q, c);
	qmp_log(q, LOG_WARNING, "%s (id %s): no reply in time, a late one will be dropped",
		c->name, c->id);
	cmd_complete(q, c, -ETIMEDOUT, NULL, NULL, NULL);
	unref(q);
}

/* ---- teardown ---- */

/* Drop the socket, timers and buffers; hand back the pending commands. */
static struct qmp_cmd *detach(struct hv_qmp *q)
{
	struct qmp_cmd *list = q->pending;

	if (q->watched)
		qb_loop_poll_del(q->loop, q->fd);
	if (q->fd >= 0)
		close(q->fd);
	q->fd = -1;
	q->watched = false;
	q->events = 0;
	timer_disarm(q, &q->conn_timer);
	timer_disarm(q, &q->fail_timer);
	q->pending = NULL;
	free(q->rbuf);
	free(q->wbuf);
	q->rbuf = q->wbuf = NULL;
	q->rcap = q->rstart = q->rlen = 0;
	q->wcap = q->woff = q->wlen = 0;
	q->state = ST_IDLE;
	q->gen++;
	return list;
}

/*
 * End the connection: pending commands complete with @cmd_err, then, if
 * @notify and there was a connection, ops->closed(@err). The list is detached
 * first so callbacks may reconnect or free without seeing half a teardown.
 */
static void teardown(struct hv_qmp *q, int cmd_err, bool notify, int err)
{
	bool was_active = q->state != ST_IDLE;
	struct qmp_cmd *list, *c;

	q->refs++;
	list = detach(q);
	while ((c = list)) {
		list = c->next;
		cmd_complete(q, c, cmd_err, NULL, NULL, NULL);
	}
	if (notify && was_active && !q->dying && q->ops->closed)
		q->ops->closed(q, err, q->opaque);
	unref(q);
}

/* A failure found while reading or writing; the cause is already logged. */
static void fail(struct hv_qmp *q, int rc)
{
	int err = rc;

	if (rc == QMP_EOF)
		err = q->state == ST_READY ? 0 : -ECONNRESET;
	teardown(q, -ECONNRESET, true, err);
}

static void conn_timeout_cb(void *data)
{
	struct hv_qmp *q = data;

	q->conn_timer = 0;
	qmp_log(q, LOG_ERR, "timed out after %u ms while %s", q->timeout_ms,
		state_names[q->state]);
	teardown(q, -ECONNRESET, true, -ETIMEDOUT);
}

static void fail_cb(void *data)
{
	struct hv_qmp *q = data;

	q->fail_timer = 0;
	teardown(q, -ECONNRESET, true, q->fail_err);
}

/* ---- writing ---- */

static int wbuf_queue(struct hv_qmp *q, const char *text)
{
	size_t len = strlen(text);
	char *p;

	/* Compacted only when flush() empties it: commands are small. */
	if (q->wlen + len > q->wcap) {
		p = realloc(q->wbuf, (q->wlen + len) * 2);
		if (!p)
			return -ENOMEM;
		q->wbuf = p;
		q->wcap = (q->wlen + len) * 2;
	}
	memcpy(q->wbuf + q->wlen, text, len);
	q->wlen += len;
	return watch(q, POLLIN | POLLOUT);
}

static int flush(struct hv_qmp *q)
{
	ssize_t n;
	int rc;

	while (q->woff < q->wlen) {
		n = send(q->fd, q->wbuf + q->woff, q->wlen - q->woff, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n < 0) {
			rc = -errno;
			qmp_log(q, LOG_ERR, "write failed: %s", strerror(-rc));
			return rc;
		}
		q->woff += (size_t)n;
	}
	q->woff = q->wlen = 0;
	return watch(q, POLLIN);
}

/* Queue a command whatever the state; the public API checks readiness. */
static int send_command(struct hv_qmp *q, const char *cmd, json_t *args, unsigned timeout_ms,
			hv_qmp_reply_fn cb, void *opaque)
{
	size_t nlen = strlen(cmd) + 1;
	struct qmp_cmd *c = calloc(1, sizeof(*c) + nlen), **pp;
	char *text = NULL;
	int rc = -ENOMEM;

	if (!c)
		goto out;
	memcpy(c->name, cmd, nlen);
	c->q = q;
	c->cb = cb;
	c->opaque = opaque;
	snprintf(c->id, sizeof(c->id), "hca-%" PRIu64, ++q->next_id);
	rc = msg_encode_command(cmd, args, c->id, &text);
	args = NULL; /* stolen, whatever happened */
	if (rc)
		goto out;
	if (timeout_ms) {
		rc = timer_arm(q, (uint64_t)timeout_ms * QB_TIME_NS_IN_MSEC, cmd_timeout_cb, c,
			       &c->timer);
		if (rc)
			goto out;
	}
	rc = wbuf_queue(q, text);
	if (rc)
		goto out;
	qmp_log(q, LOG_DEBUG, "sending %s", text);
	for (pp = &q->pending; *pp; pp = &(*pp)->next)
		;
	*pp = c;
	c = NULL;
out:
	if (rc)
		qmp_log(q, LOG_ERR, "cannot send %s: %s", cmd, strerror(-rc));
	if (c)
		timer_disarm(q, &c->timer);
	free(c);
	free(text);
	json_decref(args);
	return rc;
}

/* ---- reading ---- */

static void caps_done(struct hv_qmp *q, int err, json_t *ret, const char *cls, const char *desc,
		      void *opaque)
{
	if (err == -EIO) {
		qmp_log(q, LOG_ERR, "qmp_capabilities refused: %s: %s", cls, desc);
		teardown(q, -ECONNRESET, true, -EPROTO);
		return;
	}
	if (err)
		return; /* the connection already ended; closed reports why */
	timer_disarm(q, &q->conn_timer);
	q->state = ST_READY;
	qmp_log(q, LOG_INFO, "ready");
	if (q->ops->ready)
		q->ops->ready(q, q->opaque);
}

static int on_greeting(struct hv_qmp *q, const json_t *msg)
{
	int v[3];

	msg_greeting_version(msg, v);
	qmp_log(q, LOG_INFO, "QEMU %d.%d.%d greeted us", v[0], v[1], v[2]);
	q->state = ST_NEGOTIATING;
	/* No timer of its own: conn_timer covers the whole negotiation. */
	return send_command(q, "qmp_capabilities", NULL, 0, caps_done, NULL);
}

static void on_reply(struct hv_qmp *q, const json_t *msg)
{
	const char *id = msg_reply_id(msg);
	struct qmp_cmd *c = id ? cmd_take(q, id) : NULL;
	const char *cls, *desc;
	json_t *ret;
	int err;

	if (!c) {
		/* Ours timed out, or QEMU could not parse a command to find its id. */
		qmp_log(q, LOG_NOTICE, "dropping a reply with unknown id %s", id ? id : "(none)");
		return;
	}
	err = msg_reply_parse(msg, &ret, &cls, &desc);
	cmd_complete(q, c, err, ret, cls, desc);
}

static void on_event(struct hv_qmp *q, const json_t *msg)
{
	json_t *data;
	const char *name = msg_event(msg, &data);

	qmp_log(q, LOG_DEBUG, "event %s", name);
	if (q->ops->event)
		q->ops->event(q, name, data, q->opaque);
}

static int dispatch_msg(struct hv_qmp *q, const json_t *msg)
{
	enum msg_kind kind = msg_kind(msg);

	if (q->state == ST_GREETING && kind != MSG_GREETING) {
		qmp_log(q, LOG_ERR, "first message is not a QMP greeting");
		return -EPROTO;
	}
	switch (kind) {
	case MSG_GREETING:
		if (q->state == ST_GREETING)
			return on_greeting(q, msg);
		qmp_log(q, LOG_ERR, "unexpected second greeting");
		return -EPROTO;
	case MSG_EVENT:
		on_event(q, msg);
		return 0;
	case MSG_REPLY:
		on_reply(q, msg);
		return 0;
	case MSG_OTHER:
		break;
	}
	qmp_log(q, LOG_WARNING, "ignoring a message that is neither reply nor event");
	return 0;
}

static int handle_line(struct hv_qmp *q, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *msg = NULL;
	int rc = 0;

	if (len == 0)
		goto out;
	if (len > HV_QMP_MAX_LINE) {
		qmp_log(q, LOG_ERR, "message of %zu bytes is over the %u byte limit", len,
			HV_QMP_MAX_LINE);
		rc = -EPROTO;
		goto out;
	}
	msg = msg_decode(line, len, &jerr);
	if (!msg) {
		qmp_log(q, LOG_ERR, "malformed message (%s): %.*s", jerr.text,
			len > 200 ? 200 : (int)len, line);
		rc = -EPROTO;
		goto out;
	}
	rc = dispatch_msg(q, msg);
out:
	json_decref(msg);
	return rc;
}

/* Handle every complete line; stop if a callback ended the connection. */
static int dispatch_lines(struct hv_qmp *q)
{
	unsigned gen = q->gen;
	char *line, *nl;
	size_t len;
	int rc = 0;

	while (rc == 0 && gen == q->gen) {
		line = q->rbuf + q->rstart;
		nl = memchr(line, '\n', q->rlen - q->rstart);
		if (!nl)
			break;
		len = (size_t)(nl - line);
		q->rstart += len + 1;
		if (len && line[len - 1] == '\r')
			len--;
		rc = handle_line(q, line, len);
	}
	return rc;
}

/* Room to read into; a full buffer without a newline is a line too long. */
static int rbuf_reserve(struct hv_qmp *q)
{
	size_t cap;
	char *p;

	if (q->rstart) {
		memmove(q->rbuf, q->rbuf + q->rstart, q->rlen - q->rstart);
		q->rlen -= q->rstart;
		q->rstart = 0;
	}
	if (q->rlen < q->rcap)
		return 0;
	if (q->rcap >= QMP_RBUF_MAX) {
		qmp_log(q, LOG_ERR, "message over the %u byte limit", HV_QMP_MAX_LINE);
		return -EPROTO;
	}
	cap = q->rcap ? q->rcap * 2 : QMP_RBUF_MIN;
	if (cap > QMP_RBUF_MAX)
		cap = QMP_RBUF_MAX;
	p = realloc(q->rbuf, cap);
	if (!p) {
		qmp_log(q, LOG_ERR, "cannot grow the read buffer to %zu bytes", cap);
		return -ENOMEM;
	}
	q->rbuf = p;
	q->rcap = cap;
	return 0;
}

/* One read per wakeup keeps a chatty QEMU from starving the loop. */
static int read_some(struct hv_qmp *q)
{
	ssize_t n;
	int rc = rbuf_reserve(q);

	if (rc)
		return rc;
	n = read(q->fd, q->rbuf + q->rlen, q->rcap - q->rlen);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n < 0) {
		rc = -errno;
		qmp_log(q, LOG_ERR, "read failed while %s: %s", state_names[q->state],
			strerror(-rc));
		return rc;
	}
	if (n == 0) {
		qmp_log(q, q->state == ST_READY ? LOG_INFO : LOG_ERR, "QEMU hung up while %s",
			state_names[q->state]);
		return QMP_EOF;
	}
	q->rlen += (size_t)n;
	return dispatch_lines(q);
}

static int connect_finish(struct hv_qmp *q)
{
	socklen_t len = sizeof(int);
	int soerr = 0;

	if (getsockopt(q->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
		soerr = errno;
	if (soerr) {
		qmp_log(q, LOG_WARNING, "cannot connect: %s", strerror(soerr));
		return -soerr;
	}
	q->state = ST_GREETING;
	return watch(q, POLLIN);
}

static int32_t io_dispatch(int32_t fd, int32_t revents, void *data)
{
	struct hv_qmp *q = data;
	unsigned gen = q->gen;
	bool stale;
	int rc = 0;

	q->refs++;
	if (q->state == ST_CONNECTING) {
		rc = connect_finish(q);
	} else {
		if (revents & (POLLIN | POLLHUP | POLLERR))
			rc = read_some(q);
		if (rc == 0 && gen == q->gen && (revents & POLLOUT))
			rc = flush(q);
	}
	if (rc != 0 && gen == q->gen)
		fail(q, rc);
	/* libqb drops the entry on a negative return: right for an ended fd. */
	stale = gen != q->gen;
	unref(q);
	return stale ? -1 : 0;
}

/* ---- public API ---- */

struct hv_qmp *hv_qmp_new(qb_loop_t *loop, const char *path, const struct hv_qmp_ops *ops,
			  void *opaque, unsigned timeout_ms)
{
	struct hv_qmp *q = loop && path && ops ? calloc(1, sizeof(*q)) : NULL;

	if (q && !(q->path = strdup(path))) {
		free(q);
		q = NULL;
	}
	if (!q) {
		qb_log(LOG_ERR, "qmp %s: cannot create a handle", path ? path : "(null)");
		return NULL;
	}
	q->loop = loop;
	q->ops = ops;
	q->opaque = opaque;
	q->timeout_ms = timeout_ms;
	q->fd = -1;
	return q;
}

/* connect() failed at once: report it from the loop, never from inside the call. */
static int fail_later(struct hv_qmp *q, int err)
{
	qmp_log(q, LOG_WARNING, "cannot connect: %s", strerror(-err));
	close(q->fd);
	q->fd = -1;
	q->fail_err = err;
	return timer_arm(q, 1, fail_cb, q, &q->fail_timer);
}

int hv_qmp_connect(struct hv_qmp *q)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int rc;

	if (!q)
		return -EINVAL;
	if (q->dying)
		return -ESHUTDOWN;
	if (q->state != ST_IDLE)
		return -EALREADY;
	len = strlen(q->path);
	if (len >= sizeof(sa.sun_path)) {
		qmp_log(q, LOG_ERR, "socket path too long");
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, q->path, len + 1);
	q->state = ST_CONNECTING;
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		rc = -errno;
		qmp_log(q, LOG_ERR, "cannot create a socket: %s", strerror(-rc));
		goto out;
	}
	if (q->timeout_ms) {
		rc = timer_arm(q, (uint64_t)q->timeout_ms * QB_TIME_NS_IN_MSEC, conn_timeout_cb,
			       q, &q->conn_timer);
		if (rc)
			goto out;
	}
	if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		q->state = ST_GREETING;
		rc = watch(q, POLLIN);
	} else if (errno == EINPROGRESS) {
		rc = watch(q, POLLOUT);
	} else {
		rc = fail_later(q, -errno);
	}
out:
	if (rc)
		detach(q); /* nothing pending yet: the list is empty */
	return rc;
}

int hv_qmp_command_timeout(struct hv_qmp *q, const char *cmd, json_t *args, unsigned timeout_ms,
			   hv_qmp_reply_fn cb, void *opaque)
{
	int rc = -EINVAL;

	if (!q || !cmd || (args && !json_is_object(args)))
		goto out;
	rc = -ENOTCONN;
	if (q->state != ST_READY)
		goto out;
	return send_command(q, cmd, args, timeout_ms, cb, opaque);
out:
	json_decref(args);
	return rc;
}

int hv_qmp_command(struct hv_qmp *q, const char *cmd, json_t *args, hv_qmp_reply_fn cb,
		   void *opaque)
{
	return hv_qmp_command_timeout(q, cmd, args, q ? q->timeout_ms : 0, cb, opaque);
}

bool hv_qmp_is_ready(const struct hv_qmp *q)
{
	return q && q->state == ST_READY;
}

void hv_qmp_disconnect(struct hv_qmp *q)
{
	if (!q || q->dying)
		return;
	teardown(q, -ECANCELED, false, 0);
}

void hv_qmp_free(struct hv_qmp *q)
{
	if (!q || q->dying)
		return;
	q->dying = true;
	q->refs++;
	teardown(q, -ECANCELED, false, 0);
	unref(q);
}
