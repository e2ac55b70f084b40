/*
 * rep_qmpc.c: the blocking QMP client of rep_qmpc.h. One message per line
 * (QEMU ends each with CRLF); a line is read into a buffer that grows up to
 * REP_QMPC_LINE_MAX, then parsed with jansson.
 */
#include "replica/rep_qmpc.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct rep_qmpc {
	int fd;
	unsigned timeout_ms;
	unsigned long long next_id;
	char *buf;	    /* bytes read, not yet parsed */
	size_t len, cap;
	json_t *events[REP_QMPC_EVENTS]; /* kept in arrival order */
	unsigned nevents;
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for @events on the socket until @deadline (monotonic ms). */
static int wait_fd(struct rep_qmpc *c, short events, int64_t deadline)
{
	struct pollfd p = { .fd = c->fd, .events = events };

	for (;;) {
		int64_t left = deadline - now_ms();
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

static int send_all(struct rep_qmpc *c, const char *p, size_t n, int64_t deadline)
{
	while (n) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		int rc;

		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return errno == EPIPE ? -ECONNRESET : -errno;
		if ((rc = wait_fd(c, POLLOUT, deadline)) < 0)
			return rc;
	}
	return 0;
}

/* The next message, parsed: *@msg is the caller's. */
static int read_msg(struct rep_qmpc *c, int64_t deadline, json_t **msg, char *err,
		    size_t errlen)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		ssize_t r;
		int rc;

		if (nl) {
			size_t line = (size_t)(nl - c->buf) + 1;
			json_error_t je;

			*msg = json_loadb(c->buf, line, 0, &je);
			memmove(c->buf, c->buf + line, c->len - line);
			c->len -= line;
			if (!*msg || !json_is_object(*msg)) {
				json_decref(*msg);
				*msg = NULL;
				return fail(err, errlen, -EPROTO, "QMP: not a JSON object: %s",
					    je.text);
			}
			return 0;
		}
		if (c->len >= REP_QMPC_LINE_MAX)
			return fail(err, errlen, -EMSGSIZE, "QMP: a line over %u bytes",
				    REP_QMPC_LINE_MAX);
		if (c->cap - c->len < 4096) {
			size_t cap = c->cap ? c->cap * 2 : 16384;
			char *b;

			if (cap > REP_QMPC_LINE_MAX + 4096)
				cap = REP_QMPC_LINE_MAX + 4096;
			if (!(b = realloc(c->buf, cap)))
				return fail(err, errlen, -ENOMEM, "QMP: out of memory");
			c->buf = b;
			c->cap = cap;
		}
		r = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
		if (r > 0) {
			c->len += (size_t)r;
			continue;
		}
		if (r == 0)
			return fail(err, errlen, -ECONNRESET, "QMP: the daemon closed the socket");
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return fail(err, errlen, -errno, "QMP: read: %s", strerror(errno));
		if ((rc = wait_fd(c, POLLIN, deadline)) < 0)
			return fail(err, errlen, rc, "QMP: no answer in time");
	}
}

static void keep_event(struct rep_qmpc *c, json_t *ev)
{
	if (c->nevents == REP_QMPC_EVENTS) {
		json_decref(c->events[0]);
		memmove(c->events, c->events + 1, sizeof(c->events[0]) * (REP_QMPC_EVENTS - 1));
		c->nevents--;
	}
	c->events[c->nevents++] = ev;
}

int rep_qmpc_connect(const char *path, unsigned timeout_ms, struct rep_qmpc **out, char *err,
		     size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = now_ms() + timeout_ms;
	struct rep_qmpc *c = NULL;
	json_t *greet = NULL;
	int rc;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return fail(err, errlen, -ENAMETOOLONG, "QMP socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	if (!(c = calloc(1, sizeof(*c))))
		return fail(err, errlen, -ENOMEM, "out of memory");
	c->timeout_ms = REP_QMPC_TIMEOUT_MS;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		rc = fail(err, errlen, -errno, "QMP: socket: %s", strerror(errno));
		goto out;
	}
	/* a unix connect does not block for long: the backlog is all it waits on */
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = fail(err, errlen, -errno, "QMP: cannot connect to %s: %s", path,
			  strerror(errno));
		goto out;
	}
	if ((rc = read_msg(c, deadline, &greet, err, errlen)) < 0)
		goto out;
	if (!json_object_get(greet, "QMP")) {
		rc = fail(err, errlen, -EPROTO, "QMP: no greeting on %s", path);
		goto out;
	}
	rep_qmpc_set_timeout(c, timeout_ms);
	rc = rep_qmpc_cmd(c, "qmp_capabilities", NULL, NULL, err, errlen);
	rep_qmpc_set_timeout(c, REP_QMPC_TIMEOUT_MS);
out:
	json_decref(greet);
	if (rc < 0)
		rep_qmpc_close(c);
	else
		*out = c;
	return rc;
}

void rep_qmpc_set_timeout(struct rep_qmpc *c, unsigned timeout_ms)
{
	c->timeout_ms = timeout_ms ? timeout_ms : REP_QMPC_TIMEOUT_MS;
}

/* QEMU's error as a line: "Class: desc". */
static int qemu_error(json_t *e, const char *cmd, char *err, size_t errlen)
{
	const char *desc = json_string_value(json_object_get(e, "desc"));

	return fail(err, errlen, -EIO, "%s: %s", cmd, desc ? desc : "error without a description");
}

int rep_qmpc_cmd(struct rep_qmpc *c, const char *cmd, json_t *args, json_t **ret, char *err,
		 size_t errlen)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	char id[32];
	json_t *req = json_object(), *msg = NULL;
	char *line = NULL;
	int rc;

	if (ret)
		*ret = NULL;
	snprintf(id, sizeof(id), "r%llu", ++c->next_id);
	if (!req || json_object_set_new(req, "execute", json_string(cmd)) ||
	    json_object_set_new(req, "id", json_string(id)) ||
	    (args && json_object_set(req, "arguments", args)) ||
	    !(line = json_dumps(req, JSON_COMPACT))) {
		rc = fail(err, errlen, -ENOMEM, "%s: out of memory", cmd);
		goto out;
	}
	if ((rc = send_all(c, line, strlen(line), deadline)) < 0 ||
	    (rc = send_all(c, "\n", 1, deadline)) < 0) {
		rc = fail(err, errlen, rc, "%s: cannot send: %s", cmd, strerror(-rc));
		goto out;
	}
	for (;;) {
		const char *rid;

		if ((rc = read_msg(c, deadline, &msg, err, errlen)) < 0)
			goto out;
		if (json_object_get(msg, "event")) {
			keep_event(c, msg);
			msg = NULL;
			continue;
		}
		rid = json_string_value(json_object_get(msg, "id"));
		if (rid && !strcmp(rid, id))
			break;
		json_decref(msg); /* an answer to a command given up on */
		msg = NULL;
	}
	if (json_object_get(msg, "error")) {
		rc = qemu_error(json_object_get(msg, "error"), cmd, err, errlen);
		goto out;
	}
	if (ret)
		*ret = json_incref(json_object_get(msg, "return"));
	rc = 0;
out:
	free(line);
	json_decref(msg);
	json_decref(req);
	json_decref(args);
	return rc;
}

static bool event_is(json_t *ev, const char *name, const char *id)
{
	const char *n = json_string_value(json_object_get(ev, "event"));
	json_t *data = json_object_get(ev, "data");
	const char *dev = json_string_value(json_object_get(data, "device"));
	const char *eid = json_string_value(json_object_get(data, "id"));

	if (!n || strcmp(n, name))
		return false;
	return !id || (dev && !strcmp(dev, id)) || (eid && !strcmp(eid, id));
}

static int take_event(struct rep_qmpc *c, unsigned i, json_t **data)
{
	if (data)
		*data = json_incref(json_object_get(c->events[i], "data"));
	json_decref(c->events[i]);
	memmove(c->events + i, c->events + i + 1, sizeof(c->events[0]) * (c->nevents - i - 1));
	c->nevents--;
	return 0;
}

int rep_qmpc_wait_event(struct rep_qmpc *c, const char *name, const char *id,
			unsigned timeout_ms, json_t **data, char *err, size_t errlen)
{
	int64_t deadline = now_ms() + timeout_ms;
	int rc;

	if (data)
		*data = NULL;
	for (unsigned i = 0; i < c->nevents; i++)
		if (event_is(c->events[i], name, id))
			return take_event(c, i, data);
	for (;;) {
		json_t *msg = NULL;

		if ((rc = read_msg(c, deadline, &msg, err, errlen)) < 0) {
			if (rc == -ETIMEDOUT)
				fail(err, errlen, rc, "no %s event%s%s in %u ms", name,
				     id ? " for " : "", id ? id : "", timeout_ms);
			return rc;
		}
		if (!json_object_get(msg, "event")) {
			json_decref(msg);
			continue;
		}
		keep_event(c, msg);
		if (event_is(msg, name, id))
			return take_event(c, c->nevents - 1, data);
	}
}

void rep_qmpc_close(struct rep_qmpc *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	for (unsigned i = 0; i < c->nevents; i++)
		json_decref(c->events[i]);
	free(c->buf);
	free(c);
}
